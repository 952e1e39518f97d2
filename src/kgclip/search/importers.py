"""Readers that turn a local image-text collection into corpus items.

Each importer yields `CorpusItem`s and `Skipped` records: a file that cannot become an item is
never dropped silently, because a user wondering why an image never shows up must find out.

A corpus has roots (`corpus_roots`): the folder it was imported from, or a table's folder. Only
regular files that resolve (symlinks followed) below a root become items, and fetch reads local
files of corpus hits only there: a table line or a symlink cannot make kgclip read `/etc/passwd`.
Every file is opened without blocking and checked to be regular (kgclip.localfiles), so a FIFO
is skipped instead of hanging the index forever.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import orjson
import pyarrow.parquet as pq
from PIL import Image

from kgclip.fetch.images import ACCEPTED_EXTENSIONS
from kgclip.localfiles import NotRegularFile, open_regular, read_text, within

RASTER = frozenset(ACCEPTED_EXTENSIONS)  # every format fetch accepts
VECTOR = {".svg", ".svgz"}
META_KEYS = ("license", "attribution", "page_url")
SIDECARS = (".txt", ".json")  # captions (and Tux Paint's), metadata
TUXPAINT_COPYRIGHT = Path("/usr/share/doc/tuxpaint-stamps-default/copyright")


class CorpusSourceError(ValueError):
    """A source that cannot be imported at all (wrong layout, missing columns)."""


@dataclass(frozen=True, slots=True)
class CorpusItem:
    uri: str
    text: str
    category: str = ""
    license: str | None = None
    attribution: str | None = None
    page_url: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    reason: str


def file_uri(path: Path) -> str:
    return path.resolve().as_uri()


def corpus_roots(src: Path) -> list[str]:
    """The folders a corpus imported from `src` may hold files in: the folder itself, or the
    folder of a table, resolved."""
    real = os.path.realpath(src)
    return [real] if os.path.isdir(real) else [os.path.dirname(real)]


def local_problem(path: Path, roots: list[str]) -> str | None:
    """Why a local image cannot be a corpus item; None for a regular file below a root."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return "not_a_regular_file"
    if not within(os.path.realpath(path), roots):
        return "outside_corpus_root"
    return None


def detect(src: Path) -> str:
    """Guess the importer: a table file, a Tux Paint stamps tree, or a folder with sidecars."""
    if src.is_file():
        return "table"
    if not src.is_dir():
        raise CorpusSourceError(f"{src}: no such file or folder")
    for txt in src.rglob("*.txt"):
        try:
            with open_regular(txt) as fh:
                fh.readline()
                return "tuxpaint" if b".utf8=" in fh.readline() else "folder"
        except OSError:
            continue  # not a readable regular file: the importer will list it as skipped
    return "folder"


def import_source(src: Path, importer: str) -> Iterator[CorpusItem | Skipped]:
    kind = detect(src) if importer == "auto" else importer
    readers = {"tuxpaint": tuxpaint, "folder": folder, "table": table}
    if kind not in readers:
        raise CorpusSourceError(f"unknown importer {kind!r}; choose one of {', '.join(readers)}")
    yield from readers[kind](src)


