"""WebDataset shard writing: `KEY.jpg`, `KEY.txt`, `KEY.json` per sample, plus `sizes.json`."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from pathlib import Path

import orjson

from kgclip.tario import add_member
from kgclip.workdir import atomic_path, atomic_write_bytes


class PartReader:
    """Reads stored JPEGs back from the fetch parts, keeping one part open at a time."""

    def __init__(self, parts_dir: Path) -> None:
        self.parts_dir = parts_dir
        self._name: str | None = None
        self._tar: tarfile.TarFile | None = None

    def read(self, part: str, member: str) -> bytes:
        if part != self._name:
            self.close()
            self._tar = tarfile.open(self.parts_dir / part)  # noqa: SIM115 - kept open across reads
            self._name = part
        assert self._tar is not None
        fh = self._tar.extractfile(f"{member}.jpg")
        if fh is None:
            raise FileNotFoundError(f"{part}: no member {member}.jpg")
        return fh.read()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
        self._tar, self._name = None, None


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
