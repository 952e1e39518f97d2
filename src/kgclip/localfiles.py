"""Opening files whose paths come from users or tables: regular files only, never blocking.

Opening a FIFO for reading blocks until a writer appears (forever, in a batch job), and a device,
socket or directory is no image, caption or table either. So such a path is opened with
O_NONBLOCK (which returns at once even for a FIFO) and the open descriptor is checked with fstat:
the file checked is the file read, with no window for a swap between a stat and an open.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


class NotRegularFile(OSError):
    """The path names something other than a regular file; nothing was read from it."""


def open_regular(path: str | Path) -> BinaryIO:
    """A binary reader for `path` (symlinks followed), or NotRegularFile / another OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = KINDS.get(stat.S_IFMT(mode), "something")
            raise NotRegularFile(errno.EINVAL, f"{kind}, not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def not_regular(path: str | Path) -> str | None:
    """What `path` is (symlinks followed) when it is not a regular file; None when it is one."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if stat.S_ISREG(mode):
        return None
    return f"{KINDS.get(stat.S_IFMT(mode), 'something')}, not a regular file"


def read_regular(path: str | Path, limit: int = -1) -> bytes:
    """The bytes of a regular file (at most `limit` when given)."""
    with open_regular(path) as fh:
        return fh.read(limit)


def read_text(path: Path) -> str | None:
    """A regular text file's contents (undecodable bytes replaced); None when nothing is there."""
    try:
        return read_regular(path).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def within(real: str, roots: tuple[str, ...] | list[str]) -> bool:
    """Whether the resolved path `real` is one of `roots` or below one (roots resolved too)."""
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)
