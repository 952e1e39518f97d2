"""Curate's grouping on compact arrays: which fetched copies and hits make up each sample.

The object path (`group_duplicates` in tests/curate_reference.py, a `Group` of records per picture)
holds every row of fetched.parquet and hits.parquet as Python objects, 3-5 KiB per picture. Here
the grouping reads one column at a time, when its step comes (the copies' URLs, then the hits'
URLs in slices, then the copies' pixel hashes, ...), and works on integers and row numbers:

- URLs become dense ranks (one Arrow sort of the copies' URLs; a hit's URL is looked up among the
  distinct ones, a slice of hits at a time) and pixel hashes compact bytes, so every sort is a
  stable numpy sort of integer keys with the table position last, as the object path's sorts are;
- exact copies: the ok rows sorted by (pixel hash, URL); a change of pixel hash starts a group, so
  the groups come out in pixel-hash order with their copies by URL, as `group_duplicates` orders them;
- hits: each goes to the group of its URL (a URL stored twice goes where the object path's URL map
  puts it), sorted by (group, query, rank, URL);
- near copies: the kept copy's perceptual hash per exact group goes through the multi-index search
  (curate/hashindex.py), components by minimum-label propagation; a component keeps the largest
  picture (`dedup._combine`), and only for components of several pictures with a licence filter
  are the members' rows read back and their `Group` records built to ask whose licence passes.

The result, a `Plan`, is per picture the row numbers of its copies and hits, the offsets of each
group's slice of them and the kept pixel hash (about 110 bytes a picture). `Plan.spill` then reads
the two tables once more with every column a sample needs and writes each row into the bucket file
of its group (consecutive groups, in order);
`Plan.windows` reads one bucket at a time and builds the `Group` records of a window of groups. So
the rows of a harvest are Python objects only a window at a time.

The order is total and the same as the object path's in every case, so the samples, shards and
tables are byte-identical (tests/test_curate_plan.py compares the groups, tests/test_curate_frozen.py
the outputs). docs/stages/curate.md says how a Ray run would partition this.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kgclip.curate.dedup import Group
from kgclip.curate.hashindex import BlockMap, HashIndex
from kgclip.curate.memory import release
from kgclip.progress import console
from kgclip.tables import Fetched, Hit

BATCH = 65_536  # rows read at once
HIT_PASSES = 8  # slices in which the hits' URLs are looked up among the copies' (`_hit_urls`)
WINDOW = 1024  # groups built as records at once
GROUPS_PER_BUCKET = 32_768  # groups whose rows are spilled to one pair of bucket files ...
MAX_BUCKETS = 400  # ... unless that makes more buckets than this (each is an open file while spilling)
# The records built to ask whether a merged picture's licence passes; the grouping itself reads a
# column at a time, and a sample's columns are read once more, in `Plan.spill`.
PLAN_COPY_COLUMNS = ("url", "pixel_sha256", "width", "height", "phash", "colour")
PLAN_HIT_COLUMNS = ("query_id", "rank", "url", "license")
COPY_COLUMNS = (
    "url",
    "pixel_sha256",
    "part",
    "member",
    "orig_width",
    "orig_height",
    "width",
    "height",
    "phash",
    "colour",
)
HIT_COLUMNS = tuple(c for c in Hit.SCHEMA.names if c not in ("width", "height"))  # curate reads no hit size
SPILL_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")  # the spill folder's Arrow streams


def open_table(path: Path) -> pq.ParquetFile:
    """A parquet file read a page at a time: a harvest's tables are one row group of up to a
    million rows, which Arrow otherwise loads whole (compressed and decoded) to read any batch."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)


def _batches(path: Path, columns: Sequence[str], schema: pa.Schema) -> Iterator[pa.Table]:
    """The file's rows a batch at a time, in these columns (those added since it was written null)."""
    file = open_table(path)
    present = [c for c in columns if c in file.schema_arrow.names]
    for batch in file.iter_batches(batch_size=BATCH, columns=present):
        yield _complete(pa.Table.from_batches([batch]), schema, columns)


def _ok(batch: pa.Table) -> np.ndarray:
    """The fetched rows the grouping takes: status ok, with a pixel hash."""
    keep = pc.and_(pc.equal(batch.column("status"), "ok"), pc.is_valid(batch.column("pixel_sha256")))
    return pc.fill_null(keep, False).to_numpy(zero_copy_only=False)


