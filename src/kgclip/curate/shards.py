"""WebDataset shard writing: `KEY.jpg`, `KEY.txt`, `KEY.json` per sample, plus `sizes.json`."""

from __future__ import annotations

import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

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

    def __init__(self, parts_dir: Path, open_files: int = 32) -> None:
        self.parts_dir = parts_dir
        self._open_files = open_files
        self._index: dict[str, dict[str, tuple[int, int]]] = {}
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()

    def read(self, part: str, member: str) -> bytes:
        index = self._index.get(part)
        if index is None:
            index = self._index[part] = self._scan(part)
        found = index.get(f"{member}.jpg")
        if found is None:
            raise FileNotFoundError(f"{part}: no member {member}.jpg")
        offset, size = found
        data = os.pread(self._file(part).fileno(), size, offset)
        if len(data) != size:
            raise OSError(f"{part}: member {member}.jpg is cut short")
        return data

    def _scan(self, part: str) -> dict[str, tuple[int, int]]:
        with tarfile.open(self.parts_dir / part) as tar:
            return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}

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


def write_shard(path: Path, samples: Iterable[tuple[str, bytes, str, dict]]) -> int:
    """Write (key, jpeg, caption, json) samples into one tar atomically; returns the count."""
    count = 0
    with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
        for key, jpeg, caption, meta in samples:
            add_member(tar, f"{key}.jpg", jpeg)
            add_member(tar, f"{key}.txt", caption.encode())
            add_member(tar, f"{key}.json", orjson.dumps(meta, option=orjson.OPT_SORT_KEYS))
            count += 1
    return count


def write_sizes(path: Path, sizes: dict[str, int]) -> None:
    """`sizes.json` beside the shards is how open_clip_train learns the sample count."""
    atomic_write_bytes(path, orjson.dumps(sizes, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
