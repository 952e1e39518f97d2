"""Image bytes straight from the shard tars by member offset, and thumbnails cached under the workdir.

No path from a request reaches the filesystem: a request names a sample key, the index says which
shard and offset hold it, and the shard path is checked to lie inside the work directory's shard
folders."""

from __future__ import annotations

import os
from pathlib import Path

from kgclip.thumbnail import jpeg_thumbnail
from kgclip.view.index import CACHE_DIR, SHARD_DIRS

THUMB_SIZES = (160, 320)


class NotServed(LookupError):
    """The sample or member is not in the shards (or its path would leave them)."""


def shard_path(workdir: Path, split: str, shard: str, folder_name: str | None = None) -> Path:
    folder = (workdir / (folder_name or SHARD_DIRS.get(split, "shards"))).resolve()
    path = (folder / shard).resolve()
    if path.parent != folder or not path.name.endswith(".tar") or not path.is_file():
        raise NotServed(f"{shard!r} is not a shard")
    return path


def read_member(
    workdir: Path, split: str, shard: str, offset: int | None, size: int | None, *, folder: str | None = None
) -> bytes:
    """`size` bytes at `offset` of a shard (of the split's folder, or of `folder`: parts/)."""
    if offset is None or size is None:
        raise NotServed("no such member in the shard")
    path = shard_path(workdir, split, shard, folder)
    if offset < 0 or size < 0 or offset + size > path.stat().st_size:
        raise NotServed("member outside the shard")
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def thumbnail(workdir: Path, sha256: str, size: int, jpeg: bytes) -> bytes:
    """A JPEG at most `size` pixels on its longer side, made once and kept in cache/view/thumbs/."""
    if size not in THUMB_SIZES or not sha256.isalnum():
        raise NotServed(f"no thumbnail size {size}")
    path = workdir / CACHE_DIR / "thumbs" / sha256[:2] / f"{sha256}-{size}.jpg"
    if path.is_file():
        return path.read_bytes()
    data = jpeg_thumbnail(jpeg, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # a cache: renamed whole, not fsynced
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data
