"""Decontamination: keep copies of evaluation images out of the training set.

`build_index` hashes every image of one or more evaluation sets (folders in any layout, such as
ImageFolder class folders, CUB's `images/` or iNaturalist's `val/`, and WebDataset tars, such as
CLIP_benchmark's `wds_*` folders) into a parquet index: per image its hash and the hashes of ten
crops, 4% and 9% off (curate/phash.py). The curate stage then drops every harvested picture within
`decontam_distance` bits of any of them, and records which evaluation image it matched.

The index stores no pixels, only 63-bit hashes, the images' names and where each set lay when it was
indexed, so it can be shared. That location lets the curate stage keep a thumbnail of the evaluation
image each dropped picture matched (`save_matches`), for the viewer to show the pair.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from kgclip.curate import phash
from kgclip.curate.hashindex import HashIndex
from kgclip.fetch.images import Rejection, working_mode
from kgclip.localfiles import not_regular, open_regular, read_regular
from kgclip.progress import meter
from kgclip.tables import Rejected
from kgclip.thumbnail import UNREADABLE, jpeg_thumbnail
from kgclip.workdir import atomic_path, atomic_write_bytes, digest_of
from kgclip.workers import process_pool

MATCHES = "decontam"  # workdir folder: the evaluation image each dropped picture matched, small
MATCH_SIZE = 320
DISTANCE = re.compile(r"(.*) \(distance \d+\)", re.DOTALL)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
FORMAT = "kgclip-decontam-1"
SCHEMA = pa.schema(
    [("eval_set", pa.string()), ("image", pa.string()), ("variant", pa.int8()), ("phash", pa.int64())]
)


class DecontamError(RuntimeError):
    """An evaluation set or an index that cannot be used."""


@dataclass(frozen=True)
class IndexReport:
    images: int
    hashes: int
    unreadable: list[str]  # `set:image`, with what it is when it is not a regular file
    seconds: float


def parse_source(spec: str) -> tuple[str, Path]:
    """`NAME=PATH`, or a bare PATH named after its last folder."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    where = Path(path)
    if not where.exists():
        raise DecontamError(f"{where}: no such evaluation set")
    return name or where.resolve().name, where


def build_index(sources: list[tuple[str, Path]], out: Path, workers: int = 0) -> IndexReport:
    """Hash every image of the sources into `out`; what could not be read is listed in the report
    (files that are not regular, such as FIFOs, with what they are: they are never opened)."""
    began = time.monotonic()
    skipped: list[str] = []
    items = [(name, image, load) for name, path in sources for image, load in _images(path, name, skipped)]
    if not items:
        raise DecontamError("no images found in " + ", ".join(str(p) for _, p in sources))
    rows: dict[str, list] = {"eval_set": [], "image": [], "variant": [], "phash": []}
    unreadable: list[str] = []
    with meter("decontam index", len(items)) as m, process_pool(workers or os.cpu_count()) as pool:
        loaders = [loader for _, _, loader in items]
        for (name, image, _), hashes in zip(items, pool.map(_hash_one, loaders, chunksize=64), strict=True):
            m.advance()
            if hashes is None:
                unreadable.append(f"{name}:{image}")
                continue
            for variant, h in enumerate(hashes):
                rows["eval_set"].append(name)
                rows["image"].append(image)
                rows["variant"].append(variant)
                rows["phash"].append(h)
    meta = {
        "format": FORMAT,
        "phash_version": str(phash.VERSION),
        "sources": json.dumps({name: str(path.resolve()) for name, path in sources}),
    }
    table = pa.table(rows, schema=SCHEMA).replace_schema_metadata(meta)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    images = len(items) - len(unreadable)
    return IndexReport(images, table.num_rows, skipped + unreadable, time.monotonic() - began)


@dataclass(frozen=True)
class _Loader:
    """Where one image's bytes are: a file, or a member of a tar. Picklable for the pool."""

    path: str
    member: str | None = None

    def read(self) -> bytes:
        if self.member is None:
            return read_regular(self.path)
        with open_regular(self.path) as raw, tarfile.open(fileobj=raw) as tar:
            fh = tar.extractfile(self.member)
            if fh is None:
                raise OSError(f"{self.member} is not a file")
            return fh.read()


def _images(root: Path, eval_set: str, skipped: list[str]) -> Iterator[tuple[str, _Loader]]:
    """Every image under `root` in a stable order, named relative to it (tars: `tar/member`).

    An image or tar name that is not a regular file (a FIFO, a socket, a device) is listed in
    `skipped` with what it is and never opened: opening a FIFO waits for a writer forever.
    """
    files = [root] if not root.is_dir() else sorted(p for p in root.rglob("*") if not p.is_dir())
    for path in files:
        name = path.name if path == root else path.relative_to(root).as_posix()
        suffix = path.suffix.lower()
        if suffix not in (*IMAGE_SUFFIXES, ".tar"):
            continue
        problem = not_regular(path)
        if problem is not None:
            skipped.append(f"{eval_set}:{name} ({problem})")
        elif suffix != ".tar":
            yield name, _Loader(str(path))
        else:
            with open_regular(path) as raw, tarfile.open(fileobj=raw) as tar:
                members = sorted(m.name for m in tar.getmembers() if m.isfile())
            for member in members:
                if Path(member).suffix.lower() in IMAGE_SUFFIXES:
                    yield f"{name}/{member}", _Loader(str(path), member)


