"""The fetch stage: every hit URL read, validated and normalised into tar parts, resumably.

Work goes in batches; a batch's images go into one tar part written atomically, and only
then are its outcomes committed to the ledger. A killed run therefore resumes at the first
batch that was not committed, and no image is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import os
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq

from kgclip.config import FetchConfig
from kgclip.fetch.http import FetchPolicy, FetchResult, SafeFetcher
from kgclip.fetch.images import ImageOptions, Normalized, Rejection, normalize
from kgclip.fetch.ledger import FetchLedger
from kgclip.fetch.sources import read_source
from kgclip.pipeline import StageContext, StageResult
from kgclip.progress import console, meter
from kgclip.tables import Fetched, write_records
from kgclip.tario import add_member
from kgclip.useragent import PROJECT_URL, user_agent
from kgclip.workdir import atomic_path, digest_of

T = TypeVar("T")
LEDGER = "cache/fetch.sqlite"
PARTS = "parts"


WEB = ("http://", "https://")


@dataclass(frozen=True)
class Unfetched:
    """A web URL whose bytes never arrived: refused for good, or failed for now (retried later)."""

    reason: str
    retryable: bool


def process(item: str | FetchResult, opts: ImageOptions) -> Normalized | Rejection | Unfetched:
    """Runs in a worker process: read a local file or take downloaded bytes, then validate and
    normalise them."""
    if isinstance(item, FetchResult):
        if not item.ok or item.body is None:
            return Unfetched(item.reason, item.retryable)
        return normalize(item.body, opts)
    data = read_source(item, opts.max_bytes)
    return data if isinstance(data, Rejection) else normalize(data, opts)


def policy_of(cfg: FetchConfig) -> FetchPolicy:
    return FetchPolicy(
        allow_loopback=cfg.allow_loopback,
        allow_private=cfg.allow_private,
        max_redirects=cfg.max_redirects,
        total_timeout=cfg.timeout_s,
        max_bytes=cfg.max_bytes,
        per_host_concurrency=cfg.per_host_concurrency,
        per_host_rate_per_s=cfg.per_host_rate_per_s,
        global_concurrency=cfg.global_concurrency,
        max_retries=cfg.max_retries,
        honour_x_robots=cfg.honour_x_robots,
        user_agent=user_agent(cfg.contact or PROJECT_URL),
    )


async def download(urls: list[str], policy: FetchPolicy) -> dict[str, FetchResult]:
    async with SafeFetcher(policy) as fetcher:
        results = await asyncio.gather(*(fetcher.get(u) for u in urls))
    return dict(zip(urls, results, strict=True))


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.fetch
    opts = ImageOptions.from_config(cfg)
    policy = policy_of(cfg)
    params = digest_of(*(f"{k}={v}" for k, v in sorted(asdict(opts).items())))[:8]
    urls = _unique_urls(ctx.path("hits.parquet"))
    ledger = FetchLedger(ctx.path(LEDGER), params)
    try:
        dropped = ledger.drop_other_params()
        if dropped:
            console.print(f"fetch: image settings changed, {dropped:,} earlier outcomes dropped")
        parts_dir = ctx.path(PARTS)
        _remove_unreferenced_parts(parts_dir, ledger.parts())
        done = ledger.done_urls()
        pending = [u for u in urls if u not in done]
        next_part = _next_part_number(parts_dir, params)
        workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(pending)))
        with meter("fetch", len(pending)) as m, _executor(workers) as pool:
            for start in range(0, len(pending), cfg.batch_size):
                batch = pending[start : start + cfg.batch_size]
                part = f"{params}-{next_part:05d}.tar"
                web = [u for u in batch if u.startswith(WEB)]
                downloaded = asyncio.run(download(web, policy)) if web else {}
                items = [downloaded.get(u, u) for u in batch]
                results = pool.map(
                    process, items, [opts] * len(batch), chunksize=max(1, len(batch) // (4 * workers))
                )
                rows = _write_part(parts_dir / part, part, next_part, batch, results)
                ledger.record(rows)
                next_part += 1
                m.advance(len(batch))
        rows = ledger.outcomes(urls)
    finally:
        ledger.close()
    write_records(ctx.path("fetched.parquet"), rows, Fetched)
    reasons = Counter(r.reason for r in rows if r.status != "ok")
    ok = sum(r.status == "ok" for r in rows)
    failed = sum(r.status == "failed" for r in rows)
    stats = {
        "urls": len(urls),
        "fetched_now": len(pending),
        "ok": ok,
        "rejected": dict(reasons),
        "retry_later": failed,
    }
    summary = f"{ok:,}/{len(urls):,} images ok ({len(pending):,} processed this run)"
    if reasons:
        summary += ", not stored: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common())
    if failed:
        summary += f"; {failed:,} transient failures will be retried on the next run"
    return StageResult(len(rows), stats, summary)


def _unique_urls(hits_path: Path) -> list[str]:
    seen: dict[str, None] = {}
    for url in pq.read_table(hits_path, columns=["url"]).column("url").to_pylist():
        seen.setdefault(url, None)
    return list(seen)


@contextmanager
def _executor(workers: int) -> Iterator[Executor | _Inline]:
    if workers <= 1:
        yield _Inline()
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield pool


class _Inline:
    """The executor interface without processes, for one worker (and for debugging)."""

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], chunksize: int = 1) -> Iterator[T]:
        return map(fn, *iterables)


def _unstored(url: str, status: str, reason: str, detail: str) -> Fetched:
    """The row of a URL whose image was not stored: only the outcome, no part or sizes."""
    return Fetched(url, status, reason, detail, None, None, None, None, None, None, None, None, None)


def _write_part(path: Path, part: str, number: int, urls: list[str], results: Iterator) -> list[Fetched]:
    rows: list[Fetched] = []
    with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
        for i, (url, res) in enumerate(zip(urls, results, strict=True)):
            if isinstance(res, Unfetched):
                rows.append(
                    _unstored(
                        url, "failed" if res.retryable else "rejected", res.reason.split(":")[0], res.reason
                    )
                )
                continue
            if isinstance(res, Rejection):
                rows.append(_unstored(url, "rejected", str(res.reason), res.detail))
                continue
            member = f"{number:05d}{i:05d}"
            add_member(tar, f"{member}.jpg", res.jpeg)
            rows.append(
                Fetched(
                    url,
                    "ok",
                    None,
                    None,
                    part,
                    member,
                    res.orig_width,
                    res.orig_height,
                    res.width,
                    res.height,
                    len(res.jpeg),
                    res.source_sha256,
                    res.pixel_sha256,
                )
            )
    return rows


def _remove_unreferenced_parts(parts_dir: Path, referenced: set[str]) -> None:
    if not parts_dir.is_dir():
        return
    for path in parts_dir.glob("*.tar"):
        if path.name not in referenced:
            path.unlink()


def _next_part_number(parts_dir: Path, params: str) -> int:
    numbers = (
        [int(p.stem.split("-")[1]) for p in parts_dir.glob(f"{params}-*.tar")] if parts_dir.is_dir() else []
    )
    return max(numbers, default=-1) + 1