def _ok_parts(path: Path, name: str, rows: np.ndarray) -> Iterator[pa.ChunkedArray]:
    """One column of fetched.parquet, a batch at a time, only at the ok rows (`_ok_rows`): the
    status and pixel-hash columns are read once, not again for every column."""
    keep = np.zeros(open_table(path).metadata.num_rows, dtype=bool)
    keep[rows] = True
    offset = 0
    for batch in _batches(path, [name], Fetched.SCHEMA):
        yield batch.column(name).filter(pa.array(keep[offset : offset + batch.num_rows]))
        offset += batch.num_rows


def _ok_column(path: Path, name: str, rows: np.ndarray) -> pa.ChunkedArray:
    """One column of the ok rows of fetched.parquet, in file order."""
    chunks = [c for part in _ok_parts(path, name, rows) for c in part.chunks]
    return pa.chunked_array(chunks, Fetched.SCHEMA.field(name).type)


def _ok_rows(path: Path) -> np.ndarray:
    """The ok rows' numbers in fetched.parquet: all the plan keeps of a copy until the spill."""
    rows, offset = [], 0
    for batch in _batches(path, ["status", "pixel_sha256"], Fetched.SCHEMA):
        rows.append(np.flatnonzero(_ok(batch)) + offset)
        offset += batch.num_rows
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


