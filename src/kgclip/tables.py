"""The table contracts between stages: one record type and one Arrow schema per table.

Stages exchange these records only through parquet files in the work directory, so the
schemas below are the project's public contracts: columns may be added, never renamed.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

STR = pa.string()
STRS = pa.list_(pa.string())
I64 = pa.int64()


@dataclass(frozen=True, slots=True)
class Entity:
    """A concept to harvest images for (a WordNet synset, later also a Wikidata item)."""

    id: str
    name: str
    aliases: list[str]
    description: str
    root: str
    parents: list[str]
    is_leaf: bool
    wordnet: str | None = None
    wordnet_name: str | None = None
    wikidata: str | None = None
    taxon_name: str | None = None
    common_names: list[str] = field(default_factory=list)
    popularity: int = 0
    depth: int = 0
    sources: list[str] = field(default_factory=list)
    image: str | None = None
    external_ids: dict[str, str] = field(default_factory=dict)
    kg_hints: dict[str, list[str]] = field(default_factory=dict)

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("id", STR),
            ("name", STR),
            ("aliases", STRS),
            ("description", STR),
            ("root", STR),
            ("parents", STRS),
            ("is_leaf", pa.bool_()),
            ("wordnet", STR),
            ("wordnet_name", STR),
            ("wikidata", STR),
            ("taxon_name", STR),
            ("common_names", STRS),
            ("popularity", I64),
            ("depth", pa.int32()),
            ("sources", STRS),
            ("image", STR),
            ("external_ids", pa.map_(pa.string(), pa.string())),
            ("kg_hints", pa.map_(pa.string(), STRS)),
        ]
    )


@dataclass(frozen=True, slots=True)
class EntityLink:
    """The merge's verdict on one Wikidata item: `linked` to a synset, or why it was kept apart."""

    wikidata_id: str
    status: str
    wordnet_id: str | None
    method: str | None
    score: float | None
    candidates: list[str]
    detail: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("wikidata_id", STR),
            ("status", STR),
            ("wordnet_id", STR),
            ("method", STR),
            ("score", pa.float64()),
            ("candidates", STRS),
            ("detail", STR),
        ]
    )


@dataclass(frozen=True, slots=True)
class NaturalType:
    """The superclass a person would name for an entity ("dog" for a golden retriever)."""

    entity_id: str
    type_id: str
    type_name: str
    type_aliases: list[str]
    type_description: str
    method: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("entity_id", STR),
            ("type_id", STR),
            ("type_name", STR),
            ("type_aliases", STRS),
            ("type_description", STR),
            ("method", STR),
        ]
    )


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    """Whether an entity stays in the harvest, and who decided (`llm:<model>`, `none`, `top_n`)."""

    entity_id: str
    keep: bool
    method: str
    reason: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [("entity_id", STR), ("keep", pa.bool_()), ("method", STR), ("reason", STR)]
    )


@dataclass(frozen=True, slots=True)
class Attribute:
    """A visual attribute of an entity with the image-search query that looks for it."""

    entity_id: str
    category: str
    attribute: str
    query: str
    method: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [("entity_id", STR), ("category", STR), ("attribute", STR), ("query", STR), ("method", STR)]
    )


QUERY_PARAMS = pa.struct([("or_terms", STRS), ("exclude_terms", STRS), ("photo_only", pa.bool_())])


@dataclass(frozen=True, slots=True)
class QueryParams:
    """Search-engine parameters; each backend maps the ones it supports and ignores the rest."""

    or_terms: list[str] = field(default_factory=list)
    exclude_terms: list[str] = field(default_factory=list)
    photo_only: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """One image-search query. `kind` is entity, entity_attribute or type_attribute.

    `ambiguity` says whether the string also names something else (none, out_of_domain,
    in_domain, both), `senses` lists those other senses, and `decision` what was done about it
    (unambiguous, qualified, kept, ...); `original_text` is the string before a qualifier was added.
    """

    query_id: str
    kind: str
    text: str
    entity_id: str | None
    attribute: str | None
    params: QueryParams
    original_text: str | None = None
    ambiguity: str = "none"
    decision: str = "unambiguous"
    senses: list[str] = field(default_factory=list)

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("query_id", STR),
            ("kind", STR),
            ("text", STR),
            ("entity_id", STR),
            ("attribute", STR),
            ("params", QUERY_PARAMS),
            ("original_text", STR),
            ("ambiguity", STR),
            ("decision", STR),
            ("senses", STRS),
        ]
    )


