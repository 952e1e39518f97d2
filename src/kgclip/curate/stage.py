"""The curate stage: merge duplicates, then write self-contained WebDataset shards.

Each sample's JSON carries every text a trainer may sample from, grouped by kind, so that
training needs the shards alone and not the work directory.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from kgclip.config import Config
from kgclip.curate.balance import balance_draw
from kgclip.curate.card import SamplesTable, ShardImages, ambiguity_summary, write_card
from kgclip.curate.decontam import MATCHES, EvalIndex, save_matches
from kgclip.curate.dedup import Group
from kgclip.curate.plan import (
    BATCH,
    WINDOW,
    Plan,
    open_table,
    plan,
    read_hits,
    read_ok_copies,
    release,
)
from kgclip.curate.shards import PartReader, ShardWriter, write_sizes
from kgclip.curate.split import TRAIN, VAL, val_draw
from kgclip.fetch.stage import PARTS
from kgclip.pipeline import PipelineError, StageContext, StageResult
from kgclip.progress import console, meter
from kgclip.tables import (
    Entity,
    NaturalType,
    Query,
    RecordWriter,
    Rejected,
    Sample,
    read_records,
    to_table,
)
from kgclip.workdir import Workdir, digest_of, fsync_dir

SHARDS = "shards"
VAL_DIR = "val"
CARD = "card"


SPILL = ".curate-spill"  # the grouped rows, by bucket of groups, while curate runs


def run(ctx: StageContext) -> StageResult:
    """Group, filter and write, keeping per picture only compact arrays (curate/plan.py): the
    samples are built as records a window at a time while their shards are written, samples.parquet
    and rejected.parquet are appended as they go, and the card is counted from samples.parquet."""
    cfg = ctx.config.curate
    entities = {e.id: e for e in read_records(ctx.path("entities.parquet"), Entity)}
    types = {t.entity_id: t for t in read_records(ctx.path("types.parquet"), NaturalType)}
    queries = {q.query_id: q for q in read_records(ctx.path("queries.parquet"), Query)}
    query_types = _type_attribute_types(queries.values(), types)
    made = plan(
        read_ok_copies(ctx.path("fetched.parquet")),
        read_hits(ctx.path("hits.parquet")),
        cfg.near_duplicate_distance,
        cfg.near_duplicate_colour,
        cfg.licenses,
    )
    ok = _count_ok(ctx.path("fetched.parquet"))
    counts: dict[str, Any] = {
        "duplicates_merged": ok - len(made),
        "near_duplicates_merged": int(made.near.sum()),
    }
    alive = np.ones(len(made), dtype=bool)
    evaluated, counts["eval_copies_dropped"] = _eval_copies(
        made, index_paths(ctx.config, ctx.workdir), cfg.decontam_distance
    )
    alive[list(evaluated)] = False
    pairs = made.query_pairs()
    spill = ctx.path(SPILL)
    _clear_own(spill)
    try:
        made.spill(ctx.path("fetched.parquet"), ctx.path("hits.parquet"), spill)
        refused = _refused(made, alive)
        alive[list(refused)] = False
        dropped, before = _balance(
            made, alive, pairs, queries, cfg.max_per_entity, cfg.max_per_query, ctx.config.seed
        )
        del pairs
        counts["balanced_out"] = len(dropped)
        held = _held_out(made, np.flatnonzero(alive), cfg.val_fraction, cfg.val_max)
        why = {f: (EVAL, f"{m[0]}:{m[1]} (distance {m[2]})") for f, m in evaluated.items()}
        why.update({f: (LICENCE, detail) for f, detail in refused.items()})
        why.update({f: (_balance_kind(d), d) for f, d in dropped})
        reader = PartReader(ctx.path(PARTS))
        try:
            writer = Writer(ctx, reader, Lookups(queries, entities, types, query_types))
            with RecordWriter(ctx.path("samples.parquet"), Sample) as table:
                sizes, covered, with_alt = _write_splits(ctx, writer, made, why, held, table)
        finally:
            reader.close()
        release()
        save_matches(index_paths(ctx.config, ctx.workdir), _aside_rows(spill, EVAL), ctx.path(MATCHES))
        with RecordWriter(ctx.path("rejected.parquet"), Rejected) as rejected:
            reasons = _write_rejected(ctx.path("fetched.parquet"), spill, rejected)
    finally:
        _clear_own(spill)
    del made
    release()
    shard_dir = ctx.path(SHARDS)

    stats = _stats(ok, counts, table.rows, covered, with_alt, reasons, entities)
    stats["split"] = {split: sum(n.values()) for split, n in sizes.items()}
    images = ShardImages({TRAIN: shard_dir, VAL: ctx.path(VAL_DIR)})
    try:
        write_card(
            ctx.path(CARD),
            ctx.config.name,
            SamplesTable(ctx.path("samples.parquet")),
            reasons,
            stats,
            entities,
            types,
            queries,
            before,
            ambiguity_summary(ctx.path("queries.parquet"), ctx.path("rejects/queries.parquet")),
            image_of=images,
        )
    finally:
        images.close()
    _print_summary(stats, shard_dir, sizes[TRAIN])
    summary = f"{table.rows:,} samples in {len(sizes[TRAIN])} shards under {shard_dir}"
    if sizes[VAL]:
        summary += f", {stats['split'][VAL]:,} of them held out under {ctx.path(VAL_DIR)}"
    return StageResult(table.rows, stats, summary)


def _count_ok(path: Path) -> int:
    file = open_table(path)
    return sum(
        pc.sum(pc.equal(b.column("status"), "ok")).as_py() or 0
        for b in file.iter_batches(batch_size=BATCH, columns=["status"])
    )


def _eval_copies(
    made: Plan, paths: list[Path], distance: int
) -> tuple[dict[int, tuple[str, str, int]], dict[str, int]]:
    """The groups with a copy close to an evaluation image, with the nearest match (the first copy's
    on a tie), and dropped pictures per evaluation set (decontam.drop_eval_copies, on arrays)."""
    if not paths:
        return {}, {}
    index = EvalIndex(paths)
    hashes, valid = made.copy_phashes()
    positions = np.flatnonzero(valid)
    found = index.matches(hashes[positions], distance)
    owner = np.searchsorted(made.copy_start, positions, side="right") - 1
    matched: dict[int, tuple[str, str, int]] = {}
    for position, match in found.items():  # in copy order
        group = int(owner[position])
        if group not in matched or match[2] < matched[group][2]:
            matched[group] = match
    console.print(
        f"curate: {len(matched):,} pictures dropped as copies of evaluation images "
        f"({sum(index.images_per_set.values()):,} indexed in {len(index.images_per_set)} sets)"
    )
    return dict(sorted(matched.items())), dict(Counter(m[0] for m in matched.values()))


def _refused(made: Plan, alive: np.ndarray) -> dict[int, str]:
    """The groups whose kept pixels' licence does not pass the filter, with why (licences.py)."""
    if not made.accepted:
        return {}
    refused: dict[int, str] = {}
    for chosen, groups in made.windows(np.flatnonzero(alive)):
        for f, g in zip(chosen.tolist(), groups, strict=True):
            if not g.licence_passes():
                refused[f] = f"{g.licence()[0]} is not among {', '.join(g.accepted)}"
    return refused


