"""Readers that turn a local image-text collection into corpus items.

Each importer yields `CorpusItem`s and `Skipped` records: a file that cannot become an item is
never dropped silently, because a user wondering why an image never shows up must find out.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.parquet as pq

RASTER = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VECTOR = {".svg", ".svgz"}
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


def detect(src: Path) -> str:
    """Guess the importer: a table file, a Tux Paint stamps tree, or a folder with sidecars."""
    if src.is_file():
        return "table"
    if not src.is_dir():
        raise CorpusSourceError(f"{src}: no such file or folder")
    for txt in src.rglob("*.txt"):
        with open(txt, encoding="utf-8", errors="replace") as fh:
            fh.readline()
            if ".utf8=" in fh.readline():
                return "tuxpaint"
        break
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
    for path in _walk_sorted(root):
        suffix = path.suffix.lower()
        if suffix in VECTOR:
            yield Skipped(str(path), "vector_image")
            continue
        if suffix not in RASTER:
            continue
        stem = path.stem.removesuffix("_mirror")
        caption = path.with_name(stem + ".txt")
        if not caption.is_file():
            yield Skipped(str(path), "no_caption")
            continue
        lines = caption.read_text(encoding="utf-8", errors="replace").splitlines()
        text = lines[0].strip() if lines else ""
        if not text:
            yield Skipped(str(path), "empty_caption")
            continue
        yield CorpusItem(file_uri(path), text, _category(path, root), licence, attribution)


def _category(path: Path, root: Path) -> str:
    rel = path.parent.relative_to(root).as_posix()
    return "" if rel == "." else rel


def debian_licence(copyright_file: Path) -> str | None:
    """The `License:` of the `Files: *` stanza of a machine-readable Debian copyright file."""
    if not copyright_file.is_file():
        return None
    in_all_files = False
    for line in copyright_file.read_text(encoding="utf-8", errors="replace").splitlines():
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
    for path in _walk_sorted(root):
        suffix = path.suffix.lower()
        if suffix in VECTOR:
            yield Skipped(str(path), "vector_image")
            continue
        if suffix not in RASTER:
            continue
        caption = path.with_suffix(".txt")
        if not caption.is_file():
            yield Skipped(str(path), "no_caption")
            continue
        text = " ".join(caption.read_text(encoding="utf-8", errors="replace").split())
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
    if not path.is_file():
        return {}
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        return Skipped(str(path), f"bad_sidecar_json: {exc}")
    if not isinstance(data, dict):
        return Skipped(str(path), "bad_sidecar_json: not an object")
    return {
        k: str(v) for k, v in data.items() if k in {"license", "attribution", "page_url"} and v is not None
    }


LOCATION_COLUMNS = ("path", "url", "uri", "image")
TEXT_COLUMNS = ("text", "caption", "alt_text")
URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def table(path: Path) -> Iterator[CorpusItem | Skipped]:
    """A parquet or CSV table: a location column (path/url/uri/image), a text column
    (text/caption/alt_text), and optional license, attribution, page_url and category."""
    rows = _read_rows(path)
    if not rows:
        return
    columns = set(rows[0])
    loc = next((c for c in LOCATION_COLUMNS if c in columns), None)
    txt = next((c for c in TEXT_COLUMNS if c in columns), None)
    if loc is None or txt is None:
        raise CorpusSourceError(
            f"{path}: needs a location column ({'/'.join(LOCATION_COLUMNS)}) and a text column "
            f"({'/'.join(TEXT_COLUMNS)}); found {', '.join(sorted(columns))}"
        )
    base = path.parent
    for i, row in enumerate(rows, start=1):
        where = str(row.get(loc) or "").strip()
        text = " ".join(str(row.get(txt) or "").split())
        if not where:
            yield Skipped(f"{path}:row {i}", "no_location")
            continue
        if not text:
            yield Skipped(where, "empty_caption")
            continue
        uri = where if URL_RE.match(where) else file_uri(base / where)
        yield CorpusItem(
            uri,
            text,
            str(row.get("category") or ""),
            _opt(row.get("license")),
            _opt(row.get("attribution")),
            _opt(row.get("page_url")),
        )


def _opt(value: object) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _read_rows(path: Path) -> list[dict[str, object]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if suffix in {".csv", ".tsv"}:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    raise CorpusSourceError(f"{path}: a corpus table must be .parquet, .csv or .tsv")
