"""Run fetch batches on this machine: asynchronous downloads overlapped with a decode pool.

One event loop and one HTTP client serve the whole stage, so connections are reused across
batches and per-host limits hold across them. Each URL is downloaded and then handed straight to
a decode worker; a few batches are in flight at once, so the slow tail of one batch (a host that
answers late) does not leave the decoders idle. Batches are committed in order.

Memory stays bounded: a URL takes a slot of `window` before its download starts and frees it only
when its image is decoded, so at most `window` bodies are held at any time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager

from kgclip.fetch.batch import WEB, Batch, Outcome, decode, unfetched
from kgclip.fetch.hostgate import HostGate
from kgclip.fetch.http import FetchPolicy, SafeFetcher
from kgclip.fetch.images import ImageOptions

Commit = Callable[[Batch, list[Outcome]], None]
BATCHES_AHEAD = 2  # batches started while the oldest is still running


def run_local(
    batches: Iterable[Batch],
    policy: FetchPolicy,
    opts: ImageOptions,
    workers: int,
    commit: Commit,
    gate: HostGate | None = None,
) -> None:
    asyncio.run(_run(batches, policy, opts, workers, commit, gate))


async def _run(
    batches: Iterable[Batch],
    policy: FetchPolicy,
    opts: ImageOptions,
    workers: int,
    commit: Commit,
    gate: HostGate | None,
) -> None:
    loop = asyncio.get_running_loop()
    window = asyncio.Semaphore(policy.global_concurrency + 4 * workers)
    running: deque[tuple[Batch, asyncio.Future[list[Outcome]]]] = deque()
    with _decoders(workers) as pool:
        async with SafeFetcher(policy, gate=gate) as fetcher:

            async def one(url: str, batch: Batch) -> Outcome:
                async with window:
                    if not url.startswith(WEB):
                        return await loop.run_in_executor(pool, decode, url, opts, batch.local.roots_for(url))
                    got = await fetcher.get(url)
                    if not got.ok or got.body is None:
                        return unfetched(got)
                    return await loop.run_in_executor(pool, decode, got, opts)

            try:
                for batch in batches:
                    running.append((batch, asyncio.gather(*(one(u, batch) for u in batch.urls))))
                    if len(running) > BATCHES_AHEAD:
                        done, outcomes = running.popleft()
                        commit(done, await outcomes)
                while running:
                    done, outcomes = running.popleft()
                    commit(done, await outcomes)
            finally:
                for _, outcomes in running:
                    outcomes.cancel()


@contextmanager
def _decoders(workers: int) -> Iterator[Executor]:
    """Processes for real parallelism; one worker is a thread, which still overlaps the downloads
    because Pillow releases the GIL while it decodes and encodes."""
    pool: Executor = ProcessPoolExecutor(workers) if workers > 1 else ThreadPoolExecutor(1)
    with pool:
        yield pool
