"""The curate stage: merge duplicates, drop copies of evaluation images, filter licences,
balance, hold out a split, then write self-contained WebDataset shards (curate/write.py), the
tables and the card.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kgclip.config import Config
from kgclip.curate.balance import balance_draw
from kgclip.curate.card import SamplesTable, ShardImages, ambiguity_summary, write_card
from kgclip.curate.decontam import MATCHES, EvalIndex, save_matches
from kgclip.curate.memory import compact_memory, release
from kgclip.curate.plan import BATCH, WINDOW, Plan, open_table, plan
from kgclip.curate.samples import Lookups, type_attribute_types
from kgclip.curate.shards import write_sizes
from kgclip.curate.split import TRAIN, VAL, val_draw
from kgclip.curate.write import (
    ASIDE,
    BALANCE_ENTITY,
    BALANCE_QUERY,
    EVAL,
    LICENCE,
    Drops,
    Layout,
    Target,
    aside_batches,
    aside_rows,
    jobs,
    local_runner,
    merge_samples,
    per_job_default,
)
from kgclip.fetch.stage import PARTS
from kgclip.pipeline import StageContext, StageResult
from kgclip.progress import console, meter
from kgclip.raycluster import ray_session
from kgclip.tables import (
    TABLE_ROWS_PER_GROUP,
    Entity,
    GroupWriter,
    NaturalType,
    Query,
    Rejected,
    Sample,
    read_records,
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
    on_ray = ctx.config.curate.executor == "ray"
    with compact_memory(), ray_session(ctx.config.ray) if on_ray else nullcontext():  # one Ray for all
        return _run(ctx)


def _run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.curate
    blocks = None
    if cfg.executor == "ray":
        from kgclip.curate.ray_run import ray_blocks

        blocks = ray_blocks(ctx.config.ray)
    entities = {e.id: e for e in read_records(ctx.path("entities.parquet"), Entity)}
    types = {t.entity_id: t for t in read_records(ctx.path("types.parquet"), NaturalType)}
    queries = {q.query_id: q for q in read_records(ctx.path("queries.parquet"), Query)}
    query_types = type_attribute_types(queries.values(), types)
    made = plan(
        ctx.path("fetched.parquet"),
        ctx.path("hits.parquet"),
        cfg.near_duplicate_distance,
        cfg.near_duplicate_colour,
        cfg.licenses,
        blocks,
    )
    ok = _count_ok(ctx.path("fetched.parquet"))
    counts: dict[str, Any] = {
        "duplicates_merged": ok - len(made),
        "near_duplicates_merged": int(made.near.sum()),
    }
    drops = Drops(len(made))
    counts["eval_copies_dropped"] = _eval_copies(
        made, drops, index_paths(ctx.config, ctx.workdir), cfg.decontam_distance
    )
    spill = ctx.path(SPILL)
    _clear_own(spill)
    try:
        made.spill(ctx.path("fetched.parquet"), ctx.path("hits.parquet"), spill)
        pairs = made.query_pairs()  # after the spill, which has the memory's peak
        _refuse(made, drops)
        before_drops = len(drops)
        before = _balance(
            made, drops, pairs, queries, cfg.max_per_entity, cfg.max_per_query, ctx.config.seed
        )
        del pairs
        counts["balanced_out"] = len(drops) - before_drops
        held = _held_out(made, np.flatnonzero(drops.kind == 0), cfg.val_fraction, cfg.val_max)
        lookups = Lookups(queries, entities, types, query_types)
        with GroupWriter(ctx.path("samples.parquet"), Sample.SCHEMA, TABLE_ROWS_PER_GROUP) as table:
            sizes, covered, with_alt = _write_samples(ctx, made, drops, held, lookups, table)
        release()
        save_matches(index_paths(ctx.config, ctx.workdir), aside_rows(spill, EVAL), ctx.path(MATCHES))
        with GroupWriter(ctx.path("rejected.parquet"), Rejected.SCHEMA, TABLE_ROWS_PER_GROUP) as rejected:
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


def _eval_copies(made: Plan, drops: Drops, paths: list[Path], distance: int) -> dict[str, int]:
    """Drop the groups with a copy close to an evaluation image, each with its nearest match (the
    first copy's on a tie); dropped pictures per evaluation set (the reference's rule, on arrays)."""
    hashes, valid = made.copy_phashes()  # taken whether or not needed: their memory goes
    if not paths:
        return {}
    index = EvalIndex(paths)
    positions = np.flatnonzero(valid)
    found = index.matches(hashes[positions], distance)
    owner = np.searchsorted(made.copy_start, positions, side="right") - 1
    matched: dict[int, tuple[str, str, int]] = {}
    for position, match in found.items():  # in copy order
        group = int(owner[position])
        if group not in matched or match[2] < matched[group][2]:
            matched[group] = match
    for group, (eval_set, image, apart) in matched.items():
        drops.add([group], EVAL, f"{eval_set}:{image} (distance {apart})")
    console.print(
        f"curate: {len(matched):,} pictures dropped as copies of evaluation images "
        f"({sum(index.images_per_set.values()):,} indexed in {len(index.images_per_set)} sets)"
    )
    return dict(Counter(m[0] for m in matched.values()))


def _refuse(made: Plan, drops: Drops) -> None:
    """Drop the groups whose kept pixels' licence does not pass the filter, saying why (licences.py)."""
    if not made.accepted:
        return
    for chosen, groups in made.windows(np.flatnonzero(drops.kind == 0)):
        for f, g in zip(chosen.tolist(), groups, strict=True):
            if not g.licence_passes():
                drops.add([f], LICENCE, f"{g.licence()[0]} is not among {', '.join(g.accepted)}")