def _walk_sorted(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def tuxpaint(root: Path) -> Iterator[CorpusItem | Skipped]:
    """Tux Paint stamps: `<cat>/<sub>/<name>.png` with `<name>.txt` whose first line is English.

    `<name>_mirror.png` is the stamp's mirrored twin and shares `<name>.txt`.
    """
    if not root.is_dir():
        raise CorpusSourceError(f"{root}: not a folder (is tuxpaint-stamps-default installed?)")
    licence = debian_licence(TUXPAINT_COPYRIGHT) or "GPL-2"
    attribution = "Tux Paint stamps (tuxpaint-stamps-default), by Bill Kendrick and contributors"
    roots = corpus_roots(root)
    for path in _walk_sorted(root):
        suffix = path.suffix.lower()
        if suffix not in RASTER:
            problem = format_problem(suffix)
            if problem is not None:
                yield Skipped(str(path), problem)
            continue
        caption = _caption(path, path.with_name(path.stem.removesuffix("_mirror") + ".txt"), roots)
        if isinstance(caption, Skipped):
            yield caption
            continue
        lines = caption.splitlines()
        text = lines[0].strip() if lines else ""
        if not text:
            yield Skipped(str(path), "empty_caption")
            continue
        yield CorpusItem(file_uri(path), text, _category(path, root), licence, attribution)


def format_problem(suffix: str) -> str | None:
    """Why a file with this suffix, not one fetch accepts, is no corpus image: a vector image, or
    a format Pillow knows that fetch refuses. None for a file that is no image at all (captions,
    sidecars, sounds), which is not worth a line in the list of skipped files."""
    if suffix in VECTOR:
        return "vector_image"
    other = _pillow_extensions().get(suffix)
    return None if other is None else f"unsupported_format: {other}"


def read_by_importers(name: str) -> bool:
    """Whether the folder and Tux Paint importers read (or list as skipped) a file of this name:
    images, captions and sidecars. A change to any other file changes no index."""
    suffix = os.path.splitext(name)[1].lower()
    return suffix in RASTER or suffix in SIDECARS or format_problem(suffix) is not None


@functools.cache
def _pillow_extensions() -> dict[str, str]:
    Image.init()
    return dict(Image.registered_extensions())


def _caption(image: Path, caption: Path, roots: list[str]) -> str | Skipped:
    """The caption file's text for a local image, or why the image cannot be an item."""
    problem = local_problem(image, roots)
    if problem is not None:
        return Skipped(str(image), problem)
    text = _sidecar(caption)
    if isinstance(text, Skipped):
        return text
    return Skipped(str(image), "no_caption") if text is None else text


def _sidecar(path: Path) -> str | Skipped | None:
    """A sidecar file's text (None when there is none), or why it cannot be read."""
    try:
        return read_text(path)
    except NotRegularFile:
        return Skipped(str(path), "not_a_regular_file")
    except OSError as exc:
        return Skipped(str(path), f"unreadable: {exc.strerror}")


def _category(path: Path, root: Path) -> str:
    rel = path.parent.relative_to(root).as_posix()
    return "" if rel == "." else rel


def debian_licence(copyright_file: Path) -> str | None:
    """The `License:` of the `Files: *` stanza of a machine-readable Debian copyright file."""
    try:
        text = read_text(copyright_file)
    except OSError:
        return None
    in_all_files = False
    for line in (text or "").splitlines():
        if line.startswith("Files:"):
            in_all_files = line.split(":", 1)[1].strip() == "*"
        elif in_all_files and line.startswith("License:"):
            return line.split(":", 1)[1].strip()
    return None


def folder(root: Path) -> Iterator[CorpusItem | Skipped]:
    """Images with sidecars: `<name>.txt` holds the caption; optional `<name>.json` holds
    `license`, `attribution` and `page_url`. The category is the folder path."""
    if not root.is_dir():
        raise CorpusSourceError(f"{root}: not a folder")
    roots = corpus_roots(root)
    for path in _walk_sorted(root):
        suffix = path.suffix.lower()
        if suffix not in RASTER:
            problem = format_problem(suffix)
            if problem is not None:
                yield Skipped(str(path), problem)
            continue
        caption = _caption(path, path.with_suffix(".txt"), roots)
        if isinstance(caption, Skipped):
            yield caption
            continue
        text = " ".join(caption.split())
        if not text:
            yield Skipped(str(path), "empty_caption")
            continue
        meta = _sidecar_meta(path.with_suffix(".json"))
        if isinstance(meta, Skipped):
            yield meta
            continue
        yield CorpusItem(
            file_uri(path),
            text,
            _category(path, root),
            meta.get("license"),
            meta.get("attribution"),
            meta.get("page_url"),
        )


def _sidecar_meta(path: Path) -> dict[str, str] | Skipped:
    text = _sidecar(path)
    if isinstance(text, Skipped):
        return text
    if text is None:
        return {}
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Skipped(str(path), f"bad_sidecar_json: {exc}")
    if not isinstance(data, dict):
        return Skipped(str(path), f"bad_sidecar_json: a JSON {_json_kind(data)}, not an object")
    meta = {}
    for key in META_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return Skipped(str(path), f"bad_sidecar_json: {key} is a JSON {_json_kind(value)}, not a string")
        if value.strip():
            meta[key] = value.strip()
    return meta


def _json_kind(value: object) -> str:
    kinds = {list: "array", bool: "boolean", int: "number", float: "number", str: "string", dict: "object"}
    return kinds.get(type(value), type(value).__name__)


LOCATION_COLUMNS = ("path", "url", "uri", "image")
TEXT_COLUMNS = ("text", "caption", "alt_text")
URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def table(path: Path) -> Iterator[CorpusItem | Skipped]:
    """A parquet or CSV table: a location column (path/url/uri/image), a text column
    (text/caption/alt_text), and optional license, attribution, page_url and category.

    Read as it is indexed (CSV a line at a time, parquet a record batch at a time), so a table of
    millions of rows is never held whole."""
    with _open_table(path) as rows:
        first = next(rows, None)
        if first is None:
            return
        columns = set(first)
        loc = next((c for c in LOCATION_COLUMNS if c in columns), None)
        txt = next((c for c in TEXT_COLUMNS if c in columns), None)
        if loc is None or txt is None:
            raise CorpusSourceError(
                f"{path}: needs a location column ({'/'.join(LOCATION_COLUMNS)}) and a text column "
                f"({'/'.join(TEXT_COLUMNS)}); found {', '.join(sorted(columns))}"
            )
        roots = corpus_roots(path)
        for i, row in enumerate(itertools.chain((first,), rows), start=1):
            where = str(row.get(loc) or "").strip()
            text = " ".join(str(row.get(txt) or "").split())
            if not where:
                yield Skipped(f"{path}:row {i}", "no_location")
                continue
            if not text:
                yield Skipped(where, "empty_caption")
                continue
            uri = _table_uri(where, path.parent, roots)
            if isinstance(uri, Skipped):
                yield uri
                continue
            yield CorpusItem(
                uri,
                text,
                str(row.get("category") or ""),
                _opt(row.get("license")),
                _opt(row.get("attribution")),
                _opt(row.get("page_url")),
            )


def _table_uri(where: str, base: Path, roots: list[str]) -> str | Skipped:
    """A table location as an item URI: a web URL as given; a local path (relative to the table)
    or `file:` URL only for a regular file below the table's folder."""
    if not URL_RE.match(where):
        local = base / where
    elif urlparse(where).scheme.lower() == "file":
        parsed = urlparse(where)
        if parsed.netloc not in ("", "localhost"):
            return Skipped(where, "file_url_with_host")
        local = Path(unquote(parsed.path))
    else:
        return where
    problem = local_problem(local, roots)
    return Skipped(where, problem) if problem else file_uri(local)


def _opt(value: object) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


TABLE_BATCH_ROWS = 4096  # parquet rows turned into dicts at a time


@contextlib.contextmanager
def _open_table(path: Path) -> Iterator[Iterator[dict[str, object]]]:
    """The table's rows as dicts, read lazily from the open file."""
    suffix = path.suffix.lower()
    if suffix not in {".parquet", ".csv", ".tsv"}:
        raise CorpusSourceError(f"{path}: a corpus table must be .parquet, .csv or .tsv")
    try:
        fh = open_regular(path)
    except OSError as exc:
        raise CorpusSourceError(f"{path}: cannot read the table: {exc.strerror}") from None
    with fh:
        if suffix == ".parquet":
            file = pq.ParquetFile(fh)
            yield (row for batch in file.iter_batches(TABLE_BATCH_ROWS) for row in batch.to_pylist())
        else:
            text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
            yield iter(csv.DictReader(text, delimiter="\t" if suffix == ".tsv" else ","))
