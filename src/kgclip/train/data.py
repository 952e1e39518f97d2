"""The training data: WebDataset shards streamed in a fixed, resumable order.

Every data-loader worker of every process is one stream g (0 ≤ g < world × workers). Stream g
of epoch e draws shards with replacement (resampling, as open_clip's `--dataset-resampled`), reads
their samples with webdataset's tar readers, passes them through a shuffle buffer, and only then
decodes, augments, samples a caption and tokenises. Every random choice is seeded by
(seed, epoch, g) or, per sample, by (seed, epoch, g, position), so a run's data order is fixed by
its seed: the DataLoader interleaves its workers' batches round-robin, so global batch J (counted
from the run's start) comes from stream J % W. A resumed loader starting at batch k gives its
worker w the part of stream (k + w) % W, and each stream skips the raw samples of its batches
before k, before any decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import orjson
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms
from webdataset.tariterators import tarfile_samples

from kgclip.config import TrainConfig
from kgclip.train.captions import Caption, CaptionSampler, caption_of, is_kgclip_meta
from kgclip.train.errors import DataError
from kgclip.train.loss import entity_labels
from kgclip.train.subset import Subset
from kgclip.workdir import file_digest

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def shard_list(data: str | None, workdir: Path) -> list[str]:
    """The shards to train on: the workdir's by default; else a folder, one tar, or a brace pattern."""
    if data is None:
        folder = workdir / "shards"
        found = sorted(str(p) for p in folder.glob("*.tar")) if folder.is_dir() else []
        if not found:
            raise DataError(f"no shards under {folder}: harvest first, or give --data")
        return found
    path = Path(data)
    if path.is_dir():
        found = sorted(str(p) for p in path.glob("*.tar"))
        if not found:
            raise DataError(f"{path}: no .tar shards in this folder")
        return found
    expanded = list(braceexpand.braceexpand(data))
    missing = [p for p in expanded if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if missing[1:] else ""
        raise DataError(f"no such shard: {missing[0]}{more}")
    return expanded


def count_samples(shards: list[str]) -> int:
    """Samples in the shards: from `sizes.json` beside them when it names them all, else by reading
    the tar headers (a sample is a key with an image member)."""
    sizes: dict[str, int] = {}
    for folder in {Path(s).parent for s in shards}:
        path = folder / "sizes.json"
        if path.is_file():
            sizes.update({str(folder / k): int(v) for k, v in json.loads(path.read_text()).items()})
    if all(s in sizes for s in shards):
        total = sum(sizes[s] for s in shards)
    else:
        total = sum(_count_in_tar(s) for s in shards)
    if total == 0:
        raise DataError(f"the {len(shards)} shard(s) hold no image samples")
    return total


def _count_in_tar(path: str) -> int:
    keys = set()
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                stem, _, ext = Path(member.name).name.partition(".")
                if member.isfile() and ext.lower() in IMAGE_EXTS:
                    keys.add(str(Path(member.name).parent / stem))
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"{path}: not a readable tar ({exc})") from None
    return len(keys)


def fingerprint(shards: list[str], workdir: Path | None) -> str:
    """What the run was trained on: the harvest's samples.parquet digest, or the shard names and sizes."""
    samples = workdir / "samples.parquet" if workdir is not None else None
    own = workdir is not None and all(Path(s).parent == workdir / "shards" for s in shards)
    if own and samples is not None and samples.is_file():
        return "samples.parquet:" + file_digest(samples)
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{Path(s).name}:{Path(s).stat().st_size}\0".encode())
    return "shards:" + h.hexdigest()[:16]