def _balance(
    made: Plan,
    drops: Drops,
    pairs: tuple[np.ndarray, np.ndarray, list[str]],
    queries: dict[str, Query],
    per_entity: int,
    per_query: int,
    seed: int,
) -> Counter[str]:
    """The reference `balance` (tests/curate_reference.py) on arrays: drop the groups over the
    entity cap, then those over the query cap, each with its cap; pictures per entity before
    balancing. `pairs` is `made.query_pairs()`."""
    alive = drops.kind == 0
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
    for cap, pairs, names, name, kind in (
        (per_entity, by_entity, entity_ids, "max_per_entity", BALANCE_ENTITY),
        (per_query, by_query, ids, "max_per_query", BALANCE_QUERY),
    ):
        if cap > 0:
            out = _cap(made, alive, pairs, names, cap, seed, name)
            alive[out] = False
            drops.add(out, kind, f"{name} {cap}")
    return before


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
    """The reference `_cap`: a live group survives when it has no key or any of its keys keeps it."""
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
    """Whether each kept group (by position in `kept`) is held out: those whose `val_draw` is below
    `fraction`, the `cap` smallest draws when more are (split.py)."""
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


def _write_rejected(fetched: Path, spill: Path, out: GroupWriter) -> Counter[str]:
    """The rejected rows in the order the object path listed them: failed fetches, then the rows
    the jobs set aside per kind (evaluation copies, licences, balancing by entity, by query),
    each in group order, a row per merged copy. Counts per reason."""
    reasons: Counter[str] = Counter()
    columns = ["url", "status", "reason", "detail"]
    for batch in open_table(fetched).iter_batches(batch_size=BATCH, columns=columns):
        failed = pc.fill_null(pc.not_equal(batch.column("status"), "ok"), True)
        rows = pa.Table.from_batches([batch]).filter(failed).to_pylist()
        made = [Rejected("fetch", r["url"], r["reason"] or "unknown", r["detail"] or "") for r in rows]
        reasons.update(r.reason for r in made)
        out.add_records(made)
    for kind in ASIDE:
        for rows in aside_batches(spill, kind):
            reasons.update(r.reason for r in rows)
            out.add_records(rows)
    return reasons


def _write_samples(
    ctx: StageContext,
    made: Plan,
    drops: Drops,
    held: np.ndarray,
    lookups: Lookups,
    table: GroupWriter,
) -> tuple[dict[str, dict[str, int]], set[str], int]:
    """Every group in order: a dropped one's copies set aside as rejected rows of its kind (in
    the spill folder), a kept one written as a sample into the training shards under shards/ or
    the held-out ones under val/ (curate/write.py: in jobs, here or on Ray), its row appended to
    `table` in key order. Each split's sizes, the entities covered and the samples with an alt
    text. Both folders are swapped in only once both are written."""
    cfg = ctx.config.curate
    folders = {TRAIN: (SHARDS, cfg.shard_prefix), VAL: (VAL_DIR, f"{cfg.shard_prefix}-val")}
    assert made.folder is not None
    layout = Layout(
        {split: Target(ctx.path(f".{folder}.new"), prefix) for split, (folder, prefix) in folders.items()},
        cfg.samples_per_shard,
        ctx.path(PARTS),
        made.folder,
    )
    todo = jobs(
        len(made), drops, held, cfg.samples_per_shard,
        per_job_default(cfg.executor, cfg.shards_per_task, cfg.samples_per_shard),
    )
    sizes: dict[str, dict[str, int]] = {TRAIN: {}, VAL: {}}
    covered: set[str] = set()
    with_alt = 0
    try:
        for target in layout.targets.values():
            _clear_own(target.folder)
            target.folder.mkdir(parents=True)
        if cfg.executor == "ray":
            from kgclip.curate.ray_run import ray_runner

            runner = ray_runner(made, lookups, layout, ctx.config.ray)
        else:
            runner = local_runner(made, lookups, layout)
        where = f" as {len(todo)} Ray tasks" if cfg.executor == "ray" else ""
        with meter(f"curate: writing shards{where}", len(held)) as m:
            for done in runner(todo, m.advance):
                for split, named in done.sizes.items():
                    sizes[split].update(named)
                covered.update(done.covered)
                with_alt += done.with_alt
        merge_samples(made.folder, todo, table)
        for split, target in layout.targets.items():
            write_sizes(target.folder / "sizes.json", sizes[split])
    except BaseException:
        for target in layout.targets.values():
            _clear_own(target.folder)
        raise
    for folder, _ in folders.values():
        _swap_in(ctx.path(f".{folder}.new"), ctx.path(folder))
    return sizes, covered, with_alt


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
