"""The work directory: atomic file writes and the manifest that lets a harvest skip finished stages.

A stage counts as done only when the manifest says so *and* its outputs are still there with
the digests the manifest recorded; that is what lets a user delete a table to re-run a stage.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kgclip import __version__

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling to write; on success it is fsynced and renamed over `path`.

    A crash at any point leaves either the old file or the new one, never a torn one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> str:
    """SHA-256 prefix of a file; memoised on (path, size, mtime) because the runner asks for the
    same outputs' digests several times per harvest, and hits or samples tables can be large."""
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def digest_of(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@dataclass
class StageRecord:
    """What the manifest remembers about one finished stage run."""

    config_hash: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    rows: int
    seconds: float
    finished: float
    version: str = __version__
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Digest of the stage's outputs: what downstream stages record as their input."""
        return digest_of(*(f"{k}={v}" for k, v in sorted(self.outputs.items())))


class Workdir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def load_manifest(self) -> dict[str, StageRecord]:
        path = self.path(MANIFEST)
        if not path.exists():
            return {}
        data = orjson.loads(path.read_bytes())
        return {name: StageRecord(**rec) for name, rec in data.get("stages", {}).items()}

    def save_record(self, stage: str, record: StageRecord) -> None:
        records = self.load_manifest()
        records[stage] = record
        self._save(records)

    def drop_record(self, stage: str) -> None:
        records = self.load_manifest()
        if records.pop(stage, None) is not None:
            self._save(records)

    def _save(self, records: dict[str, StageRecord]) -> None:
        payload = {
            "kgclip_version": __version__,
            "updated": time.time(),
            "stages": {name: rec.__dict__ for name, rec in records.items()},
        }
        atomic_write_bytes(self.path(MANIFEST), orjson.dumps(payload, option=orjson.OPT_INDENT_2))

    def output_digests(self, names: tuple[str, ...]) -> dict[str, str] | None:
        """Digests of a stage's declared outputs, or None when one is missing."""
        out = {}
        for name in names:
            path = self.path(name)
            if not path.is_file():
                return None
            out[name] = file_digest(path)
        return out
