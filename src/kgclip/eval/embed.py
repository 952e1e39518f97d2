"""Image and text embeddings, computed once per (model, set) and cached by content.

Images are decoded with the model's eval transform in DataLoader workers, a batch per worker in
turn, so the batches come back in the set's order and the model never waits on one decoder. An
image that cannot be decoded is skipped and counted, never a crash. Features are L2-normalised
float32, under bf16 autocast on CUDA.

The cache key is (weights digest, eval-transform digest, set fingerprint) for images and (weights
digest, digest of the texts) for texts: a second evaluation of the same pair reads a .npy file
instead of running the image tower.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from kgclip.eval.model import EvalModel
from kgclip.eval.sets import EvalSet, Item
from kgclip.workdir import atomic_path, atomic_write_bytes, digest_of

DEFAULT_CACHE = Path("~/.cache/kgclip/eval")
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class ImageEmbeddings:
    """One row per readable image, in the set's order; `skipped` lists the keys of the others."""

    features: np.ndarray  # [N, D] float32, rows of unit length
    keys: list[str]
    labels: np.ndarray  # [N] int64; -1 for retrieval items
    texts: list[list[str]]  # per image, its captions (retrieval sets); empty lists otherwise
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0  # time to compute them (not to read them from the cache)
    cached: bool = False

    @property
    def images_per_second(self) -> float:
        total = len(self.keys) + len(self.skipped)
        return total / self.seconds if self.seconds > 0 else 0.0


class _Batches(torch.utils.data.IterableDataset):
    """The set's items in chunks of `batch_size`; worker w decodes chunks w, w + W, w + 2W, ...

    The DataLoader takes one batch from each worker in turn, so the batches arrive in set order.
    A chunk whose images are all unreadable still yields an (empty) batch to keep the turn.
    """

    def __init__(self, evalset: EvalSet, transform: Any, batch_size: int) -> None:
        self.evalset, self.transform, self.batch_size = evalset, transform, batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        me, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for n, chunk in enumerate(_chunks(self.evalset.items(), self.batch_size)):
            if n % workers == me:
                yield self._decode(chunk)

    def _decode(self, chunk: list[Item]) -> dict[str, Any]:
        images, kept, skipped = [], [], []
        for item in chunk:
            pixels = _pixels(item, self.transform)
            if pixels is None:
                skipped.append(item.key)
            else:
                images.append(pixels)
                kept.append(item)
        return {
            "images": torch.stack(images) if images else torch.empty(0),
            "keys": [i.key for i in kept],
            "labels": [-1 if i.label is None else i.label for i in kept],
            "texts": [list(i.texts) for i in kept],
            "skipped": skipped,
        }


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pixels(item: Item, transform: Any) -> torch.Tensor | None:
    """The image as the model sees it (decoded as CLIP_benchmark does), or None if unreadable."""
    try:
        with Image.open(io.BytesIO(item.read())) as im:
            im.load()
            rgb = im.convert("RGB")
        return transform(rgb)
    except UNREADABLE:
        return None


def autocast(device: torch.device) -> Any:
    """bf16 on CUDA; full precision on CPU, where bf16 is slower on most cores and less exact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def image_embeddings(
    m: EvalModel, evalset: EvalSet, cache: Path, *, batch_size: int = 128, workers: int = 0
) -> ImageEmbeddings:
    """The set's image embeddings under `m`, from `cache` when this pair was embedded before."""
    key = digest_of(m.digest, m.preprocess, evalset.fingerprint)
    npy, meta = cache / "images" / f"{key}.npy", cache / "images" / f"{key}.json"
    if npy.is_file() and meta.is_file():
        found = _read_cached(npy, meta)
        if found is not None:
            return found
    done = _compute(m, evalset, batch_size, workers)
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
        np.save(fh, done.features)
    record = {
        "set": evalset.name,
        "source": evalset.source,
        "set_fingerprint": evalset.fingerprint,
        "model": m.name,
        "model_digest": m.digest,
        "preprocess": m.preprocess,
        "keys": done.keys,
        "labels": done.labels.tolist(),
        "texts": done.texts,
        "skipped": done.skipped,
        "seconds": done.seconds,
    }
    atomic_write_bytes(meta, json.dumps(record).encode())
    return done