@dataclass(frozen=True, slots=True)
class Hit:
    """One image a backend returned for a query."""

    query_id: str
    backend: str
    rank: int
    url: str
    page_url: str | None
    alt_text: str
    width: int | None
    height: int | None
    license: str | None
    attribution: str | None
    # What matched, as compact JSON {"field": "caption"|"category", "words": [...], "subject": bool}
    # (the local corpus); None from web backends, which cannot say.
    evidence: str | None = None

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("query_id", STR),
            ("backend", STR),
            ("rank", pa.int32()),
            ("url", STR),
            ("page_url", STR),
            ("alt_text", STR),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("license", STR),
            ("attribution", STR),
            ("evidence", STR),
        ]
    )


@dataclass(frozen=True, slots=True)
class Fetched:
    """The outcome of fetching one URL: `status` is ok, rejected (then `reason` says why) or failed
    (a transient failure that the next run retries).

    `source_bytes` is the size of what was downloaded or read; `download_s` covers the whole
    request including redirects, retries and waits for the host's turn; `decode_s` is the
    worker's validation, resize and encode time.
    """

    url: str
    status: str
    reason: str | None
    detail: str | None
    part: str | None
    member: str | None
    orig_width: int | None
    orig_height: int | None
    width: int | None
    height: int | None
    bytes: int | None
    source_sha256: str | None
    pixel_sha256: str | None
    source_bytes: int | None = None
    http_status: int | None = None
    attempts: int | None = None
    download_s: float | None = None
    decode_s: float | None = None
    phash: int | None = None  # 63-bit perceptual hash of the stored image (curate/phash.py)
    colour: int | None = None  # its mean colour, 0xRRGGBB
    runs: int | None = None  # runs in which it failed for a transient reason (given up after a few)

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("url", STR),
            ("status", STR),
            ("reason", STR),
            ("detail", STR),
            ("part", STR),
            ("member", STR),
            ("orig_width", pa.int32()),
            ("orig_height", pa.int32()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("bytes", I64),
            ("source_sha256", STR),
            ("pixel_sha256", STR),
            ("source_bytes", I64),
            ("http_status", pa.int16()),
            ("attempts", pa.int16()),
            ("download_s", pa.float32()),
            ("decode_s", pa.float32()),
            ("phash", I64),
            ("colour", I64),
            ("runs", pa.int16()),
        ]
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """One final image in the shards, with everything that was merged into it."""

    key: str
    shard: str
    sha256: str
    width: int
    height: int
    orig_width: int
    orig_height: int
    urls: list[str]
    page_urls: list[str]
    alt_texts: list[str]
    query_ids: list[str]
    entity_ids: list[str]
    license: str | None
    attribution: str | None
    caption: str
    phash: int | None = None  # of the kept picture; the near-duplicate and decontamination key
    split: str = "train"  # "train": in shards/; "val": held out in val/ (curate.val_fraction)
    # Why each query links this picture: per query with evidence, compact JSON {"query_id",
    # "entity_id", "backend", "field", "words", "subject"} (Hit.evidence); web hits have none.
    evidence: list[str] = field(default_factory=list)

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("key", STR),
            ("shard", STR),
            ("sha256", STR),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("orig_width", pa.int32()),
            ("orig_height", pa.int32()),
            ("urls", STRS),
            ("page_urls", STRS),
            ("alt_texts", STRS),
            ("query_ids", STRS),
            ("entity_ids", STRS),
            ("license", STR),
            ("attribution", STR),
            ("caption", STR),
            ("phash", I64),
            ("split", STR),
            ("evidence", STRS),
        ]
    )


@dataclass(frozen=True, slots=True)
class Rejected:
    """Something a stage dropped (an entity, a query, an image), with the reason it was dropped."""

    stage: str
    item: str
    reason: str
    detail: str = ""

    SCHEMA: ClassVar[pa.Schema] = pa.schema([("stage", STR), ("item", STR), ("reason", STR), ("detail", STR)])


R = TypeVar("R")


def to_table(records: Iterable[Any], cls: type) -> pa.Table:
    """Records of one type to an Arrow table with that type's schema."""
    rows = [_as_row(r) for r in records]
    return pa.Table.from_pylist(rows, schema=cls.SCHEMA)


