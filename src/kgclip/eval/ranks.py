"""Zero-shot accuracy at every taxonomic rank of a species set (iNaturalist, Rare Species, CUB).

Two ways, both reported: *summed* adds up the species probabilities within each rank value and
scores that (pybioclip's way: a model that spreads its belief over three warblers still knows it
is a warbler), and *direct* classifies the rank names themselves (`rank_view` makes the set whose
classes are the rank's values). Both use the same groups in the same order, so their numbers and
per-class recalls line up.

A group is the taxonomy path from kingdom down to the rank, as pybioclip keys it, so a genus name
used by a plant and by a bird (Morus) or a bare species epithet shared across genera stays two
groups. Accuracy follows CLIP_benchmark: top-k by a stable descending order (ties go to the lower
index), acc5 NaN under 5 classes, mean per-class recall over the classes that have images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from kgclip.eval.sets import CLASSIFICATION, RANKS, ClassInfo, EvalSet, EvalSetError, Item, fingerprint_of

ROW_CHUNK = 2048  # rows summed at a time: a 100k x 10k probability matrix is never copied whole


@dataclass(frozen=True)
class RankGroups:
    """The groups at one rank: display names (sorted), taxonomy paths, and each class's group index."""

    rank: str
    names: list[str]
    paths: list[tuple[str, ...]]
    group_of: np.ndarray  # [n_classes] -> group index


def complete_ranks(classes: Sequence[ClassInfo]) -> tuple[str, ...]:
    """The ranks (kingdom first) at which every class has a value: those both ways can score."""
    return tuple(r for r in RANKS if classes and all(_value(c, r) for c in classes))


def rank_groups(classes: Sequence[ClassInfo], rank: str) -> RankGroups:
    """The classes grouped by their taxonomy path down to `rank`; an EvalSetError if some lack the rank."""
    if rank not in RANKS:
        raise EvalSetError(f"unknown rank {rank!r}: expected one of {', '.join(RANKS)}")
    lacking = [c.name for c in classes if not _value(c, rank)]
    if lacking:
        raise EvalSetError(
            f"{len(lacking)} of {len(classes)} classes have no {rank} (first: {', '.join(lacking[:3])})"
        )
    paths_of = [_path(c, rank) for c in classes]
    names_of_path = _names(sorted(set(paths_of)), rank)
    order = sorted(names_of_path, key=lambda p: (names_of_path[p], p))
    index = {path: i for i, path in enumerate(order)}
    return RankGroups(
        rank=rank,
        names=[names_of_path[p] for p in order],
        paths=order,
        group_of=np.array([index[p] for p in paths_of], dtype=np.int64),
    )


def _value(info: ClassInfo, rank: str) -> str:
    return (info.taxonomy.get(rank) or "").strip()


def _path(info: ClassInfo, rank: str) -> tuple[str, ...]:
    return tuple(_value(info, r) for r in RANKS[: RANKS.index(rank) + 1])


def _names(paths: list[tuple[str, ...]], rank: str) -> dict[tuple[str, ...], str]:
    """A name per group: the rank's value (a species as its binomial); homonyms get their parent added.

    A species given as a bare epithet becomes "Genus epithet", so direct classification reads a
    name a text encoder has seen.
    """
    names = {path: _display(path, rank) for path in paths}
    count: dict[str, int] = {}
    for name in names.values():
        count[name] = count.get(name, 0) + 1
    for path, name in names.items():
        parent = next((v for v in reversed(path[:-1]) if v), "")
        if count[name] > 1 and parent:
            names[path] = f"{name} ({parent})"
    return names


def _display(path: tuple[str, ...], rank: str) -> str:
    value = path[-1]
    if rank == "species":
        genus = path[RANKS.index("genus")]
        if genus and not value.startswith(genus + " "):
            return f"{genus} {value}"
    return value


def rank_metrics(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[ClassInfo], ranks: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Per rank: acc1, acc5 and mean per-class recall of the species probabilities summed per group.

    `probs` [N, S] are the per-image species probabilities (softmax of the logits); `ranks`
    defaults to every rank all classes have (`complete_ranks`).
    """
    probs, labels = np.asarray(probs), np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape != (len(labels), len(classes)):
        raise ValueError(f"probs {probs.shape} do not match {len(labels)} labels and {len(classes)} classes")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"labels outside 0..{len(classes) - 1}")
    out = {}
    for rank in complete_ranks(classes) if ranks is None else ranks:
        groups = rank_groups(classes, rank)
        scores = summed(probs, groups.group_of, len(groups.names))
        out[rank] = topk_metrics(scores, groups.group_of[labels])
    return out


def summed(probs: np.ndarray, group_of: np.ndarray, n_groups: int) -> np.ndarray:
    """[N, n_groups]: each row's probabilities added up per group (float64); each group has a class."""
    order = np.argsort(group_of, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group_of[order]) != 0])
    out = np.empty((probs.shape[0], n_groups), dtype=np.float64)
    for lo in range(0, probs.shape[0], ROW_CHUNK):
        chunk = probs[lo : lo + ROW_CHUNK][:, order].astype(np.float64)
        out[lo : lo + ROW_CHUNK] = np.add.reduceat(chunk, starts, axis=1)
    return out


def topk_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """acc1, acc5 (NaN under 5 classes) and mean per-class recall, as CLIP_benchmark defines them."""
    n, n_classes = scores.shape
    position = np.empty(n, dtype=np.int64)
    for lo in range(0, n, ROW_CHUNK):
        block, true = scores[lo : lo + ROW_CHUNK], labels[lo : lo + ROW_CHUNK]
        own = block[np.arange(len(true)), true][:, None]
        lower = np.arange(n_classes)[None, :] < true[:, None]
        position[lo : lo + ROW_CHUNK] = ((block > own) | ((block == own) & lower)).sum(axis=1)
    hit1 = position == 0
    counts = np.bincount(labels, minlength=n_classes)
    recalls = np.bincount(labels, weights=hit1, minlength=n_classes)[counts > 0] / counts[counts > 0]
    return {
        "acc1": float(hit1.mean()),
        "acc5": float((position < 5).mean()) if n_classes >= 5 else float("nan"),
        "mean_per_class_recall": float(recalls.mean()),
    }


def rank_view(evalset: EvalSet, rank: str) -> EvalSet:
    """The set relabelled at `rank`: one class per group (name and scientific = its name), same images."""
    groups = rank_groups(evalset.classes, rank)
    classes = [
        ClassInfo(name=name, scientific=name, taxonomy=_taxonomy(path))
        for name, path in zip(groups.names, groups.paths, strict=True)
    ]
    group_of = groups.group_of.tolist()

    def items() -> Iterator[Item]:
        for item in evalset.items():
            yield replace(item, label=group_of[item.label])

    return EvalSet(
        name=f"{evalset.name}-{rank}",
        task=CLASSIFICATION,
        classes=classes,
        items=items,
        fingerprint=fingerprint_of(evalset.fingerprint, "rank", rank, groups.names),
        source=evalset.source,
        templates=evalset.templates,
    )


def _taxonomy(path: tuple[str, ...]) -> dict[str, str]:
    return {rank: value for rank, value in zip(RANKS, path, strict=False) if value}