def _seed_of(*parts: object) -> int:
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def train_transform(image_size: int, mean: tuple, std: tuple, cfg: TrainConfig) -> Any:
    """RandomResizedCrop with the configured scale and ratio (open_clip's own transform ignores the
    ratio unless timm is used), then the model's normalisation."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                image_size,
                scale=tuple(cfg.crop_scale),
                ratio=tuple(cfg.crop_ratio),
                interpolation=transforms.InterpolationMode.BICUBIC,
            ),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


@dataclass
class Batch:
    images: torch.Tensor
    texts: torch.Tensor
    labels: torch.Tensor  # int64 per sample: the caption's entity, -1 for none (multi-positive loss)
    keys: list[str]
    kinds: list[str]
    skipped: int = 0  # samples passed over while filling it: no image, no caption, an unreadable image


def collate(items: list[tuple[torch.Tensor, torch.Tensor, Caption, str]], skipped: int) -> Batch:
    return Batch(
        torch.stack([i[0] for i in items]),
        torch.stack([i[1] for i in items]),
        entity_labels([i[2].entity_id for i in items]),
        [i[3] for i in items],
        [i[2].kind for i in items],
        skipped,
    )


class ShardStream(IterableDataset):
    """The batches of a run (or of what is left of it after a resume), for one process, across
    epochs; see the module docstring for the order. `per_epoch` is batches per epoch per process,
    `start` and `stop` are global batch indices (epoch × per_epoch + batch within it)."""

    def __init__(
        self,
        shards: list[str],
        cfg: TrainConfig,
        transform: Any,
        tokenizer: Any,
        *,
        seed: int,
        rank: int,
        image_size: int,
        per_epoch: int,
        start: int,
        stop: int,
        subset: Subset | None = None,
    ) -> None:
        self.shards, self.cfg, self.transform, self.tokenizer = shards, cfg, transform, tokenizer
        self.subset = subset
        self.seed, self.rank, self.image_size = seed, rank, image_size
        self.per_epoch, self.start, self.stop = per_epoch, start, stop

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        loader_worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # The loader hands out its workers' batches round-robin from its worker 0, and a resumed
        # run's loader starts at batch `start`: its worker 0 plays the stream that served that batch.
        worker = (self.start + loader_worker) % workers
        stream = self.rank * workers + worker
        n, size = self.per_epoch, self.cfg.batch_size
        sampler = CaptionSampler(self.cfg.captions, self.seed)
        for epoch in range(self.start // n, (self.stop - 1) // n + 1):
            base = epoch * n
            first, last = max(self.start, base) - base, min(self.stop, base + n) - base
            skipped = _share(base, 0, first, worker, workers)
            samples = self._samples(stream, epoch)
            for _ in range(skipped * size):
                next(samples)
            position = skipped * size
            for _ in range(_share(base, first, last, worker, workers)):
                items, passed = [], 0
                while len(items) < size:
                    item = self._prepare(next(samples), sampler, stream, epoch, position)
                    position += 1
                    if item is None:
                        passed += 1
                    else:
                        items.append(item)
                yield collate(items, passed)

    def _samples(self, stream: int, epoch: int) -> Iterator[dict[str, Any]]:
        """Raw samples of one epoch: shards drawn with replacement, then a shuffle buffer; endless."""
        rng = random.Random(_seed_of(self.seed, epoch, stream, "shards"))
        buffer_rng = random.Random(_seed_of(self.seed, epoch, stream, "buffer"))

        def drawn() -> Iterator[dict[str, Any]]:
            while True:
                yield {"url": rng.choice(self.shards)}

        raw = tarfile_samples(drawn())
        if self.subset is not None:
            raw = _in_subset(raw, self.subset)
        bufsize = self.cfg.shuffle_buffer
        if bufsize <= 1:
            yield from raw
            return
        buffer: list[dict[str, Any]] = []
        for sample in raw:
            buffer.append(sample)
            if len(buffer) < bufsize:
                continue
            i = buffer_rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()

    def _prepare(
        self, raw: dict[str, Any], sampler: CaptionSampler, stream: int, epoch: int, position: int
    ) -> tuple[torch.Tensor, torch.Tensor, Caption, str] | None:
        image_bytes = next((raw[ext] for ext in IMAGE_EXTS if ext in raw), None)
        if image_bytes is None:
            return None
        key = raw["__key__"]
        caption = caption_of(sampler, raw, epoch)
        if caption is None or not caption.text:
            return None
        try:
            with Image.open(io.BytesIO(image_bytes)) as im:
                # JPEGs decode straight at a reduced scale (libjpeg's DCT scaling) while the shorter
                # side stays at least twice the training size, so even the smallest crop
                # (scale 0.4: 63% of the side) is downsampled, never enlarged
                im.draft("RGB", (2 * self.image_size, 2 * self.image_size))
                image = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError):
            return None
        # The CPU generator alone: torch.manual_seed also queues seeds for every accelerator kind,
        # formatting a stack trace each time (a seventh of the worker's time per sample)
        torch.default_generator.manual_seed(_seed_of(self.seed, epoch, stream, position) >> 1)
        pixels = self.transform(image)
        tokens = self.tokenizer([caption.text])[0]
        return pixels, tokens, caption, key


def _in_subset(raw: Iterator[dict[str, Any]], subset: Subset) -> Iterator[dict[str, Any]]:
    """The samples of the data fraction, each with its JSON as the subset has it (kept queries only);
    a sample without kgclip's JSON cannot be placed and is left out."""
    for sample in raw:
        try:
            meta = orjson.loads(sample.get("json") or b"")
        except orjson.JSONDecodeError:
            continue
        chosen = subset.select(meta) if is_kgclip_meta(meta) else None
        if chosen is not None:
            yield sample | {"json": chosen}


def _share(base: int, a: int, b: int, worker: int, workers: int) -> int:
    """How many of the batches base+a .. base+b-1 come from `worker`: the loader takes global batch
    J from worker J % workers (counted from the run's start, so it holds across epochs)."""

    def upto(m: int) -> int:  # batches 0..m-1 from `worker`
        return max(0, (m - worker + workers - 1) // workers)

    return upto(base + b) - upto(base + a)


def loader(stream: ShardStream, workers: int) -> DataLoader:
    """Batches come ready from the workers (batch_size=None); round-robin order keeps them fixed."""
    return DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False)
