"""The viewer's SQLite index: built once from the work directory's parquet tables and shard tars,
cached under `cache/view/` keyed by the digest of samples.parquet, and read per request by key.

Nothing a page asks for loads a whole table: every lookup is an indexed SQLite query."""

from __future__ import annotations

import os
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from kgclip.workdir import file_digest

CACHE_DIR = "cache/view"
SHARD_DIRS = {"train": "shards", "val": "val"}
PARTS = "parts"  # fetch's parts: where the pixels of pictures curate dropped lie
INDEX_VERSION = "6"
BATCH = 20_000

SCHEMA = """
CREATE TABLE samples (
  key TEXT PRIMARY KEY, shard TEXT, split TEXT, sha256 TEXT, width INT, height INT,
  orig_width INT, orig_height INT, license TEXT, attribution TEXT, caption TEXT,
  urls TEXT, page_urls TEXT, alt_texts TEXT, query_ids TEXT, entity_ids TEXT, evidence TEXT,
  jpg_offset INT, jpg_size INT, json_offset INT, json_size INT, backends TEXT);
CREATE TABLE sample_entities (entity_id TEXT, pos INT, key TEXT);
CREATE TABLE sample_queries (key TEXT, query_id TEXT);
CREATE TABLE entities (
  id TEXT PRIMARY KEY, name TEXT, aliases TEXT, description TEXT, root TEXT, parents TEXT,
  wordnet TEXT, wordnet_name TEXT, wikidata TEXT, taxon_name TEXT, common_names TEXT, depth INT,
  type_id TEXT, type_name TEXT, pictures INT DEFAULT 0);
CREATE TABLE queries (query_id TEXT PRIMARY KEY, kind TEXT, text TEXT, entity_id TEXT,
  attribute TEXT, decision TEXT, hits INT DEFAULT 0);
CREATE TABLE attributes (entity_id TEXT, category TEXT, attribute TEXT, query TEXT, method TEXT);
CREATE TABLE rejected (stage TEXT, reason TEXT, item TEXT, detail TEXT,
  part TEXT, sha256 TEXT, jpg_offset INT, jpg_size INT);
CREATE TABLE copies (url TEXT PRIMARY KEY, orig_width INT, orig_height INT, source_bytes INT,
  pixel_sha256 TEXT, phash INT);
CREATE TABLE info (name TEXT PRIMARY KEY, value TEXT);
"""

INDEXES = """
CREATE INDEX sample_entities_entity ON sample_entities (entity_id, key);
CREATE INDEX sample_entities_key ON sample_entities (key);
CREATE INDEX sample_queries_key ON sample_queries (key);
CREATE INDEX samples_license ON samples (license);
CREATE INDEX entities_type ON entities (type_id);
CREATE INDEX entities_name ON entities (name COLLATE NOCASE);
CREATE INDEX queries_entity ON queries (entity_id);
CREATE INDEX attributes_entity ON attributes (entity_id);
CREATE INDEX rejected_reason ON rejected (stage, reason);
CREATE VIRTUAL TABLE search USING fts5 (kind UNINDEXED, ref UNINDEXED, text);
"""


SUMMARIES = """
CREATE TABLE summary_splits AS SELECT split, count(*) n FROM samples GROUP BY split ORDER BY n DESC;
CREATE TABLE summary_licences AS SELECT license, count(*) n FROM samples GROUP BY license ORDER BY n DESC;
CREATE TABLE summary_rejections AS
  SELECT stage, reason, count(*) n FROM rejected GROUP BY stage, reason ORDER BY n DESC;
CREATE TABLE summary_backends AS SELECT DISTINCT backends FROM samples;
CREATE TABLE summary_types AS SELECT root, type_id, type_name, count(*) entities, sum(pictures) pictures
  FROM entities WHERE pictures > 0 GROUP BY root, type_id;
"""  # whole-table counts, made once with the index so that no page scans a whole table for them


class ViewError(RuntimeError):
    """The work directory lacks what the viewer needs (no samples.parquet: no harvest yet)."""


def index_path(workdir: Path) -> Path:
    samples = workdir / "samples.parquet"
    if not samples.is_file():
        raise ViewError(f"{workdir} has no samples.parquet; run `kgclip harvest` first")
    return workdir / CACHE_DIR / f"index-v{INDEX_VERSION}-{file_digest(samples)}.sqlite"


def open_index(workdir: Path) -> Path:
    """The index for the work directory as it is now, built first when missing (older ones removed)."""
    path = index_path(workdir)
    if not path.is_file():
        print(f"view: indexing {workdir} once (a minute per million samples)", flush=True)
        started = time.monotonic()
        build(workdir, path)
        print(f"view: index built in {time.monotonic() - started:.1f}s at {path}")
        for old in path.parent.glob("index-v*.sqlite"):
            if old != path:
                old.unlink()
    return path