def _balance(
    made: Plan,
    alive: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray, list[str]],
    queries: dict[str, Query],
    per_entity: int,
    per_query: int,
    seed: int,
) -> tuple[list[tuple[int, str]], Counter[str]]:
    """balance.balance on arrays: the groups dropped (entity cap first, then query cap, each in
    group order) with the cap that dropped them, and pictures per entity before balancing.
    `alive` loses the dropped groups. `pairs` is `made.query_pairs()`."""
    owner, codes, ids = pairs
    entity_ids = sorted({q.entity_id for q in queries.values() if q.entity_id})
    entity_code = {e: i for i, e in enumerate(entity_ids)}
    to_entity = np.array(
        [entity_code.get(queries[q].entity_id or "", -1) if q in queries else -1 for q in ids] + [-1],
        dtype=np.int64,
    )
    by_query = _pairs(owner[codes >= 0], codes[codes >= 0])
    entity_of = to_entity[codes]  # -1 (the appended) for a missing query id
    by_entity = _pairs(owner[entity_of >= 0], entity_of[entity_of >= 0])
    live = alive[by_entity[0]]
    tally = np.bincount(by_entity[1][live], minlength=len(entity_ids))
    before = Counter({entity_ids[e]: int(n) for e, n in enumerate(tally) if n})
    dropped: list[tuple[int, str]] = []
    for cap, pairs, names, name in (
        (per_entity, by_entity, entity_ids, "max_per_entity"),
        (per_query, by_query, ids, "max_per_query"),
    ):
        if cap > 0:
            out = _cap(made, alive, pairs, names, cap, seed, name)
            alive[out] = False
            dropped += [(int(f), f"{name} {cap}") for f in out]
    return dropped, before