def _hash_one(loader: _Loader) -> list[int] | None:
    try:
        with Image.open(io.BytesIO(loader.read())) as image:
            image.draft("RGB", (512, 512))  # a JPEG decodes at the scale the harvest stores
            working = working_mode(image)  # the fetch stage's conversions: alpha on white, CMYK, 16-bit
            return None if isinstance(working, Rejection) else phash.variants(working)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


class EvalIndex:
    """One or more built indexes, searchable by the harvest's hashes."""

    def __init__(self, paths: list[Path]) -> None:
        tables = [self._read(p) for p in paths]
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        self.eval_set = table.column("eval_set").to_pylist()
        self.image = table.column("image").to_pylist()
        self._index = HashIndex(table.column("phash").to_numpy().astype(np.uint64))
        self.images_per_set = {
            name: len({i for s, i in zip(self.eval_set, self.image, strict=True) if s == name})
            for name in set(self.eval_set)
        }

    @staticmethod
    def _read(path: Path) -> pa.Table:
        if not path.is_file():
            raise DecontamError(f"{path}: no decontamination index (build one with `kgclip decontam index`)")
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DecontamError(f"{path}: not a decontamination index ({exc})") from None
        meta = table.schema.metadata or {}
        if meta.get(b"format") != FORMAT.encode():
            raise DecontamError(f"{path}: not a kgclip decontamination index")
        if meta.get(b"phash_version") != str(phash.VERSION).encode():
            raise DecontamError(f"{path}: built with another perceptual hash; build it again")
        return table.select(SCHEMA.names).cast(SCHEMA)

    def matches(self, hashes: list[int] | np.ndarray, distance: int) -> dict[int, tuple[str, str, int]]:
        """For each position in `hashes` that matches: (eval set, image, distance) of its nearest."""
        if len(hashes) == 0 or len(self._index) == 0:
            return {}
        q, i, d = self._index.search(np.array(hashes, dtype=np.uint64), distance)
        best: dict[int, tuple[str, str, int]] = {}
        found = sorted(zip(q.tolist(), d.tolist(), i.tolist(), strict=True))  # nearest first
        for qi, di, ii in found:
            best.setdefault(qi, (self.eval_set[ii], self.image[ii], di))
        return best


def match_file(url: str) -> str:
    """The file under MATCHES that shows the evaluation image the picture from `url` was dropped for."""
    return digest_of("eval-match", url) + ".jpg"


def save_matches(paths: list[Path], removed: list[Rejected], folder: Path) -> int:
    """Keep a thumbnail of the evaluation image each dropped picture matched, read from where its set
    lay when indexed, so the pair can be shown later without the set. A picture whose match cannot
    be read now loses any thumbnail an earlier run kept (never a stale one). Returns how many were kept."""
    roots: dict[str, Path] = {}
    for path in paths:
        for name, root in _sources(path).items():
            roots.setdefault(name, root)
    thumbs: dict[tuple[str, str], bytes | None] = {}
    kept = 0
    for r in removed:
        target = folder / match_file(r.item)
        where = _matched(r.detail, roots)
        if where is not None and where not in thumbs:
            thumbs[where] = _eval_thumbnail(roots[where[0]], where[1])
        data = thumbs.get(where) if where is not None else None
        if data is None:
            target.unlink(missing_ok=True)
        else:
            atomic_write_bytes(target, data)
            kept += 1
    return kept


def _sources(path: Path) -> dict[str, Path]:
    """Set name -> its folder, as recorded by `build_index` (indexes built before that record none)."""
    meta = pq.read_schema(path).metadata or {}
    try:
        found = json.loads(meta.get(b"sources", b"{}"))
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): Path(v) for k, v in found.items() if isinstance(v, str)}


def _matched(detail: str, roots: dict[str, Path]) -> tuple[str, str] | None:
    """(set, image) of an `eval_copy` detail, "SET:IMAGE (distance D)"; the longest known set name
    wins, so a colon inside a set's or an image's name is no ambiguity."""
    m = DISTANCE.fullmatch(detail)
    if m is None:
        return None
    names = [n for n in roots if m.group(1).startswith(n + ":")]
    if not names:
        return None
    name = max(names, key=len)
    return name, m.group(1)[len(name) + 1 :]


def _eval_thumbnail(root: Path, image: str) -> bytes | None:
    """The image named as `_images` names it (a path under `root`, or `TAR/MEMBER`), small; None when
    it is not there, not readable, or its name would leave `root`."""
    parts = image.split("/")
    tar_at = next((i for i, part in enumerate(parts[:-1]) if part.lower().endswith(".tar")), None)
    file_parts = parts if tar_at is None else parts[: tar_at + 1]
    path = root.joinpath(*file_parts)
    if not path.resolve().is_relative_to(root.resolve()):
        return None
    member = None if tar_at is None else "/".join(parts[tar_at + 1 :])
    try:
        return jpeg_thumbnail(_Loader(str(path), member).read(), MATCH_SIZE)
    except (*UNREADABLE, tarfile.TarError, KeyError):
        return None
