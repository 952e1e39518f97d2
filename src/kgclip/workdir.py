"""The work directory: atomic file writes and the manifest that lets a harvest skip finished stages.

A stage counts as done only when the manifest says so *and* its outputs are still there with
the digests the manifest recorded; that is what lets a user delete a table to re-run a stage.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kgclip import __version__

MANIFEST = "manifest.json"
MARKER = ".kgclip-workdir"  # written into every work directory kgclip makes


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
    config_keys: dict[str, str] = field(default_factory=dict)  # a digest per config key the stage read

    @property
    def fingerprint(self) -> str:
        """Digest of the stage's outputs: what downstream stages record as their input."""
        return digest_of(*(f"{k}={v}" for k, v in sorted(self.outputs.items())))


class WorkdirError(RuntimeError):
    """A directory kgclip will not use as a work directory (it holds someone else's files)."""


class Workdir:
    """A harvest's directory. kgclip marks the directories it makes (`MARKER`) and refuses to write
    into a non-empty directory without the mark, because it replaces and deletes files in its own."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def is_ours(self) -> bool:
        """Marked, or made by a kgclip from before the mark (its manifest names a kgclip version)."""
        if self.path(MARKER).is_file():
            return True
        manifest = self.path(MANIFEST)
        if not manifest.is_file():
            return False
        try:
            data = orjson.loads(manifest.read_bytes())
        except orjson.JSONDecodeError:
            return False
        return isinstance(data, dict) and "kgclip_version" in data and isinstance(data.get("stages"), dict)

    def create(self) -> None:
        """Make (or adopt) the directory as a kgclip work directory; refuse anyone else's."""
        if self.root.exists() and not self.root.is_dir():
            raise WorkdirError(f"{self.root} is a file, not a directory")
        if self.root.is_dir() and not self.is_ours() and any(self.root.iterdir()):
            raise WorkdirError(
                f"{self.root} is not empty and was not made by kgclip; kgclip replaces and deletes files "
                "in its work directories, so give it a new or empty one with -w"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.path(MARKER).is_file():
            mark = {"kgclip": __version__, "created": time.time()}
            atomic_write_bytes(self.path(MARKER), orjson.dumps(mark))

    def load_manifest(self) -> dict[str, StageRecord]:
        return {name: StageRecord(**rec) for name, rec in self._read().get("stages", {}).items()}

    def _read(self) -> dict[str, Any]:
        path = self.path(MANIFEST)
        return orjson.loads(path.read_bytes()) if path.exists() else {}

    def save_record(self, stage: str, record: StageRecord) -> None:
        data = self._read()
        data.setdefault("stages", {})[stage] = record.__dict__
        data.get("running", {}).pop(stage, None)
        self._write(data)

    def drop_record(self, stage: str) -> None:
        data = self._read()
        if data.get("stages", {}).pop(stage, None) is not None:
            self._write(data)

    def mark_running(self, stage: str) -> None:
        """Remembered until the stage's record is saved, so `status` can tell an unfinished run."""
        data = self._read()
        entry = {"started": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
        data.setdefault("running", {})[stage] = entry
        self._write(data)

    def note_progress(self, stage: str, label: str, done: int, total: int | None) -> None:
        data = self._read()
        entry = data.setdefault("running", {}).get(stage)
        if entry is None:
            return
        entry.update(label=label, done=done, total=total, at=time.time())
        self._write(data)

    def note_stopped(self, stage: str) -> None:
        """The run ended without finishing (an error, Ctrl-C); a SIGKILL is told by the pid instead."""
        data = self._read()
        entry = data.get("running", {}).get(stage)
        if entry is not None:
            entry["stopped"] = time.time()
            self._write(data)

    def running(self) -> dict[str, dict[str, Any]]:
        """Unfinished stage runs, each with `alive`: whether its process still runs on this host."""
        found = self._read().get("running", {})
        here = socket.gethostname()
        for entry in found.values():
            ended = "stopped" in entry or entry.get("host") != here
            entry["alive"] = not ended and _pid_alive(entry.get("pid"))
        return found

    def _write(self, data: dict[str, Any]) -> None:
        data["kgclip_version"] = __version__
        data["updated"] = time.time()
        atomic_write_bytes(self.path(MANIFEST), orjson.dumps(data, option=orjson.OPT_INDENT_2))

    def output_digests(self, names: tuple[str, ...]) -> dict[str, str] | None:
        """Digests of a stage's declared outputs, or None when one is missing."""
        out = {}
        for name in names:
            path = self.path(name)
            if not path.is_file():
                return None
            out[name] = file_digest(path)
        return out


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
