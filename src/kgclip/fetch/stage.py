"""The fetch stage: every hit URL read, validated and normalised into tar parts, resumably.

Work goes in batches; a batch's images go into one tar part written atomically, and only
then are its outcomes committed to the ledger. A killed run therefore resumes with exactly the
URLs of the batches that were not committed, and no image is lost or stored twice. Batches run
on this machine (fetch/local_run.py) or as Ray tasks (fetch/ray_run.py); the stage itself, on
the driver, writes every part and owns the ledger either way.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import orjson

from kgclip.config import Config, FetchConfig
from kgclip.curate import phash
from kgclip.fetch.batch import Batch, Outcome, write_part
from kgclip.fetch.http import FetchPolicy, fetcher_user_agent
from kgclip.fetch.images import ImageOptions
from kgclip.fetch.ledger import COLUMNS, SWITCHES, FetchLedger
from kgclip.fetch.local_run import run_local
from kgclip.fetch.sources import LocalReads, corpus_roots_of
from kgclip.pipeline import StageContext, StageResult
from kgclip.progress import console, meter
from kgclip.tables import ROWS_PER_GROUP, Fetched, GroupWriter, iter_batches
from kgclip.useragent import PROJECT_URL
from kgclip.workdir import Workdir, atomic_write_bytes, digest_of

LEDGER = "cache/fetch.sqlite"
PARTS = "parts"
PART_INDEX = "parts/index.json"  # every part the ledger references, with its size: what curate reads
STATUS, REASON = COLUMNS.index("status"), COLUMNS.index("reason")
PART_NAME = re.compile(r"^[0-9a-f]{8}-\d{5}\.tar$")  # the parts this stage writes, and only those


def policy_of(cfg: FetchConfig) -> FetchPolicy:
    return FetchPolicy(
        allow_loopback=cfg.allow_loopback,
        allow_private=cfg.allow_private,
        allow_networks=tuple(cfg.allow_networks),
        connect_timeout=cfg.connect_timeout_s,
        read_timeout=cfg.read_timeout_s,
        max_redirects=cfg.max_redirects,
        total_timeout=cfg.timeout_s,
        queue_timeout=cfg.queue_timeout_s,
        max_bytes=cfg.max_bytes,
        per_host_concurrency=cfg.per_host_concurrency,
        per_host_rate_per_s=cfg.per_host_rate_per_s,
        global_concurrency=cfg.global_concurrency,
        max_retries=cfg.max_retries,
        honour_x_robots=cfg.honour_x_robots,
        user_agent=fetcher_user_agent(cfg.contact or PROJECT_URL),
    )


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.fetch
    opts = ImageOptions.from_config(cfg)
    policy = policy_of(cfg)
    settings = sorted(asdict(opts).items())
    # outcomes carry a perceptual hash, so a new hash version re-makes them like a new image setting
    params = digest_of(f"phash={phash.VERSION}", *(f"{k}={v}" for k, v in settings))[:8]
    roots = corpus_roots_of(ctx.config, ctx.workdir)
    ledger = FetchLedger(ctx.path(LEDGER), params)
    try:
        dropped = ledger.drop_other_params()
        if dropped:
            console.print(f"fetch: image settings changed, {dropped:,} earlier outcomes dropped")
        rejudged = ledger.rejudge({switch.name: getattr(cfg, switch.name) for switch in SWITCHES})
        for change, count in rejudged.items():
            console.print(f"fetch: {change}: {count:,} earlier outcomes it decided are judged again")
        parts_dir = ctx.path(PARTS)
        lost = _lost_parts(parts_dir, ledger.parts(), _read_index(ctx.path(PART_INDEX)))
        if lost:
            forgotten = ledger.forget_parts(lost)
            console.print(
                f"fetch: {len(lost):,} part(s) missing or damaged ({', '.join(sorted(lost)[:3])}"
                f"{', ...' if len(lost) > 3 else ''}); their {forgotten:,} images are fetched again"
            )
        _remove_unreferenced_parts(parts_dir, ledger.parts())
        # Every hit URL once, in order, and those the local corpus produced (the only ones that may
        # be read from local files), into the ledger's temporary tables: nothing per URL is held here.
        urls = ledger.load_hits(_hit_batches(ctx.path("hits.parquet")))
        pending = ledger.mark_pending()
        first = _next_part_number(parts_dir, params)

        def batches() -> Iterator[Batch]:
            """Made one at a time, as the executor asks for the next."""
            for i, chunk in enumerate(ledger.pending(cfg.batch_size)):
                local = LocalReads(roots, frozenset(u for u, corpus in chunk if corpus))
                yield Batch(first + i, f"{params}-{first + i:05d}.tar", [u for u, _ in chunk], local)

        with meter("fetch", pending) as m:

            def commit(batch: Batch, outcomes: list[Outcome]) -> None:
                ledger.record(write_part(parts_dir, batch, outcomes), cfg.give_up_after_runs)
                m.advance(len(batch.urls))

            if cfg.executor == "ray":
                from kgclip.fetch.ray_run import run_ray

                run_ray(batches(), policy, opts, ctx.config.ray, commit)
            else:
                workers = min(cfg.workers or os.cpu_count() or 1, max(1, pending))
                run_local(batches(), policy, opts, workers, commit)
        reasons: Counter[str] = Counter()
        ok = failed = 0
        out = GroupWriter(ctx.path("fetched.parquet"), Fetched.SCHEMA)
        with out:
            for chunk in ledger.hit_outcomes(ROWS_PER_GROUP):
                for row in chunk:
                    out.add(row)
                    status = row[STATUS]
                    ok += status == "ok"
                    failed += status == "failed"
                    if status != "ok":
                        reasons[row[REASON]] += 1
        rows = out.rows
        referenced = ledger.parts()
    finally:
        ledger.close()
    _write_index(ctx.path(PART_INDEX), parts_dir, referenced)
    stats = {
        "urls": urls,
        "fetched_now": pending,
        "rejudged": rejudged,
        "ok": ok,
        "rejected": dict(reasons),
        "retry_later": failed,
        "lost_parts": len(lost),
    }
    if failed:
        stats["pending"] = (
            f"{failed:,} URLs failed for transient reasons; the next run retries them "
            f"(each is given up after failing in {cfg.give_up_after_runs} runs)"
        )
    summary = f"{ok:,}/{urls:,} images ok ({pending:,} processed this run)"
    if reasons:
        summary += ", not stored: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common())
    if failed:
        summary += f"; {failed:,} transient failures will be retried on the next run"
    if lost:
        summary += f"; {len(lost):,} lost parts re-fetched"
    return StageResult(rows, stats, summary)


def _hit_batches(hits_path: Path) -> Iterator[tuple[list[str], list[str]]]:
    """The hits' URLs and backends, a record batch at a time."""
    for batch in iter_batches(hits_path, ["url", "backend"]):
        yield batch.column(0).to_pylist(), batch.column(1).to_pylist()