def _pairs(owner: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (group, key) pairs."""
    if len(owner) == 0:
        return owner, key
    both = np.unique(np.stack([owner, key], axis=1), axis=0)
    return both[:, 0], both[:, 1]


def _cap(
    made: Plan, alive: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], names: list[str], cap: int,
    seed: int, name: str,
) -> np.ndarray:
    """balance._cap: a live group survives when it has no key or any of its keys keeps it."""
    live = alive[pairs[0]]
    owner, key = pairs[0][live], pairs[1][live]
    counts = np.bincount(key, minlength=len(names))
    keeps = counts[key] <= cap
    drawn = np.flatnonzero(~keeps)
    for first in range(0, len(drawn), WINDOW):
        chunk = drawn[first : first + WINDOW]
        for j, sha in zip(chunk.tolist(), made.sha(owner[chunk]), strict=True):
            n = int(counts[key[j]])
            keeps[j] = balance_draw(seed, name, names[key[j]], sha) < cap / n
    keyed = np.zeros(len(alive), dtype=bool)
    keyed[owner] = True
    kept = np.zeros(len(alive), dtype=bool)
    kept[owner[keeps]] = True
    return np.flatnonzero(alive & keyed & ~kept)


def _held_out(made: Plan, kept: np.ndarray, fraction: float, cap: int) -> np.ndarray:
    """split.held_out on the kept groups: whether each (by position in `kept`) is held out."""
    held = np.zeros(len(kept), dtype=bool)
    if fraction <= 0:
        return held
    chosen: list[tuple[float, str, int]] = []
    for first in range(0, len(kept), WINDOW):
        for n, sha in enumerate(made.sha(kept[first : first + WINDOW]), start=first):
            u = val_draw(sha)
            if u < fraction:
                chosen.append((u, sha, n))
    chosen.sort()
    for _, _, n in chosen[:cap] if cap else chosen:
        held[n] = True
    return held


def _write_rejected(fetched: Path, spill: Path, out: RecordWriter) -> Counter[str]:
    """The rejected rows in the order the object path listed them: failed fetches, then the rows
    `_write_splits` set aside per kind (evaluation copies, licences, balancing by entity, by query),
    each in group order, a row per merged copy. Counts per reason."""
    reasons: Counter[str] = Counter()
    columns = ["url", "status", "reason", "detail"]
    for batch in open_table(fetched).iter_batches(batch_size=BATCH, columns=columns):
        failed = pc.fill_null(pc.not_equal(batch.column("status"), "ok"), True)
        rows = pa.Table.from_batches([batch]).filter(failed).to_pylist()
        made = [Rejected("fetch", r["url"], r["reason"] or "unknown", r["detail"] or "") for r in rows]
        reasons.update(r.reason for r in made)
        out.add(made)
    for kind in ASIDE:
        for rows in _aside_batches(spill, kind):
            reasons.update(r.reason for r in rows)
            out.add(rows)
    return reasons


def _aside_batches(spill: Path, kind: str) -> Iterator[list[Rejected]]:
    """The rejected rows of one kind that `_write_splits` set aside, a batch at a time."""
    path = spill / f"rejected-{kind}.arrow"
    if not path.is_file():
        return
    with pa.OSFile(str(path)) as source:
        for batch in pa.ipc.open_stream(source):
            yield [Rejected(**r) for r in batch.to_pylist()]


def _aside_rows(spill: Path, kind: str) -> list[Rejected]:
    return [r for rows in _aside_batches(spill, kind) for r in rows]


def _write_splits(
    ctx: StageContext,
    writer: Writer,
    made: Plan,
    why: dict[int, tuple[str, str]],
    held: np.ndarray,
    table: RecordWriter,
) -> tuple[dict[str, dict[str, int]], set[str], int]:
    """Every group in order: a dropped one's copies set aside as rejected rows of its kind (in
    the spill folder), a kept one written as a sample, into the training shards under shards/ or
    the held-out ones under val/, its row appended to `table` in key order. Each split's sizes,
    the entities covered and the samples with an alt text. Both folders are swapped in only once
    both are written."""
    cfg = ctx.config.curate
    # Keys number every picture in pixel-hash order, whichever split it lands in: a picture keeps
    # its key when the split changes, and without a split the keys are those of a harvest without one.
    folders = {TRAIN: (SHARDS, cfg.shard_prefix), VAL: (VAL_DIR, f"{cfg.shard_prefix}-val")}
    sinks: dict[str, _Sink] = {}
    covered: set[str] = set()
    with_alt = 0
    n = 0
    assert made.folder is not None
    aside = _Aside(made.folder)
    try:
        for split, (folder, prefix) in folders.items():
            new_dir = ctx.path(f".{folder}.new")
            _clear_own(new_dir)
            new_dir.mkdir(parents=True)
            sinks[split] = _Sink(new_dir, prefix, cfg.samples_per_shard)
        with meter("curate: writing shards", len(held)) as m:
            for _, groups in made.windows(range(len(made))):
                made_samples = []
                for f, g in zip(_, groups, strict=True):
                    if int(f) in why:
                        kind, detail = why[int(f)]
                        aside.add(kind, [Rejected("curate", c.url, REASON[kind], detail) for c in g.copies])
                        continue
                    split = VAL if held[n] else TRAIN
                    sample = writer.write(sinks[split], f"{n:09d}", g, split)
                    covered.update(sample.entity_ids)
                    with_alt += bool(sample.alt_texts)
                    made_samples.append(sample)
                    n += 1
                table.add(made_samples)
                m.advance(len(made_samples))
        for sink in sinks.values():
            sink.finish()
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        for folder, _ in folders.values():
            _clear_own(ctx.path(f".{folder}.new"))
        raise
    finally:
        aside.close()
    for folder, _ in folders.values():
        _swap_in(ctx.path(f".{folder}.new"), ctx.path(folder))
    return {split: sink.sizes for split, sink in sinks.items()}, covered, with_alt


EVAL, LICENCE, BALANCE_ENTITY, BALANCE_QUERY = "eval", "licence", "entity", "query"
ASIDE = (EVAL, LICENCE, BALANCE_ENTITY, BALANCE_QUERY)  # the order of their rows in rejected.parquet
REASON = {
    EVAL: "eval_copy",
    LICENCE: "licence",
    BALANCE_ENTITY: "balanced_out",
    BALANCE_QUERY: "balanced_out",
}


def _balance_kind(why: str) -> str:
    return BALANCE_ENTITY if why.startswith("max_per_entity") else BALANCE_QUERY


class _Aside:
    """Rejected rows of each kind, appended to an Arrow stream in the spill folder as the groups
    go by, read back in kind order by `_write_rejected`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._open: dict[str, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}

    def add(self, kind: str, rows: list[Rejected]) -> None:
        if kind not in self._open:
            sink = pa.OSFile(str(self.folder / f"rejected-{kind}.arrow"), "wb")
            self._open[kind] = (sink, pa.ipc.new_stream(sink, Rejected.SCHEMA))
        self._open[kind][1].write_table(to_table(rows, Rejected))

    def close(self) -> None:
        for sink, writer in self._open.values():
            writer.close()
            sink.close()
        self._open.clear()


