"""The curate stage: merge duplicates, then write self-contained WebDataset shards.

Each sample's JSON carries every text a trainer may sample from, grouped by kind, so that
training needs the shards alone and not the work directory.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kgclip.config import Config
from kgclip.curate.balance import balance
from kgclip.curate.card import ShardImages, ambiguity_summary, write_card
from kgclip.curate.decontam import MATCHES, drop_eval_copies, save_matches
from kgclip.curate.dedup import Group, group_duplicates
from kgclip.curate.licences import filter_licences
from kgclip.curate.shards import PartReader, write_shard, write_sizes
from kgclip.curate.split import TRAIN, VAL, held_out
from kgclip.fetch.stage import PARTS
from kgclip.pipeline import PipelineError, StageContext, StageResult
from kgclip.progress import console, meter
from kgclip.tables import (
    Entity,
    Fetched,
    Hit,
    NaturalType,
    Query,
    Rejected,
    Sample,
    read_records,
    write_records,
)
from kgclip.workdir import Workdir, digest_of, fsync_dir

SHARDS = "shards"
VAL_DIR = "val"
CARD = "card"


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.curate
    entities = {e.id: e for e in read_records(ctx.path("entities.parquet"), Entity)}
    types = {t.entity_id: t for t in read_records(ctx.path("types.parquet"), NaturalType)}
    queries = {q.query_id: q for q in read_records(ctx.path("queries.parquet"), Query)}
    query_types = _type_attribute_types(queries.values(), types)
    fetched = list(read_records(ctx.path("fetched.parquet"), Fetched))
    hits = list(read_records(ctx.path("hits.parquet"), Hit))

    groups = group_duplicates(
        fetched, hits, cfg.near_duplicate_distance, cfg.near_duplicate_colour, cfg.licenses
    )
    rejected = [
        Rejected("fetch", r.url, r.reason or "unknown", r.detail or "") for r in fetched if r.status != "ok"
    ]
    ok = sum(r.status == "ok" for r in fetched)
    counts: dict[str, Any] = {
        "duplicates_merged": ok - len(groups),
        "near_duplicates_merged": sum(g.near for g in groups),
    }
    groups, removed, per_set = drop_eval_copies(
        groups, index_paths(ctx.config, ctx.workdir), cfg.decontam_distance
    )
    rejected.extend(removed)
    save_matches(index_paths(ctx.config, ctx.workdir), removed, ctx.path(MATCHES))
    counts["eval_copies_dropped"] = per_set
    groups, refused = filter_licences(groups)
    rejected.extend(refused)
    balanced = balance(groups, queries, cfg.max_per_entity, cfg.max_per_query, ctx.config.seed)
    groups = balanced.kept
    rejected.extend(
        Rejected("curate", c.url, "balanced_out", why) for g, why in balanced.dropped for c in g.copies
    )
    counts["balanced_out"] = len(balanced.dropped)

    held = held_out((g.pixel_sha256 for g in groups), cfg.val_fraction, cfg.val_max)
    reader = PartReader(ctx.path(PARTS))
    try:
        writer = Writer(ctx, reader, Lookups(queries, entities, types, query_types))
        samples, sizes = _write_splits(ctx, writer, groups, held)
    finally:
        reader.close()
    shard_dir = ctx.path(SHARDS)

    write_records(ctx.path("samples.parquet"), samples, Sample)
    write_records(ctx.path("rejected.parquet"), rejected, Rejected)
    stats = _stats(ok, counts, samples, rejected, entities)
    stats["split"] = {split: sum(n.values()) for split, n in sizes.items()}
    images = ShardImages({TRAIN: shard_dir, VAL: ctx.path(VAL_DIR)})
    try:
        write_card(
            ctx.path(CARD),
            ctx.config.name,
            samples,
            rejected,
            stats,
            entities,
            types,
            queries,
            balanced.entity_counts_before,
            ambiguity_summary(ctx.path("queries.parquet"), ctx.path("rejects/queries.parquet")),
            image_of=images,
        )
    finally:
        images.close()
    _print_summary(stats, shard_dir, sizes[TRAIN])
    summary = f"{len(samples):,} samples in {len(sizes[TRAIN])} shards under {shard_dir}"
    if sizes[VAL]:
        summary += f", {stats['split'][VAL]:,} of them held out under {ctx.path(VAL_DIR)}"
    return StageResult(len(samples), stats, summary)


def _write_splits(
    ctx: StageContext, writer: Writer, groups: list[Group], held: set[str]
) -> tuple[list[Sample], dict[str, dict[str, int]]]:
    """Training shards under shards/, held-out ones under val/; the samples in key order and each
    split's sizes. Both folders are swapped in only once both are written."""
    cfg = ctx.config.curate
    # Keys number every picture in pixel-hash order, whichever split it lands in: a picture keeps
    # its key when the split changes, and without a split the keys are those of a harvest without one.
    keyed = [(f"{i:09d}", g) for i, g in enumerate(groups)]
    splits = {
        TRAIN: (SHARDS, cfg.shard_prefix, [kg for kg in keyed if kg[1].pixel_sha256 not in held]),
        VAL: (VAL_DIR, f"{cfg.shard_prefix}-val", [kg for kg in keyed if kg[1].pixel_sha256 in held]),
    }
    samples: list[Sample] = []
    sizes: dict[str, dict[str, int]] = {}
    try:
        with meter("curate: writing shards", len(groups)) as m:
            for split, (folder, prefix, members) in splits.items():
                made, sizes[split] = writer.split(folder, prefix, split, members, m)
                samples.extend(made)
    except BaseException:
        for folder, _, _ in splits.values():
            _clear_own(ctx.path(f".{folder}.new"))
        raise
    for folder, _, _ in splits.values():
        _swap_in(ctx.path(f".{folder}.new"), ctx.path(folder))
    return sorted(samples, key=lambda s: s.key), sizes


