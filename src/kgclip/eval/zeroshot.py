"""The zero-shot classifier (evaluation.md §1, the same computation as CLIP_benchmark and open_clip).

Per class, every text (templates x names) is encoded, each embedding L2-normalised, the embeddings
averaged and the average normalised again. Images are scored by cosine similarity times 100, the
logits CLIP_benchmark ranks by; probabilities use the model's own learned temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kgclip.eval.embed import text_embeddings
from kgclip.eval.model import EvalModel
from kgclip.eval.sets import EvalSetError

LOGIT_SCALE = 100.0  # CLIP_benchmark's and open_clip's zero-shot logits: 100 x cosine


def classifier(m: EvalModel, texts: Sequence[Sequence[str]], cache: Path) -> np.ndarray:
    """[C, D] float32: class c's row is the normalised mean of its texts' normalised embeddings."""
    empty = [c for c, per in enumerate(texts) if not per]
    if empty:
        raise EvalSetError(f"class(es) {empty[:5]} have no text to embed")
    flat = [t for per in texts for t in per]
    return class_means(text_embeddings(m, flat, cache), [len(per) for per in texts])


def class_means(embedded: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Average consecutive runs of rows (`counts[c]` rows for class c), then normalise each mean."""
    ends = np.cumsum(counts)
    means = np.stack([embedded[end - n : end].mean(axis=0) for n, end in zip(counts, ends, strict=True)])
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def scores(images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[N, C] logits: 100 x cosine similarity of each image with each class."""
    return LOGIT_SCALE * (images @ weights.T)


def probabilities(logits: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over classes at the model's temperature (what per-rank summing adds up)."""
    z = logits * (logit_scale / LOGIT_SCALE)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
