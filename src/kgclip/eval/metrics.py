"""Zero-shot classification metrics, computed as CLIP_benchmark 1.6.2 computes them (numpy only).

- acc1 / acc5: the share of images whose label is among the top k logits; acc5 is NaN with fewer
  than 5 classes (CLIP_benchmark skips it there).
- mean_per_class_recall: sklearn's `balanced_accuracy_score(labels, argmax)`, which CLIP_benchmark
  calls: the recall of every class that has images, averaged; classes that are only ever predicted
  (no images) are left out of the mean.
Plus, for reading the result: each class's recall and the most often confused (true, predicted) pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def topk(logits: np.ndarray, k: int) -> np.ndarray:
    """[N, k] class indices by falling logit; ties go to the lower class index."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    return float((topk(logits, k) == labels[:, None]).any(axis=1).mean())


def per_class_recall(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """[C]: correct / images for each class; NaN for a class without images."""
    images = np.bincount(labels, minlength=n_classes).astype(np.float64)
    correct = np.bincount(labels[predicted == labels], minlength=n_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(images > 0, correct / images, np.nan)


def confused_pairs(
    predicted: np.ndarray, labels: np.ndarray, names: Sequence[str], top: int = 10
) -> list[list[object]]:
    """[[true name, predicted name, count], ...]: the `top` most frequent mistakes, most first."""
    wrong = predicted != labels
    pairs, counts = np.unique(np.stack([labels[wrong], predicted[wrong]], axis=1), axis=0, return_counts=True)
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], pairs[i][0], pairs[i][1]))[:top]
    return [[names[pairs[i][0]], names[pairs[i][1]], int(counts[i])] for i in order]


def classification_metrics(logits: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, object]:
    """acc1, acc5, mean_per_class_recall (CLIP_benchmark's) plus per_class_recall and confused."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = logits.shape[1]
    predicted = logits.argmax(axis=1)
    recall = per_class_recall(predicted, labels, n_classes)
    return {
        "acc1": accuracy(logits, labels, 1),
        "acc5": accuracy(logits, labels, 5) if n_classes >= 5 else math.nan,
        "mean_per_class_recall": float(np.nanmean(recall)),
        "per_class_recall": [None if math.isnan(r) else float(r) for r in recall],
        "confused": confused_pairs(predicted, labels, names),
    }


def chance(n_classes: int) -> dict[str, float]:
    """What guessing scores: 1/C top-1, 5/C top-5 (NaN with fewer than 5 classes, as acc5)."""
    return {"acc1": 1 / n_classes, "acc5": 5 / n_classes if n_classes >= 5 else math.nan}