@dataclass(frozen=True)
class Lookups:
    """What a sample's JSON is written from, by id: its queries, entities and natural types."""

    queries: dict[str, Query]
    entities: dict[str, Entity]
    types: dict[str, NaturalType]  # by entity id
    query_types: dict[str, NaturalType]  # by query id (type-attribute queries)


class Writer:
    """Writes one split's samples as shards into a fresh `.FOLDER.new`, swapped in by the caller
    once every split is written: a failed or interrupted run leaves the previous shards as they were."""

    def __init__(self, ctx: StageContext, reader: PartReader, lookups: Lookups) -> None:
        self.ctx, self.reader, self.lookups = ctx, reader, lookups

    def split(
        self, folder: str, prefix: str, split: str, keyed: list[tuple[str, Group]], m: Any
    ) -> tuple[list[Sample], dict[str, int]]:
        """The split's samples and its `sizes.json` (written even when empty: it is a stage output)."""
        per_shard = self.ctx.config.curate.samples_per_shard
        new_dir = self.ctx.path(f".{folder}.new")
        _clear_own(new_dir)
        new_dir.mkdir(parents=True)
        samples: list[Sample] = []
        sizes: dict[str, int] = {}
        for first in range(0, len(keyed), per_shard):
            chunk = keyed[first : first + per_shard]
            name = f"{prefix}-{first // per_shard:05d}.tar"
            made = [_sample(key, name, g, self.lookups.queries, split) for key, g in chunk]
            members = (
                (
                    sm.key,
                    _stored(self.reader, g),
                    sm.caption,
                    _sample_json(sm, g, self.lookups),
                )
                for sm, (_, g) in zip(made, chunk, strict=True)
            )
            sizes[name] = write_shard(new_dir / name, members)
            samples.extend(made)
            m.advance(len(chunk))
        write_sizes(new_dir / "sizes.json", sizes)
        return samples, sizes


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
    samples: list[Sample],
    rejected: list[Rejected],
    entities: dict[str, Entity],
) -> dict[str, Any]:
    covered = {e for s in samples for e in s.entity_ids}
    roots = Counter(entities[e].root for e in covered if e in entities)
    return {
        "fetched_ok": ok,
        "samples": len(samples),
        **counts,
        "entities_covered": len(covered),
        "entities_per_root": dict(sorted(roots.items())),  # not in set order: the same in any process
        "with_alt_text": sum(bool(s.alt_texts) for s in samples),
        "rejected": dict(Counter(r.reason for r in rejected)),
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
