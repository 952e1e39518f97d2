"""Retrieval recall@k: a small matrix worked out by hand, and CLIP_benchmark's own formula (the share
of positives among the top k, counted as found when above zero) re-done in numpy on random scores."""

from __future__ import annotations

import numpy as np
import pytest

from kgclip.eval.retrieval import retrieval_recall

# rows: images 0..3, columns: texts 0..3; texts 0 and 1 describe image 0, text 2 image 1,
# text 3 image 2, and image 3 has no text.
SIM = np.array(
    [
        [0.9, 0.1, 0.5, 0.2],
        [0.3, 0.2, 0.4, 0.6],
        [0.1, 0.8, 0.3, 0.7],
        [0.0, 0.0, 0.0, 0.0],
    ]
)
TEXT_IMAGE = np.array([0, 0, 1, 2])


def test_recall_worked_by_hand():
    got = retrieval_recall(SIM, TEXT_IMAGE, ks=(1, 2, 3, 10))
    # text -> image, each text's column: t0 finds image 0 first; t1's image 0 (0.1) is behind 0.2
    # and 0.8, third; t2's image 1 (0.4) is behind 0.5, second; t3's image 2 (0.7) is first.
    assert got["image_retrieval_recall@1"] == 2 / 4
    assert got["image_retrieval_recall@2"] == 3 / 4
    assert got["image_retrieval_recall@3"] == 1.0
    # image -> text, each image's row, best over its texts: image 0 has t0 first (t1 is last, but
    # the best rank counts); image 1's t2 (0.4) is behind 0.6; image 2's t3 (0.7) behind 0.8;
    # image 3 has no text and is never found.
    assert got["text_retrieval_recall@1"] == 1 / 4
    assert got["text_retrieval_recall@2"] == 3 / 4
    assert got["text_retrieval_recall@3"] == 3 / 4
    # k beyond the candidates: everything with a positive is found (CLIP_benchmark's topk would fail).
    assert got["image_retrieval_recall@10"] == 1.0 and got["text_retrieval_recall@10"] == 3 / 4
    assert list(got) == [f"{kind}_retrieval_recall@{k}" for k in (1, 2, 3, 10) for kind in ("image", "text")]


def test_ties_go_to_the_lower_index():
    got = retrieval_recall(np.full((2, 3), 0.5), np.array([0, 0, 1]), ks=(1, 2))
    # Every score ties, so each query's candidates come in index order. Texts 0 and 1 find image 0
    # first, text 2 finds image 1 second. Image 0 finds its text 0 first; image 1's text 2 is third.
    assert got == {
        "image_retrieval_recall@1": 2 / 3,
        "text_retrieval_recall@1": 1 / 2,
        "image_retrieval_recall@2": 1.0,
        "text_retrieval_recall@2": 1 / 2,
    }


def clip_benchmark_recall(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """CLIP_benchmark's recall_at_k(...) > 0, averaged: scores [queries, candidates]."""
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    true_positive = np.take_along_axis(positive, topk, axis=1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = true_positive / positive.sum(axis=1)
    return float((recall > 0).mean())


def test_matches_clip_benchmarks_formula_on_random_scores():
    rng = np.random.default_rng(13)
    n_images = 40
    text_image = np.sort(rng.integers(0, n_images, size=120))  # 0 to several texts per image
    sim = rng.normal(size=(n_images, len(text_image)))
    scores = sim.T  # CLIP_benchmark's texts_emb @ images_emb.t()
    positive = np.zeros_like(scores, dtype=bool)
    positive[np.arange(len(text_image)), text_image] = True
    got = retrieval_recall(sim, text_image, ks=(1, 5, 10))
    assert len(set(text_image)) < n_images  # some images have no text
    for k in (1, 5, 10):
        assert got[f"image_retrieval_recall@{k}"] == clip_benchmark_recall(scores, positive, k)
        assert got[f"text_retrieval_recall@{k}"] == clip_benchmark_recall(scores.T, positive.T, k)


def test_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        retrieval_recall(np.zeros((0, 3)), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="2 text-image indices for 4 texts"):
        retrieval_recall(SIM, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        retrieval_recall(SIM, np.array([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="positive integers"):
        retrieval_recall(SIM, TEXT_IMAGE, ks=(0,))