def _read_cached(npy: Path, meta: Path) -> ImageEmbeddings | None:
    """The cached embeddings, or None when the pair of files is torn (then they are recomputed)."""
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    features = _load_rows(npy, len(record["keys"]))
    if features is None:
        return None
    return ImageEmbeddings(
        features=features,
        keys=record["keys"],
        labels=np.asarray(record["labels"], dtype=np.int64),
        texts=record["texts"],
        skipped=record["skipped"],
        seconds=record["seconds"],
        cached=True,
    )


def _load_rows(npy: Path, rows: int) -> np.ndarray | None:
    """A cached array with the expected number of rows; None when absent or torn (then recomputed)."""
    if not npy.is_file():
        return None
    try:
        found = np.load(npy)
    except (OSError, ValueError):
        return None
    return found if found.ndim == 2 and found.shape[0] == rows else None


def _compute(m: EvalModel, evalset: EvalSet, batch_size: int, workers: int) -> ImageEmbeddings:
    loader = torch.utils.data.DataLoader(
        _Batches(evalset, m.transform, batch_size),
        batch_size=None,
        num_workers=workers,
        pin_memory=m.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    feats: list[torch.Tensor] = []
    keys: list[str] = []
    labels: list[int] = []
    texts: list[list[str]] = []
    skipped: list[str] = []
    began = time.perf_counter()
    with torch.inference_mode(), autocast(m.device), _threads_beside(workers, m.device):
        for batch in loader:
            skipped += batch["skipped"]
            if not batch["keys"]:
                continue
            feats.append(_encode_pixels(m, batch["images"]))
            keys += batch["keys"]
            labels += batch["labels"]
            texts += batch["texts"]
    features = torch.cat(feats).numpy() if feats else np.zeros((0, 0), dtype=np.float32)
    return ImageEmbeddings(
        features=features,
        keys=keys,
        labels=np.asarray(labels, dtype=np.int64),
        texts=texts,
        skipped=skipped,
        seconds=time.perf_counter() - began,
    )


@contextlib.contextmanager
def _threads_beside(workers: int, device: torch.device) -> Iterator[None]:
    """On the CPU, the model's threads leave a core to each decoding worker while they run side by
    side: oversubscribed cores make both wait (measured in benchmarks/eval_vs_clip_benchmark.py)."""
    before = torch.get_num_threads()
    if device.type == "cpu" and workers:
        torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_pixels(m: EvalModel, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-length float32 image features on the CPU (called under inference_mode and autocast)."""
    out = m.model.encode_image(pixels.to(m.device, non_blocking=True))
    return F.normalize(out.float(), dim=-1).cpu()


def encode_pil(m: EvalModel, images: Sequence[Image.Image]) -> np.ndarray:
    """[N, D] features of images already in memory (OVAD's box crops), as one batch: the caller
    batches, through the same eval transform, precision and normalisation as a set's images."""
    with torch.inference_mode(), autocast(m.device):
        return _encode_pixels(m, torch.stack([m.transform(im.convert("RGB")) for im in images])).numpy()


def text_embeddings(m: EvalModel, texts: Sequence[str], cache: Path, *, batch_size: int = 256) -> np.ndarray:
    """[T, D] float32, each row of unit length; cached per (weights, texts)."""
    key = digest_of(m.digest, digest_of(*texts), str(len(texts)))
    npy = cache / "texts" / f"{key}.npy"
    found = _load_rows(npy, len(texts))
    if found is not None:
        return found
    out = []
    with torch.inference_mode(), autocast(m.device):
        for start in range(0, len(texts), batch_size):
            tokens = m.tokenizer(list(texts[start : start + batch_size])).to(m.device)
            out.append(F.normalize(m.model.encode_text(tokens).float(), dim=-1).cpu())
    embedded = torch.cat(out).numpy()
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
        np.save(fh, embedded)
    return embedded
