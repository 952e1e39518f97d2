"""WebDataset shard writing: `KEY.jpg`, `KEY.txt`, `KEY.json` per sample, plus `sizes.json`."""

from __future__ import annotations

import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson

from kgclip.tario import add_member
from kgclip.workdir import atomic_path, atomic_write_bytes


class PartReader:
    """Reads stored JPEGs back from the fetch parts in any order.

    Samples come in pixel-hash order, so consecutive reads jump between parts. Each part's member
    offsets are indexed once (one pass over its headers) and then read with a single pread; a
    tarfile lookup by name instead rescans the headers on every reopen, which made curate
    quadratic in the part size. A few parts stay open at a time.
    """

    def __init__(self, parts_dir: Path, open_files: int = 32, indexes: Path | None = None) -> None:
        self.parts_dir = parts_dir
        self._open_files = open_files
        self._indexes = indexes  # where `index_part` saved the parts' member indexes, if it did
        self._index: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()

    def read(self, part: str, member: str) -> bytes:
        index = self._index.get(part)
        if index is None:
            index = self._index[part] = self._load(part)
        names, offsets, sizes = index
        name = f"{member}.jpg".encode()
        at = int(np.searchsorted(names, name))
        if at == len(names) or names[at] != name:
            raise FileNotFoundError(f"{part}: no member {member}.jpg")
        offset, size = int(offsets[at]), int(sizes[at])
        data = os.pread(self._file(part).fileno(), size, offset)
        if len(data) != size:
            raise OSError(f"{part}: member {member}.jpg is cut short")
        return data

    def _load(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        saved = None if self._indexes is None else self._indexes / f"{part}.npz"
        if saved is not None and saved.is_file():
            with np.load(saved) as arrays:
                return arrays["names"], arrays["offsets"], arrays["sizes"]
        return scan_part(self.parts_dir / part)

    def _file(self, part: str) -> BinaryIO:
        fh = self._files.pop(part, None)
        if fh is None:
            fh = open(self.parts_dir / part, "rb")  # noqa: SIM115 - kept open across reads
            if len(self._files) >= self._open_files:
                self._files.popitem(last=False)[1].close()
        self._files[part] = fh
        return fh

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()


def scan_part(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A part's members as sorted arrays (name, data offset, size): a few dozen bytes a member
    rather than a dict entry, since every part stays indexed for the whole stage. A name stored
    twice keeps its last member, as a lookup by name in the tar does. Reading the headers is
    most of the cost (0.1 ms a member)."""
    with tarfile.open(path) as tar:
        found = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
    names = np.array([n.encode() for n in found], dtype=bytes)
    order = np.argsort(names, kind="stable")
    offsets = np.array([o for o, _ in found.values()], dtype=np.int64)
    sizes = np.array([z for _, z in found.values()], dtype=np.int64)
    return names[order], offsets[order], sizes[order]


def index_part(path: Path, folder: Path) -> None:
    """Save a part's member index for `PartReader(indexes=folder)`: tasks that each read a few
    members of every part load it instead of reading every header again."""
    names, offsets, sizes = scan_part(path)
    with atomic_path(folder / f"{path.name}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, names=names, offsets=offsets, sizes=sizes)


def write_shard(path: Path, samples: Iterable[tuple[str, bytes, str, dict]]) -> int:
    """Write (key, jpeg, caption, json) samples into one tar atomically; returns the count."""
    with ShardWriter(path) as shard:
        for key, jpeg, caption, meta in samples:
            shard.add(key, jpeg, caption, meta)
    return shard.count


class ShardWriter:
    """One shard written a sample at a time, atomically: the tar appears under its name only when
    the `with` block ends without an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._stack = ExitStack()

    def __enter__(self) -> ShardWriter:
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._tar = self._stack.enter_context(tarfile.open(tmp, "w"))
        return self

    def add(self, key: str, jpeg: bytes, caption: str, meta: dict) -> None:
        add_member(self._tar, f"{key}.jpg", jpeg)
        add_member(self._tar, f"{key}.txt", caption.encode())
        add_member(self._tar, f"{key}.json", orjson.dumps(meta, option=orjson.OPT_SORT_KEYS))
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)


def write_sizes(path: Path, sizes: dict[str, int]) -> None:
    """`sizes.json` beside the shards is how open_clip_train learns the sample count."""
    atomic_write_bytes(path, orjson.dumps(sizes, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