def _url_ranks(fetched: Path, rows: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """Each ok copy's URL rank among the distinct ones (code point order; equal URLs, equal rank),
    and the distinct URLs in that order. The sorted URLs are compared a batch at a time, and all
    the URLs go once the distinct ones are copied out."""
    urls = _ok_column(fetched, "url", rows)
    n = len(urls)
    if n == 0:
        return np.zeros(0, dtype=np.int64), pa.array([], pa.string())
    by_url = pc.sort_indices(urls).to_numpy().view(np.int64)  # stable: equal URLs in table order
    first = np.ones(n, dtype=bool)
    for lo in range(1, n, BATCH):
        part = urls.take(by_url[lo - 1 : min(n, lo + BATCH)])
        first[lo : lo + len(part) - 1] = pc.not_equal(part.slice(1), part.slice(0, len(part) - 1)).to_numpy(
            zero_copy_only=False
        )
    distinct = urls.take(by_url[first]).combine_chunks()
    del urls
    rank = np.empty(n, dtype=np.int64)
    rank[by_url] = np.cumsum(first) - 1
    return rank, distinct


def _hit_urls(path: Path, distinct: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The hits whose URL was fetched (their row numbers) and each one's URL rank. The hits' URLs
    are looked up in HIT_PASSES slices, not all at once (memory) and not a batch at a time: each
    lookup hashes every distinct URL again, which a batch at a time would do once per 65,536 hits
    (a time growing as the square of the pictures)."""
    rows = open_table(path).metadata.num_rows
    per_pass = max(BATCH, -(-rows // HIT_PASSES))
    index, ranks, offset = [], [], 0
    batches = _batches(path, ["url"], Hit.SCHEMA)
    while offset < rows:
        urls, taken = [], 0
        for batch in batches:
            urls.extend(batch.column("url").chunks)
            taken += batch.num_rows
            if taken >= per_pass:
                break
        if not taken:
            break
        found = pc.index_in(pa.chunked_array(urls, pa.string()), value_set=distinct)
        del urls
        mapped = pc.is_valid(found).to_numpy(zero_copy_only=False)
        index.append(np.flatnonzero(mapped) + offset)
        ranks.append(pc.fill_null(found, 0).to_numpy(zero_copy_only=False)[mapped].astype(np.int64))
        offset += taken
    if not index:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(index), np.concatenate(ranks)


def _query_codes(path: Path) -> tuple[np.ndarray, list[str]]:
    """Every hit's query id as a code (-1 for none) and the ids by code (first seen first); the ids
    are few (a query per entity and attribute), the hits many."""
    ids: dict[str, int] = {}
    codes = []
    for batch in _batches(path, ["query_id"], Hit.SCHEMA):
        column = batch.column("query_id").combine_chunks()
        column = column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column
        encoded = pc.dictionary_encode(column)
        local = np.array([ids.setdefault(v, len(ids)) for v in encoded.dictionary.to_pylist()] + [-1],
                         dtype=np.int64)
        codes.append(local[pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)])
    return (np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)), list(ids)


def _take_rows(path: Path, rows: np.ndarray, columns: Sequence[str], schema: pa.Schema) -> pa.Table:
    """Some rows of a file, by number, in the order asked."""
    want = np.unique(rows)
    chunks, offset = [], 0
    for batch in _batches(path, columns, schema):
        lo, hi = np.searchsorted(want, [offset, offset + batch.num_rows])
        if hi > lo:
            chunks.append(batch.take(want[lo:hi] - offset))
        offset += batch.num_rows
    table = pa.concat_tables(chunks) if chunks else _empty(schema, columns)
    return table.take(np.searchsorted(want, rows))


def _empty(schema: pa.Schema, names: Sequence[str]) -> pa.Table:
    return pa.schema([schema.field(n) for n in names]).empty_table()


def _complete(table: pa.Table, schema: pa.Schema, names: Sequence[str]) -> pa.Table:
    """Columns added since the file was written are null (their record default is None)."""
    for name in names:
        if name not in table.column_names:
            table = table.append_column(schema.field(name), pa.nulls(table.num_rows, schema.field(name).type))
    return table.select(list(names))


@dataclass
class Plan:
    """Samples-to-be in pixel-hash order: group f has the copies `copy_rows[copy_start[f]:
    copy_start[f + 1]]` (their rows in fetched.parquet, the kept picture's first) and likewise its
    hits' rows in hits.parquet. The grouping's tables are gone by then: per picture the plan holds
    only these integers, the kept pixel hash, and (until taken) each copy's perceptual hash and each
    hit's query. `spill` writes every row a sample needs into bucket files by group, after which
    `windows` builds the `Group` records of any groups, in order, a bucket at a time."""

    copy_rows: np.ndarray | None  # None once spilled
    copy_start: np.ndarray
    hit_rows: np.ndarray | None
    hit_start: np.ndarray
    near: np.ndarray  # distinct near-duplicate pictures merged into each group
    accepted: tuple[str, ...]
    kept_sha: np.ndarray  # per group: 32 bytes a row (`_packed`), or the hashes as they came
    phashes: tuple[np.ndarray, np.ndarray] | None = None  # per copy: hash, whether it has one
    queries: tuple[np.ndarray, list[str]] | None = None  # per hit: its query id's code; ids by code
    folder: Path | None = None
    per_bucket: int = GROUPS_PER_BUCKET

    def __len__(self) -> int:
        return len(self.copy_start) - 1

    def sha(self, chosen: np.ndarray) -> list[str]:
        """The kept pixels' hash of each chosen group."""
        found = self.kept_sha[np.asarray(chosen, dtype=np.int64)]
        if found.ndim == 2:  # packed (`_packed`)
            text = found.tobytes().hex()
            return [text[k : k + 64] for k in range(0, len(text), 64)]
        return [h.decode() if isinstance(h, bytes) else h for h in found.tolist()]

    def copy_phashes(self) -> tuple[np.ndarray, np.ndarray]:
        """Every copy's perceptual hash in plan order, and whether it has one; taken once (their
        memory goes with them)."""
        assert self.phashes is not None, "taken"
        found, self.phashes = self.phashes, None
        return found

    def query_pairs(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Per hit in plan order, its group and the code of its query id, and the ids by code;
        taken once."""
        assert self.queries is not None, "taken"
        (codes, ids), self.queries = self.queries, None
        owner = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.hit_start))
        return owner, codes, ids

    def spill(self, fetched: Path, hits: Path, folder: Path, per_bucket: int = 0) -> None:
        """Read the two tables once more, every column a sample needs, and write each row into
        the bucket file of its group (`per_bucket` consecutive groups a bucket), with its position
        in plan order; the row numbers go. Memory: a batch of rows."""
        assert self.copy_rows is not None and self.hit_rows is not None, "spilled twice"
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.per_bucket = per_bucket or max(GROUPS_PER_BUCKET, -(-len(self) // MAX_BUCKETS))
        copy_rows, self.copy_rows = self.copy_rows, None
        self._spill(fetched, copy_rows, self.copy_start, "copies", Fetched.SCHEMA, COPY_COLUMNS)
        del copy_rows
        hit_rows, self.hit_rows = self.hit_rows, None
        self._spill(hits, hit_rows, self.hit_start, "hits", Hit.SCHEMA, HIT_COLUMNS)
        release()

    def _spill(
        self, path: Path, rows: np.ndarray, start: np.ndarray, name: str, schema: pa.Schema,
        columns: Sequence[str],
    ) -> None:
        assert self.folder is not None
        file = open_table(path)
        position = np.full(file.metadata.num_rows, -1, dtype=_index(len(rows)))
        position[rows] = np.arange(len(rows))
        owner = np.repeat(np.arange(len(self), dtype=_index(len(self))), np.diff(start))
        present = [c for c in columns if c in file.schema_arrow.names]
        writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        sinks: list[pa.NativeFile] = []
        offset = 0
        try:
            for batch in file.iter_batches(batch_size=BATCH, columns=present):
                where = position[offset : offset + batch.num_rows]
                offset += batch.num_rows
                taken = np.flatnonzero(where >= 0)
                if len(taken) == 0:
                    continue
                bucket = owner[where[taken]] // self.per_bucket
                order = np.argsort(bucket, kind="stable")
                taken, bucket = taken[order], bucket[order]
                table = _complete(pa.Table.from_batches([batch]).take(taken), schema, columns)
                table = table.append_column("pos", pa.array(where[taken]))
                cuts = np.flatnonzero(np.diff(bucket)) + 1
                for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(bucket)], strict=True):
                    k = int(bucket[lo])
                    if k not in writers:
                        sink = pa.OSFile(str(self.folder / f"{name}-{k:05d}.arrow"), "wb")
                        sinks.append(sink)
                        writers[k] = pa.ipc.new_stream(
                            sink, table.schema, options=SPILL_OPTIONS
                        )
                    writers[k].write_table(table.slice(lo, hi - lo))
        finally:
            for writer in writers.values():
                writer.close()
            for sink in sinks:
                sink.close()

    def _bucket(self, name: str, k: int, schema: pa.Schema, columns: Sequence[str]) -> pa.Table:
        """Bucket k's rows of one table, in plan order."""
        assert self.folder is not None, "not spilled"
        path = self.folder / f"{name}-{k:05d}.arrow"
        if not path.is_file():
            return pa.schema([schema.field(c) for c in columns]).empty_table()
        with pa.OSFile(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
        order = np.argsort(table.column("pos").to_numpy(), kind="stable")
        return table.drop_columns("pos").take(order)

    def windows(
        self, chosen: Iterable[int], window: int = WINDOW
    ) -> Iterator[tuple[np.ndarray, list[Group]]]:
        """The `Group` records of the chosen groups (ascending), `window` at a time, with their
        indices."""
        chosen = np.asarray(chosen, dtype=np.int64)
        if len(chosen) == 0:
            return
        buckets = chosen // self.per_bucket
        cuts = np.flatnonzero(np.diff(buckets)) + 1
        for part in np.split(chosen, cuts):
            k = int(part[0] // self.per_bucket)
            first = k * self.per_bucket
            copies = self._bucket("copies", k, Fetched.SCHEMA, COPY_COLUMNS)
            hits = self._bucket("hits", k, Hit.SCHEMA, HIT_COLUMNS)
            for lo in range(0, len(part), window):
                some = part[lo : lo + window]
                copy_rows = _slices(copies, self.copy_start, some, first)
                hit_rows = _slices(hits, self.hit_start, some, first)
                yield some, [
                    _group(c, h, int(self.near[f]), self.accepted)
                    for f, c, h in zip(some.tolist(), copy_rows, hit_rows, strict=True)
                ]
            del copies, hits
            release()


def _index(n: int) -> type[np.integer]:
    """The narrowest of int32 and int64 that numbers n things (and -1 for none)."""
    return np.int32 if n < 2**31 - 1 else np.int64


def _slices(table: pa.Table, start: np.ndarray, chosen: np.ndarray, first: int) -> list[list[dict]]:
    """The rows of each chosen group, from a bucket table that begins with group `first`."""
    lo = start[chosen] - start[first]
    lengths = start[chosen + 1] - start[chosen]
    total = int(lengths.sum())
    index = np.repeat(lo, lengths) + np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = table.take(index).to_pylist()
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    return [rows[bounds[n] : bounds[n + 1]] for n in range(len(chosen))]


_NO_FETCH = dict.fromkeys(Fetched.SCHEMA.names)
_NO_HIT = dict.fromkeys(Hit.SCHEMA.names)


def _group(copies: list[dict], hits: list[dict], near: int, accepted: tuple[str, ...]) -> Group:
    kept = [Fetched(**{**_NO_FETCH, **row, "status": "ok"}) for row in copies]
    return Group(
        kept[0].pixel_sha256 or "",
        kept,
        [Hit(**{**_NO_HIT, **row}) for row in hits],
        near=near,
        accepted=accepted,
    )


def _ok_hashes(path: Path, rows: np.ndarray) -> np.ndarray:
    """The ok copies' pixel hashes as `_fixed` makes them, filled in a batch at a time: the whole
    column as Arrow text, its combined copy and the fixed-width copy were never held together (at a
    million pictures, one of the grouping's peaks). Hashes of several lengths go `_fixed`'s way."""
    out, at = None, 0
    for column in _ok_parts(path, "pixel_sha256", rows):
        part = _fixed(column)
        if len(part) == 0:
            continue
        if part.dtype == object or (out is not None and part.dtype != out.dtype):
            return _fixed(_ok_column(path, "pixel_sha256", rows))
        if out is None:
            out = np.empty(len(rows), dtype=part.dtype)
        out[at : at + len(part)] = part
        at += len(part)
    return out if out is not None else _fixed(_ok_column(path, "pixel_sha256", rows))


def _fixed(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Strings as a compact numpy array: fixed-width bytes when all have one length (pixel hashes)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    lengths = pc.binary_length(array)
    width = pc.min_max(lengths)
    if len(array) and array.null_count == 0 and width["min"].as_py() == width["max"].as_py() > 0:
        size = width["min"].as_py()
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
        offsets = offsets[array.offset : array.offset + len(array) + 1]
        data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        return data.view(f"S{size}").copy()
    return np.array(array.to_pylist(), dtype=object)


def plan(
    fetched: Path,
    hits: Path,
    near_distance: int = 0,
    near_colour: int = 255,
    accepted: Sequence[str] = (),
    blocks: BlockMap | None = None,
) -> Plan:
    """The groups of the reference `group_duplicates(fetched, hits, ...)`, as a `Plan` (module
    docstring). `blocks` runs the near-duplicate search's blocks (HashIndex.search). The tables are
    read a column at a time, each when its step comes: the URLs, the pixel hashes and the hits'
    URLs are never all held at once, and the plan keeps none of them."""
    accepted = tuple(accepted)
    rows = _ok_rows(fetched)
    n = len(rows)
    # URLs as dense ranks (equal URLs, equal rank) and pixel hashes as compact bytes: every sort
    # below is then a numpy lexsort of integers, the table position last (a stable order)
    url_rank, distinct_urls = _url_ranks(fetched, rows)
    hit_index, hit_url = _hit_urls(hits, distinct_urls)  # the hits' rows, their URLs' ranks
    del distinct_urls  # the last URL text the grouping holds
    position_by_url = np.empty(n, dtype=np.int64)
    position_by_url[np.argsort(url_rank, kind="stable")] = np.arange(n)
    sha = _ok_hashes(fetched, rows)
    by_sha, new = _by_sha(sha, url_rank)
    exact_of = np.cumsum(new) - 1  # exact group of each copy, in by_sha order
    exact_start = np.append(np.flatnonzero(new), n).astype(np.int64)
    exact = len(exact_start) - 1
    exact_sha = _packed(sha, by_sha[exact_start[:-1]])
    del sha, new

    # hit -> the exact group of its URL. A URL stored twice (in two groups) goes, as the object
    # path's URL map has it, to the group inserted last, groups being inserted in URL order
    inserted = np.full(exact, n, dtype=np.int64)
    np.minimum.at(inserted, exact_of, position_by_url[by_sha])
    del position_by_url
    url_of = url_rank[by_sha]
    del url_rank
    # by (URL, inserted last first, position) as one key: a stable argsort needs no position key
    lookup = url_of * (n + 1)
    lookup += n - inserted[exact_of]
    lookup = np.argsort(lookup, kind="stable")
    ordered = url_of[lookup]
    firsts = lookup[np.flatnonzero(np.concatenate([[n > 0], ordered[1:] != ordered[:-1]]))]
    del ordered
    chosen = np.zeros(int(url_of.max(initial=-1)) + 1, dtype=np.int64)  # by URL rank: its by_sha copy
    chosen[url_of[firsts]] = firsts
    del lookup, firsts, inserted
    hit_exact = exact_of[chosen[hit_url]]
    del chosen

    phash = _ok_column(fetched, "phash", rows)
    phashes = (
        pc.fill_null(phash, 0).to_numpy().astype(np.uint64),
        pc.is_valid(phash).to_numpy(zero_copy_only=False),
    )
    del phash
    near = np.zeros(exact, dtype=np.int64)
    if near_distance > 0 and exact > 1:
        final_of, keep_of = _near(
            fetched, hits, rows, phashes, by_sha, exact_start, hit_index, hit_exact, near_distance,
            near_colour, accepted, blocks,
        )
    else:
        final_of, keep_of = np.arange(exact, dtype=np.int64), None
    if keep_of is None:
        copy_order = by_sha
        copy_group = exact_of
        groups = exact
        kept_sha = exact_sha
    else:
        groups = int(final_of.max()) + 1 if exact else 0
        copy_group = final_of[exact_of]
        not_kept = (exact_of != keep_of[copy_group]).astype(np.int8)
        # by (group, kept copy first, URL, position) as one key, as above
        order = copy_group * 2
        order += not_kept
        del not_kept
        order *= int(url_of.max(initial=0)) + 1
        order += url_of
        order = np.argsort(order, kind="stable")
        copy_order = by_sha[order]
        copy_group = copy_group[order]
        near = np.bincount(final_of, minlength=groups) - 1
        kept_sha = exact_sha[keep_of]  # a group's first copy is its kept exact group's first
    del by_sha, exact_of, url_of, exact_sha
    copy_start = _starts(copy_group, groups)
    del copy_group
    copy_rows = rows[copy_order]
    phashes = (phashes[0][copy_order], phashes[1][copy_order])
    del rows, copy_order
    hit_group = final_of[hit_exact]
    # by (group, query, rank, URL, position): two keys of two parts each (their products fit in
    # 64 bits), and the position needs none, as the hits come in it and the sort is stable
    codes, ids = _query_codes(hits)
    codes = codes[hit_index]
    rank = np.empty(len(ids) + 1, dtype=np.int64)  # the ids' code point order; no id last
    rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    rank[-1] = len(ids)
    group_query = hit_group * (len(ids) + 1) + rank[codes]
    rank_url = _hit_ranks(hits)[hit_index]
    rank_url -= rank_url.min(initial=0)
    rank_url *= int(hit_url.max(initial=0)) + 1
    rank_url += hit_url
    order = np.lexsort((rank_url, group_query))
    del rank_url, group_query, hit_url
    hit_rows = hit_index[order]
    hit_start = _starts(hit_group[order], groups)
    codes = codes[order]
    del order, hit_group, hit_index
    release()
    return Plan(
        copy_rows,
        copy_start,
        hit_rows,
        hit_start,
        near[:groups] if keep_of is not None else np.zeros(groups, dtype=np.int64),
        accepted,
        kept_sha,
        phashes,
        _first_seen(codes, ids),
    )


def _hit_ranks(path: Path) -> np.ndarray:
    """Every hit's rank in its results (0 for none)."""
    ranks = [_ints(b.column("rank")) for b in _batches(path, ["rank"], Hit.SCHEMA)]
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def _first_seen(codes: np.ndarray, ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """The codes renumbered by first appearance, and the ids in that order."""
    first = np.unique(codes[codes >= 0], return_index=True)
    seen = first[0][np.argsort(first[1])]
    renumber = np.full(len(ids) + 1, -1, dtype=np.int64)  # -1 stays -1
    renumber[seen] = np.arange(len(seen))
    return renumber[codes], [ids[c] for c in seen.tolist()]


def _packed(sha: np.ndarray, take: np.ndarray) -> np.ndarray:
    """`sha[take]`, SHA-256 hashes in lowercase hex (fetch writes no other), as their 32 bytes, a
    row each: half the memory of the text for the one hash the plan keeps per picture, packed a
    batch at a time (no whole copy of the taken text). Other texts are taken as they are."""
    if sha.dtype != np.dtype("S64"):
        return sha[take]
    packed = np.empty((len(take), 32), dtype=np.uint8)
    for lo in range(0, len(take), BATCH):
        digits = sha[take[lo : lo + BATCH]].view(np.uint8).reshape(-1, 64)
        decimal, letter = (digits >= 48) & (digits <= 57), (digits >= 97) & (digits <= 102)
        if not (decimal | letter).all():
            return sha[take]
        value = np.where(letter, digits - 87, digits - 48).astype(np.uint8)
        packed[lo : lo + BATCH] = value[:, 0::2] << 4 | value[:, 1::2]
    return packed


def _by_sha(sha: np.ndarray, url_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The copies in (pixel hash, URL, position) order, and where a new pixel hash starts. Fixed-
    width hashes are sorted as they are (lowercase hex sorts as its value), without `np.unique`'s
    sorted copy and inverse; the caller keeps no hash array per copy."""
    n = len(sha)
    if sha.dtype == object:  # hashes of several lengths: sort by their codes
        sha = np.unique(sha, return_inverse=True)[1].reshape(-1) if n else np.zeros(0, dtype=np.int64)
    by_sha = np.lexsort((np.arange(n), url_rank, sha))
    new = np.ones(n, dtype=bool)
    for lo in range(1, n, BATCH):  # a batch at a time: no sorted copy of the hashes
        at = by_sha[lo - 1 : min(n, lo + BATCH)]
        new[lo : lo + len(at) - 1] = sha[at[1:]] != sha[at[:-1]]
    return by_sha, new


def _sort(table: pa.Table, keys: list[tuple[str, str]]) -> np.ndarray:
    """A stable sort (Arrow's is): equal keys keep their table order. Strings sort by code point."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    columns = {}
    for name, _ in keys:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):  # sort by the value, not the code
            column = column.cast(column.type.value_type)
        columns[name] = column
    return pc.sort_indices(pa.table(columns), sort_keys=keys).to_numpy().astype(np.int64)


def _ints(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.fill_null(column, 0).to_numpy().astype(np.int64) if len(column) else np.zeros(0, np.int64)


def _starts(sorted_groups: np.ndarray, groups: int) -> np.ndarray:
    return np.searchsorted(sorted_groups, np.arange(groups + 1)).astype(np.int64)


def _near(
    fetched: Path,
    hits: Path,
    rows: np.ndarray,
    phashes: tuple[np.ndarray, np.ndarray],
    by_sha: np.ndarray,
    exact_start: np.ndarray,
    hit_index: np.ndarray,
    hit_exact: np.ndarray,
    distance: int,
    colours: int,
    accepted: tuple[str, ...],
    blocks: BlockMap | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each exact group's final group (numbered in the kept picture's pixel-hash order) and, per
    final group, the exact group whose pixels it keeps; (identity, None) when nothing merges."""
    exact = len(exact_start) - 1
    first = by_sha[exact_start[:-1]]
    hashed = np.flatnonzero(phashes[1][first])
    values = phashes[0][first][hashed]
    began = time.monotonic()
    index = HashIndex(values)
    a, b = index.pairs(distance, blocks)
    del index, values
    console.print(
        f"curate: near-duplicate search over {len(hashed):,} pictures within {distance} bits "
        f"took {time.monotonic() - began:.1f} s"
    )
    a, b = hashed[a], hashed[b]
    del hashed
    # the colours, and below the sizes, of only the pictures that need them, read by row number:
    # per-picture arrays here would add to the plan at the grouping's peak
    colour = _take_rows(fetched, rows[first[np.concatenate((a, b))]], ["colour"], Fetched.SCHEMA).column(0)
    colour_a, colour_b = colour.slice(0, len(a)), colour.slice(len(a))
    del colour
    both = (pc.is_valid(colour_a).to_numpy(zero_copy_only=False)
            & pc.is_valid(colour_b).to_numpy(zero_copy_only=False))
    rgb_a, rgb_b = _ints(colour_a), _ints(colour_b)
    apart = np.max([np.abs(((rgb_a >> s) & 0xFF) - ((rgb_b >> s) & 0xFF)) for s in (16, 8, 0)], axis=0)
    linked = ~(both & (apart > colours)) & (a != b)  # one drawing in two colours: two pictures
    a, b = a[linked], b[linked]
    if len(a) == 0:
        return np.arange(exact, dtype=np.int64), None
    root = np.arange(exact, dtype=np.int64)  # minimum-label propagation: each root is its component's least
    while True:
        low = np.minimum(root[a], root[b])
        before = root.copy()
        np.minimum.at(root, a, low)
        np.minimum.at(root, b, low)
        root = root[root]
        if np.array_equal(root, before):
            break
    del before
    members = np.flatnonzero(root != np.arange(exact))
    members = np.union1d(members, root[members])  # every picture of a merged component, in order
    sizes = _take_rows(fetched, rows[first[members]], ["width", "height"], Fetched.SCHEMA)
    area = _ints(sizes.column("width")) * _ints(sizes.column("height"))
    del sizes
    passes = _licence_passes(
        fetched, hits, rows, by_sha, exact_start, hit_index, hit_exact, members, accepted
    )
    by_root: dict[int, list[int]] = {}
    for k, g in enumerate(members.tolist()):  # in exact (pixel-hash) order, as the object path's components
        by_root.setdefault(int(root[g]), []).append(k)
    keep: dict[int, int] = {}  # per root, the exact group whose pixels are kept
    for r, group in by_root.items():
        candidates = [k for k in group if passes.get(int(members[k]), True)] or group
        keep[r] = int(members[min(candidates, key=lambda k: (-int(area[k]), k))])  # k: pixel-hash order
    kept = root  # the kept exact group of each exact group's component (outside merged ones, itself)
    kept[members] = [keep[r] for r in root[members].tolist()]
    del root
    final_keys = np.unique(kept)  # final groups in the kept pixels' hash order
    final_of = np.searchsorted(final_keys, kept)
    return final_of, final_keys


def _licence_passes(
    fetched: Path,
    hits: Path,
    rows: np.ndarray,
    by_sha: np.ndarray,
    exact_start: np.ndarray,
    hit_index: np.ndarray,
    hit_exact: np.ndarray,
    members: np.ndarray,
    accepted: tuple[str, ...],
) -> dict[int, bool]:
    """Whether each merged exact group's licence passes the filter (all pass without one); the
    records of these few pictures are read from the tables by row number."""
    if not accepted or len(members) == 0:
        return {}
    mask = np.isin(hit_exact, members)
    hit_table = _take_rows(hits, hit_index[mask], PLAN_HIT_COLUMNS, Hit.SCHEMA)
    hit_key = pa.table(
        {"g": hit_exact[mask], **{c: hit_table.column(c) for c in ("query_id", "rank", "url")}}
    )
    order = _sort(hit_key, [("g", "ascending"), ("query_id", "ascending"), ("rank", "ascending"),
                            ("url", "ascending")])
    hit_table = hit_table.take(order)
    hit_start = np.searchsorted(hit_exact[mask][order], np.arange(len(exact_start))).astype(np.int64)
    spans = [by_sha[exact_start[g] : exact_start[g + 1]] for g in members.tolist()]
    copy_table = _take_rows(fetched, rows[np.concatenate(spans)], PLAN_COPY_COLUMNS, Fetched.SCHEMA)
    copy_start = np.cumsum([0, *map(len, spans)]).tolist()
    found: dict[int, bool] = {}
    for k, g in enumerate(members.tolist()):  # few: the pictures of merged components
        copy_part = copy_table.slice(copy_start[k], copy_start[k + 1] - copy_start[k]).to_pylist()
        hit_part = hit_table.slice(hit_start[g], hit_start[g + 1] - hit_start[g]).to_pylist()
        found[g] = _group(copy_part, hit_part, 0, accepted).licence_passes()
    return found
