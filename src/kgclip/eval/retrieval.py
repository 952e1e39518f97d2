"""Retrieval recall@k from an image-text similarity matrix, with CLIP_benchmark's names and definitions.

CLIP_benchmark (`metrics/zeroshot_retrieval.py`) scores every text against every image and counts
a query as found when at least one of its positives is among its top k:

- `image_retrieval_recall@k` (text -> image): each text, its one image among the top k images;
- `text_retrieval_recall@k` (image -> text): each image, any of its texts among the top k texts,
  that is, the image is found at the best rank over all its texts.

Both are means over the queries. An image without texts is a miss, as CLIP_benchmark's 0/0 recall
is. Where CLIP_benchmark's `topk` would fail (k larger than the candidates) every query is found at
that k. Ties are broken by the lower index (a stable order), so the numbers are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHUNK = 1024  # queries ranked at a time, so a 5k x 25k matrix is never sorted whole
NEVER = np.iinfo(np.int64).max  # the position of an image without texts: missed at every k


def retrieval_recall(
    sim: np.ndarray, text_image: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """{"image_retrieval_recall@k", "text_retrieval_recall@k"} for each k, from `sim` [n_images, n_texts]
    and `text_image` [n_texts] (the index of each text's image)."""
    sim, text_image = np.asarray(sim), np.asarray(text_image, dtype=np.int64)
    _check(sim, text_image, ks)
    image_rank = _text_to_image_positions(sim, text_image)
    text_rank = _image_to_text_best_positions(sim, text_image)
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = float((image_rank < k).mean())
        metrics[f"text_retrieval_recall@{k}"] = float((text_rank < k).mean())
    return metrics


def _check(sim: np.ndarray, text_image: np.ndarray, ks: Sequence[int]) -> None:
    if sim.ndim != 2 or 0 in sim.shape:
        raise ValueError(f"similarities must be a non-empty [images, texts] matrix, not {sim.shape}")
    if text_image.shape != (sim.shape[1],):
        raise ValueError(f"{len(text_image)} text-image indices for {sim.shape[1]} texts")
    if text_image.min() < 0 or text_image.max() >= sim.shape[0]:
        raise ValueError(f"text-image indices outside 0..{sim.shape[0] - 1}")
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"recall ks must be positive integers, not {list(ks)}")


def _text_to_image_positions(sim: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """Per text, the 0-based position of its image when the images are sorted by similarity."""
    n_images, n_texts = sim.shape
    positions = np.empty(n_texts, dtype=np.int64)
    image_index = np.arange(n_images)[None, :]
    for lo in range(0, n_texts, CHUNK):
        block = sim[:, lo : lo + CHUNK].T  # [texts, images]
        target = text_image[lo : lo + CHUNK]
        own = block[np.arange(len(target)), target][:, None]
        ahead = (block > own) | ((block == own) & (image_index < target[:, None]))
        positions[lo : lo + CHUNK] = ahead.sum(axis=1)
    return positions


def _image_to_text_best_positions(sim: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """Per image, the best position of any of its texts in its sorted texts (NEVER when it has none)."""
    n_images, n_texts = sim.shape
    best = np.empty(n_images, dtype=np.int64)
    for lo in range(0, n_images, CHUNK):
        block = sim[lo : lo + CHUNK]
        order = np.argsort(-block, axis=1, kind="stable")
        positions = np.empty_like(order)
        np.put_along_axis(positions, order, np.arange(n_texts)[None, :].repeat(len(block), 0), axis=1)
        own = text_image[None, :] == np.arange(lo, lo + len(block))[:, None]
        best[lo : lo + len(block)] = np.where(own, positions, NEVER).min(axis=1)
    return best


def retrieval_chance(texts_per_image: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """What a random ranking scores, under `retrieval_recall`'s names.

    Text -> image: a text's one image among the top k of n images, k / n (at most 1). Image ->
    text: at least one of the image's t texts among the top k of all T texts, 1 - C(T - t, k) / C(T, k),
    averaged over the images (k / n again when every image has the same number of texts).
    """
    counts = np.asarray(texts_per_image, dtype=np.int64)
    n_images, n_texts = len(counts), int(counts.sum())
    chance = {}
    for k in ks:
        chance[f"image_retrieval_recall@{k}"] = min(1.0, k / n_images)
        j = np.arange(min(k, n_texts))[None, :]
        none_found = np.prod(np.clip(n_texts - counts[:, None] - j, 0, None) / (n_texts - j), axis=1)
        chance[f"text_retrieval_recall@{k}"] = float(np.mean(np.where(counts > 0, 1.0 - none_found, 0.0)))
    return chance