def _as_row(record: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _as_row(value)
    return value


def write_records(path: Path, records: Iterable[Any], cls: type) -> int:
    """Atomically write records as parquet; returns the row count."""
    from kgclip.workdir import atomic_path

    table = to_table(records, cls)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return table.num_rows


def read_records(path: Path, cls: type[R]) -> Iterator[R]:
    """Parquet rows back into records; nested structs become their record types again.

    A column added since the file was written (one with a default) takes its default, so a table
    from an earlier version stays readable: columns are added, never renamed."""
    table = pq.read_table(path)
    hints = typing.get_type_hints(cls)
    names = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in table.column_names
        or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    ]
    nested = {
        name: hint
        for name, hint in hints.items()
        if dataclasses.is_dataclass(hint) and name != "SCHEMA" and name in names
    }
    maps = [name for name, hint in hints.items() if typing.get_origin(hint) is dict and name in names]
    for row in table.select(names).to_pylist():
        for name, sub in nested.items():
            row[name] = sub(**row[name])
        for name in maps:
            row[name] = dict(row[name] or ())
        yield cls(**row)


# ---------------------------------------------------------------- streaming (issue 17)

ROWS_PER_GROUP = 8192  # rows a streaming writer holds before it writes them as a row group (~1-8 MB)


def rows_table(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Tuples in the schema's column order to an Arrow table, column by column."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)], schema=schema
    )


class GroupWriter:
    """A parquet file written row group by row group as rows arrive, atomically: readers see the
    previous file (or none) until `close`, and a process killed while writing leaves only a
    temporary file (`.<name>.tmp-<pid>...`), never a partial table. Memory holds one row group.

        with GroupWriter(path, Hit.SCHEMA) as out:
            out.add(row)  # a tuple in the schema's column order
            out.add_records(hits)  # flat records of the schema
            out.add_table(table)  # rows already in table form (`to_table`)

    Each row group is written as `write_records` writes a whole table (same schema, compression
    and encodings, one chunk), so a file of at most `rows_per_group` rows is byte-identical to
    `write_records` of the same rows, and a larger one holds the same rows in row groups of
    `rows_per_group`. No rows make an empty table, as `write_records` writes it.
    """

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int = ROWS_PER_GROUP) -> None:
        from kgclip.workdir import atomic_path

        self.path, self.schema, self.rows_per_group = path, schema, rows_per_group
        self.rows = 0
        self._pending: list[tuple[Any, ...]] = []
        self._tables: list[pa.Table] = []
        self._waiting = 0  # rows in `_tables`
        self._atomic = atomic_path(path)
        self._tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    def add(self, row: tuple[Any, ...]) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.rows_per_group:
            self._take_pending()

    def add_records(self, records: Iterable[Any]) -> None:
        names = self.schema.names
        for record in records:
            self.add(tuple(getattr(record, n) for n in names))

    def add_table(self, table: pa.Table) -> None:
        self._take_pending()
        self._append(table)

    def _take_pending(self) -> None:
        if self._pending:
            rows, self._pending = self._pending, []
            self._append(rows_table(rows, self.schema))

    def _append(self, table: pa.Table) -> None:
        if table.num_rows:
            self._tables.append(table)
            self._waiting += table.num_rows
            self.rows += table.num_rows
        while self._waiting >= self.rows_per_group:
            self._write(self.rows_per_group)

    def _write(self, rows: int) -> None:
        pending = pa.concat_tables(self._tables) if self._tables else self.schema.empty_table()
        # one chunk, as write_records has it: list columns written from several chunks page differently
        self._writer.write_table(pending.slice(0, rows).combine_chunks())
        rest = pending.slice(rows)
        self._tables = [rest] if rest.num_rows else []
        self._waiting = rest.num_rows

    def close(self) -> int:
        """Write what is left and put the file in place; returns the row count."""
        self._take_pending()
        if self._waiting or self.rows == 0:
            self._write(self._waiting)
        self._writer.close()
        self._atomic.__exit__(None, None, None)
        return self.rows

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the temporary file; the previous file (if any) stays."""
        self._writer.close()
        err = exc or RuntimeError("aborted")
        self._atomic.__exit__(type(err), err, err.__traceback__)

    def __enter__(self) -> GroupWriter:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


def iter_batches(
    path: Path, columns: list[str] | None = None, rows: int = ROWS_PER_GROUP
) -> Iterator[pa.RecordBatch]:
    """A parquet file's rows in record batches of at most `rows`, without reading it whole."""
    file = pq.ParquetFile(path)
    try:
        yield from file.iter_batches(batch_size=rows, columns=columns)
    finally:
        file.close()


TABLE_ROWS_PER_GROUP = 65_536  # row groups of curate's samples and rejected tables