def parts_damage(config: Config, workdir: Workdir, record: object) -> str | None:
    """Parts are too large to digest on every `status`; a missing one or one of another size is
    found from the index, and the next fetch run fetches its images again."""
    index = _read_index(workdir.path(PART_INDEX))
    lost = _lost_parts(workdir.path(PARTS), set(index), index)
    if not lost:
        return None
    return f"{len(lost):,} of {len(index):,} parts missing or damaged (fetch will fetch their images again)"


def _read_index(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    data = orjson.loads(path.read_bytes())
    return {str(name): int(size) for name, size in data.get("parts", {}).items()}


def _write_index(path: Path, parts_dir: Path, referenced: set[str]) -> None:
    sizes = {name: (parts_dir / name).stat().st_size for name in sorted(referenced)}
    atomic_write_bytes(path, orjson.dumps({"parts": sizes}, option=orjson.OPT_INDENT_2))


def _lost_parts(parts_dir: Path, referenced: set[str], sizes: dict[str, int]) -> set[str]:
    """Referenced parts that are gone, or whose size differs from the one the last run recorded."""
    lost = set()
    for name in referenced:
        path = parts_dir / name
        if not path.is_file() or (name in sizes and path.stat().st_size != sizes[name]):
            lost.add(name)
    return lost


def _remove_unreferenced_parts(parts_dir: Path, referenced: set[str]) -> None:
    """Orphans of a killed run; only files named as this stage names its parts are touched."""
    if not parts_dir.is_dir():
        return
    for path in parts_dir.glob("*.tar"):
        if PART_NAME.match(path.name) and path.name not in referenced:
            path.unlink()


def _next_part_number(parts_dir: Path, params: str) -> int:
    names = [p.name for p in parts_dir.glob(f"{params}-*.tar")] if parts_dir.is_dir() else []
    numbers = [int(name[9:14]) for name in names if PART_NAME.match(name)]
    return max(numbers, default=-1) + 1
