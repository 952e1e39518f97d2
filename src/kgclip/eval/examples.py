"""Example images for a result's most confused class pairs, written as small JPEGs beside the results.

A count ("California Gull taken for Western Gull, 7 times") says where a model fails; the pictures say
why (a juvenile, a bad crop, a mislabelled image). So each confused pair gets the first few images of
the true class that were taken for the other, and one image of the class they were taken for (one it
got right when there is one). Files are named by the set's fingerprint and the image's key, so a
second evaluation of the same set reuses them and reads no image again; the viewer (`kgclip view`)
serves them from `RUN/eval/examples/` without ever opening the evaluation set itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kgclip.eval.sets import EvalSet
from kgclip.thumbnail import UNREADABLE, jpeg_thumbnail
from kgclip.workdir import atomic_write_bytes, digest_of

FOLDER = "examples"
SIZE = 256  # the longer side, px


def pick(
    predicted: np.ndarray,
    labels: np.ndarray,
    keys: Sequence[str],
    confused: Sequence[Sequence[Any]],
    names: Sequence[str],
    per_pair: int,
) -> list[dict[str, list[str]]]:
    """Per confused (true, predicted, count), in its order: the keys of up to `per_pair` mistaken
    images, and of one image of the class they were taken for."""
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)
    out = []
    for true, taken, _ in confused:
        t, p = index[true], index[taken]
        mistakes = np.flatnonzero((labels == t) & (predicted == p))[:per_pair]
        right = np.flatnonzero((labels == p) & (predicted == p))
        shown = right[:1] if len(right) else np.flatnonzero(labels == p)[:1]
        out.append({"mistakes": [keys[i] for i in mistakes], "taken_for": [keys[i] for i in shown]})
    return out


def file_of(evalset: EvalSet, key: str) -> str:
    return digest_of(evalset.fingerprint, key) + ".jpg"


def write(evalset: EvalSet, keys: set[str], folder: Path) -> dict[str, str]:
    """key -> file name under `folder` for every key whose image is (now) there. One pass over the
    set that reads only the wanted images and stops once all are found; none if all exist already."""
    files = {k: file_of(evalset, k) for k in keys}
    missing = {k for k, f in files.items() if not (folder / f).is_file()}
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        for item in evalset.items():
            if item.key not in missing:
                continue
            missing.discard(item.key)
            try:
                atomic_write_bytes(folder / files[item.key], jpeg_thumbnail(item.read(), SIZE))
            except UNREADABLE:
                files.pop(item.key)  # embedded once, unreadable now: shown as missing, not guessed
            if not missing:
                break
    return {k: f for k, f in files.items() if (folder / f).is_file()}


def attach(
    found: list[dict[str, Any]], picks: list[list[dict[str, list[str]]]], files: dict[str, str]
) -> None:
    """Write each result's examples into it as `confused_examples` (parallel to `confused`), as
    {"mistakes": [{"key", "file"}], "taken_for": [...]}; a key without a file is left out."""
    for result, picked in zip(found, picks, strict=True):
        result["kgclip"]["confused_examples"] = [
            {role: [{"key": k, "file": files[k]} for k in ks if k in files] for role, ks in pair.items()}
            for pair in picked
        ]