class _Sink:
    """One split's shards in a fresh folder, filled a sample at a time: `per_shard` samples to a
    tar, then the next; `sizes.json` (written even when empty: it is a stage output) at the end."""

    def __init__(self, folder: Path, prefix: str, per_shard: int) -> None:
        self.folder, self.prefix, self.per_shard = folder, prefix, per_shard
        self.sizes: dict[str, int] = {}
        self.count = 0
        self._shard: ShardWriter | None = None

    def shard_name(self) -> str:
        return f"{self.prefix}-{self.count // self.per_shard:05d}.tar"

    def add(self, key: str, jpeg: bytes, caption: str, meta: dict[str, Any]) -> None:
        if self._shard is None:
            self._shard = ShardWriter(self.folder / self.shard_name()).__enter__()
        self._shard.add(key, jpeg, caption, meta)
        self.count += 1
        if self.count % self.per_shard == 0:
            self._close()

    def _close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            shard.__exit__(None, None, None)
            self.sizes[shard.path.name] = shard.count

    def finish(self) -> None:
        self._close()
        write_sizes(self.folder / "sizes.json", self.sizes)

    def abort(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            shard.__exit__(PipelineError, PipelineError("curate stopped"), None)


@dataclass(frozen=True)
class Lookups:
    """What a sample's JSON is written from, by id: its queries, entities and natural types."""

    queries: dict[str, Query]
    entities: dict[str, Entity]
    types: dict[str, NaturalType]  # by entity id
    query_types: dict[str, NaturalType]  # by query id (type-attribute queries)


class Writer:
    """Builds each sample and writes it into its split's current shard."""

    def __init__(self, ctx: StageContext, reader: PartReader, lookups: Lookups) -> None:
        self.ctx, self.reader, self.lookups = ctx, reader, lookups

    def write(self, sink: _Sink, key: str, g: Group, split: str) -> Sample:
        sample = _sample(key, sink.shard_name(), g, self.lookups.queries, split)
        sink.add(sample.key, _stored(self.reader, g), sample.caption, _sample_json(sample, g, self.lookups))
        return sample


def _stored(reader: PartReader, g: Group) -> bytes:
    part, member = g.first.part or "", g.first.member or ""
    try:
        return reader.read(part, member)
    except (OSError, tarfile.TarError) as exc:
        raise PipelineError(
            f"curate: cannot read image {member} of fetch part {part} ({exc}); run the harvest again: "
            "fetch finds missing or damaged parts and fetches their images again"
        ) from None


def _clear_own(path: Path) -> None:
    """Remove a folder that only curate writes (its unfinished or replaced shards)."""
    if path.is_dir():
        shutil.rmtree(path)


def _swap_in(new_dir: Path, shard_dir: Path) -> None:
    old_dir = shard_dir.with_name(f".{shard_dir.name}.old")
    _clear_own(old_dir)
    if shard_dir.exists():
        shard_dir.rename(old_dir)
    new_dir.rename(shard_dir)
    fsync_dir(shard_dir.parent)
    _clear_own(old_dir)


def index_paths(config: Config, workdir: Workdir) -> list[Path]:
    return [p if p.is_absolute() else workdir.path(str(p)) for p in config.curate.decontaminate]


def decontam_fingerprint(config: Config, workdir: Workdir) -> str | None:
    """The evaluation indexes are curate's input from outside the workdir: their content counts."""
    paths = index_paths(config, workdir)
    if not paths:
        return None
    return digest_of(
        *(hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else f"missing:{p}" for p in paths)
    )


def _sample(key: str, shard: str, g: Group, queries: dict[str, Query], split: str) -> Sample:
    licence, attribution = g.licence()  # of the kept pixels (curate/dedup.py)
    query_texts = [queries[q].text for q in g.query_ids() if q in queries]
    alt = g.alt_texts()
    caption = alt[0] if alt else (query_texts[0] if query_texts else "")
    return Sample(
        key=key,
        shard=shard,
        sha256=g.pixel_sha256,
        width=g.first.width or 0,
        height=g.first.height or 0,
        orig_width=g.first.orig_width or 0,
        orig_height=g.first.orig_height or 0,
        urls=g.urls(),
        page_urls=g.page_urls(),
        alt_texts=alt,
        query_ids=g.query_ids(),
        entity_ids=g.entity_ids(queries),
        license=licence,
        attribution=attribution,
        caption=caption,
        phash=g.phash,
        split=split,
        evidence=[orjson.dumps(e).decode() for e in _evidence(g, queries)],
    )


def _evidence(g: Group, queries: dict[str, Query]) -> list[dict[str, Any]]:
    """Per query that found this picture, what matched in its best-ranked hit that says
    (search/corpus.py): which field, which words, and whether they were the caption's subject."""
    out: dict[str, dict[str, Any]] = {}
    for hit in g.hits:  # in (query, rank, url) order: the first with evidence is the best
        if hit.evidence is None or hit.query_id in out or hit.query_id not in queries:
            continue
        out[hit.query_id] = {
            "query_id": hit.query_id,
            "entity_id": queries[hit.query_id].entity_id,
            "backend": hit.backend,
            **orjson.loads(hit.evidence),
        }
    return list(out.values())


def _type_attribute_types(queries: Iterable[Query], types: dict[str, NaturalType]) -> dict[str, NaturalType]:
    """The natural type each type-attribute query was made from ("aquatic animal": animal), by query id.

    The query table keeps only the text and the attribute, and the text is the attribute and the
    type's name joined either way round (queries.type_attribute_text); a trainer needs the type's
    synonyms and description for its captions (train/captions.py). When two types share a name the
    query builder counted them as one; the one more entities have stands for both."""
    by_name: dict[str, Counter[str]] = defaultdict(Counter)
    first: dict[str, NaturalType] = {}
    for entity_id in sorted(types):
        t = types[entity_id]
        by_name[t.type_name][t.type_id] += 1
        first.setdefault(t.type_id, t)
    named = {name: first[min(ids, key=lambda i: (-ids[i], i))] for name, ids in by_name.items()}
    found: dict[str, NaturalType] = {}
    for q in queries:
        if q.kind != "type_attribute" or not q.attribute:
            continue
        a = q.attribute
        names = [q.text[len(a) + 1 :] if q.text.startswith(f"{a} ") else None]
        names.append(q.text[: -len(a) - 1] if q.text.endswith(f" {a}") else None)
        t = next((named[n] for n in names if n in named), None)
        if t is not None:
            found[q.query_id] = t
    return found


def _sample_json(s: Sample, g: Group, lookups: Lookups) -> dict[str, Any]:
    queries, entities, types, query_types = (
        lookups.queries, lookups.entities, lookups.types, lookups.query_types
    )
    return {
        "key": s.key,
        "caption": s.caption,
        "alt_texts": s.alt_texts,
        "queries": [
            {
                "id": q.query_id,
                "kind": q.kind,
                "text": q.text,
                "entity_id": q.entity_id,
                "attribute": q.attribute,
                "natural_type": _type_json(query_types.get(q.query_id)),
            }
            for q in (queries[i] for i in s.query_ids if i in queries)
        ],
        "entities": [_entity_json(entities[e], types.get(e)) for e in s.entity_ids if e in entities],
        "urls": s.urls,
        "page_urls": s.page_urls,
        "license": s.license,
        "attribution": s.attribution,
        "width": s.width,
        "height": s.height,
        "orig_width": s.orig_width,
        "orig_height": s.orig_height,
        "sha256": s.sha256,
        "phash": None if s.phash is None else f"{s.phash:016x}",
        "evidence": [orjson.loads(e) for e in s.evidence],
    }


def _entity_json(e: Entity, t: NaturalType | None) -> dict[str, Any]:
    return {
        "id": e.id,
        "name": e.name,
        "aliases": e.aliases,
        "description": e.description,
        "wordnet": e.wordnet,
        "wikidata": e.wikidata,
        "taxon_name": e.taxon_name,
        "common_names": e.common_names,
        "natural_type": _type_json(t),
    }


def _type_json(t: NaturalType | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {
        "id": t.type_id,
        "name": t.type_name,
        "aliases": t.type_aliases,
        "description": t.type_description,
    }


def _stats(
    ok: int,
    counts: dict[str, Any],
    samples: int,
    covered: set[str],
    with_alt: int,
    reasons: Counter[str],
    entities: dict[str, Entity],
) -> dict[str, Any]:
    roots = Counter(entities[e].root for e in covered if e in entities)
    return {
        "fetched_ok": ok,
        "samples": samples,
        **counts,
        "entities_covered": len(covered),
        "entities_per_root": dict(sorted(roots.items())),  # not in set order: the same in any process
        "with_alt_text": with_alt,
        "rejected": dict(reasons),
    }


def _print_summary(stats: dict[str, Any], shard_dir: object, sizes: dict[str, int]) -> None:
    console.print(
        f"curate: {stats['samples']:,} samples ({stats['duplicates_merged']:,} duplicate copies merged, "
        f"{stats['near_duplicates_merged']:,} of them near duplicates) "
        f"covering {stats['entities_covered']:,} entities, in {len(sizes)} shards at {shard_dir}"
    )
    if stats["rejected"]:
        console.print(
            "curate: images rejected: " + ", ".join(f"{k} {v}" for k, v in stats["rejected"].items())
        )