def _rows(path: Path, columns: list[str] | None = None) -> Iterator[dict]:
    if not path.is_file():
        return
    pf = pq.ParquetFile(path)
    names = [c for c in (columns or pf.schema_arrow.names) if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=BATCH, columns=names):
        yield from batch.to_pylist()


def _json(value) -> str:
    return orjson.dumps(value if value is not None else []).decode()


def member_offsets(shard: Path) -> dict[str, tuple[int, int]]:
    """Each member's data offset and size in a shard, reading only the tar headers: plain ustar
    headers are parsed here (tarfile's parser is ten times slower); anything else (long names, PAX
    headers, base-256 sizes) is left to tarfile."""
    out = {}
    with open(shard, "rb") as fh:
        pos = 0
        while True:
            fh.seek(pos)
            header = fh.read(512)
            if len(header) < 512 or header == bytes(512):
                return out
            kind = header[156:157]
            if kind not in (b"0", b"\0") or header[124] & 0x80:
                return _tarfile_offsets(shard)
            name = header[:100].split(b"\0", 1)[0]
            prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
            if prefix:
                name = prefix + b"/" + name
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            out[name.decode("utf-8", "surrogateescape")] = (pos + 512, size)
            pos += 512 + -(-size // 512) * 512


def _tarfile_offsets(shard: Path) -> dict[str, tuple[int, int]]:
    out = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if member.isfile():
                out[member.name] = (member.offset_data, member.size)
    return out


def build(workdir: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        _load_samples(db, workdir)
        _load_copies(db, workdir)
        _load_entities(db, workdir)
        _load_queries(db, workdir)
        db.executemany(
            "INSERT INTO attributes VALUES (?,?,?,?,?)",
            (
                (r["entity_id"], r.get("category"), r.get("attribute"), r.get("query"), r.get("method"))
                for r in _rows(workdir / "attributes.parquet")
            ),
        )
        for table in [workdir / "rejected.parquet", *sorted((workdir / "rejects").glob("*.parquet"))]:
            db.executemany(
                "INSERT INTO rejected (stage, reason, item, detail) VALUES (?,?,?,?)",
                ((r["stage"], r["reason"], r["item"], r.get("detail")) for r in _rows(table)),
            )
        _locate_rejected_pictures(db, workdir)
        db.executescript(INDEXES)
        db.execute(
            "UPDATE entities SET pictures = (SELECT count(*) FROM sample_entities s WHERE s.entity_id = id)"
        )
        db.execute(
            "INSERT INTO search SELECT 'entity', id, name || coalesce(' · ' || "
            "(SELECT group_concat(value, ' · ') FROM json_each(entities.aliases)), '') "
            "FROM entities WHERE pictures > 0"
        )
        db.execute(  # the caption, then the alt texts that differ from it
            "INSERT INTO search SELECT 'sample', key, coalesce(caption, '') || coalesce(' · ' || "
            "(SELECT group_concat(value, ' · ') FROM json_each(samples.alt_texts) "
            "WHERE value IS NOT samples.caption), '') FROM samples"
        )
        db.execute("INSERT INTO search SELECT 'query', query_id, text FROM queries WHERE hits > 0")
        db.executescript(SUMMARIES)
        db.commit()
    finally:
        db.close()
    os.replace(tmp, path)


def _load_copies(db: sqlite3.Connection, workdir: Path) -> None:
    """Every fetched picture's source size and hashes: what tells a sample's merged copies apart."""
    cols = ["url", "status", "orig_width", "orig_height", "source_bytes", "pixel_sha256", "phash"]
    db.executemany(
        "INSERT OR REPLACE INTO copies VALUES (?,?,?,?,?,?)",
        (
            tuple(r.get(c) for c in cols if c != "status")
            for r in _rows(workdir / "fetched.parquet", cols)
            if r["status"] == "ok"
        ),
    )


def _load_samples(db: sqlite3.Connection, workdir: Path) -> None:
    offsets: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    cols = [
        "key",
        "shard",
        "split",
        "sha256",
        "width",
        "height",
        "orig_width",
        "orig_height",
        "license",
        "attribution",
        "caption",
        "urls",
        "page_urls",
        "alt_texts",
        "query_ids",
        "entity_ids",
        "evidence",
    ]
    batch: list = []
    links: list = []
    found: list = []
    for r in _rows(workdir / "samples.parquet", cols):
        split = r.get("split") or "train"
        folder = SHARD_DIRS.get(split, "shards")
        if (folder, r["shard"]) not in offsets:
            if len(offsets) >= 4:  # samples come shard by shard (per split): keep a few shards' offsets
                del offsets[next(iter(offsets))]
            shard = workdir / folder / r["shard"]
            offsets[(folder, r["shard"])] = member_offsets(shard) if shard.is_file() else {}
        members = offsets[(folder, r["shard"])]
        jpg = members.get(f"{r['key']}.jpg", (None, None))
        meta = members.get(f"{r['key']}.json", (None, None))
        batch.append(
            (
                r["key"],
                r["shard"],
                split,
                r["sha256"],
                r["width"],
                r["height"],
                r["orig_width"],
                r["orig_height"],
                r["license"],
                r["attribution"],
                r["caption"],
                _json(r["urls"]),
                _json(r["page_urls"]),
                _json(r["alt_texts"]),
                _json(r["query_ids"]),
                _json(r["entity_ids"]),
                _json(r.get("evidence")),
                *jpg,
                *meta,
                _backends(r.get("evidence")),
            )
        )
        links.extend((e, i, r["key"]) for i, e in enumerate(r["entity_ids"] or []))
        found.extend((r["key"], q) for q in r["query_ids"] or [])
        if len(batch) >= BATCH:
            _flush_samples(db, batch, links, found)
    _flush_samples(db, batch, links, found)


def _backends(evidence: list[str] | None) -> str:
    """The search backends that found a sample, as ',a,b,' (so `LIKE '%,a,%'` finds one)."""
    names = set()
    for e in evidence or []:
        try:
            backend = orjson.loads(e).get("backend")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(backend, str):
            names.add(backend)
    return "," + ",".join(sorted(names)) + "," if names else ""


def _flush_samples(db: sqlite3.Connection, batch: list, links: list, found: list) -> None:
    db.executemany(f"INSERT INTO samples VALUES ({','.join('?' * 22)})", batch)
    db.executemany("INSERT INTO sample_entities VALUES (?,?,?)", links)
    db.executemany("INSERT INTO sample_queries VALUES (?,?)", found)
    batch.clear()
    links.clear()
    found.clear()


def _load_entities(db: sqlite3.Connection, workdir: Path) -> None:
    types = {r["entity_id"]: (r["type_id"], r["type_name"]) for r in _rows(workdir / "types.parquet")}
    db.executemany(
        "INSERT INTO entities (id, name, aliases, description, root, parents, wordnet, wordnet_name,"
        " wikidata, taxon_name, common_names, depth, type_id, type_name) "
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            (
                r["id"],
                r["name"],
                _json(r.get("aliases")),
                r.get("description"),
                r.get("root"),
                _json(r.get("parents")),
                r.get("wordnet"),
                r.get("wordnet_name"),
                r.get("wikidata"),
                r.get("taxon_name"),
                _json(r.get("common_names")),
                r.get("depth"),
                *types.get(r["id"], (None, None)),
            )
            for r in _rows(workdir / "entities.parquet")
        ),
    )


def _load_queries(db: sqlite3.Connection, workdir: Path) -> None:
    hits: dict[str, int] = {}
    for r in _rows(workdir / "hits.parquet", ["query_id"]):
        hits[r["query_id"]] = hits.get(r["query_id"], 0) + 1
    db.executemany(
        "INSERT INTO queries VALUES (?,?,?,?,?,?,?)",
        (
            (
                r["query_id"],
                r["kind"],
                r["text"],
                r.get("entity_id"),
                r.get("attribute"),
                r.get("decision"),
                hits.get(r["query_id"], 0),
            )
            for r in _rows(
                workdir / "queries.parquet",
                ["query_id", "kind", "text", "entity_id", "attribute", "decision"],
            )
        ),
    )


def _locate_rejected_pictures(db: sqlite3.Connection, workdir: Path) -> None:
    """Where the pixels of pictures curate dropped lie (they were fetched: their part and member)."""
    urls = {r[0] for r in db.execute("SELECT item FROM rejected WHERE stage = 'curate'")}
    if not urls:
        return
    by_part: dict[str, list[tuple[str, str, str]]] = {}
    for r in _rows(workdir / "fetched.parquet", ["url", "status", "part", "member", "pixel_sha256"]):
        if r["url"] in urls and r["status"] == "ok" and r["part"] and r["member"]:
            by_part.setdefault(r["part"], []).append((r["url"], r["member"], r["pixel_sha256"]))
    for part, rows in by_part.items():
        path = workdir / PARTS / part
        members = member_offsets(path) if path.is_file() else {}
        db.executemany(
            "UPDATE rejected SET part = ?, sha256 = ?, jpg_offset = ?, jpg_size = ? "
            "WHERE stage = 'curate' AND item = ?",
            (
                (part, sha, *members[f"{member}.jpg"], url)
                for url, member, sha in rows
                if f"{member}.jpg" in members
            ),
        )


def connect(path: Path) -> sqlite3.Connection:
    """A read-only connection (one per request thread)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    db.row_factory = sqlite3.Row
    return db
