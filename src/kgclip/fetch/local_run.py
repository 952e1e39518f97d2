"""Run fetch batches on this machine: asynchronous downloads overlapped with a decode pool.

One event loop and one HTTP client serve the whole stage, so connections are reused across
batches and per-host limits hold across them. Each URL is downloaded and then handed straight to
a decode worker; a few batches are in flight at once, so the slow tail of one batch (a host that
answers late) does not leave the decoders idle. Batches are committed in order.

Memory stays bounded: a URL takes a slot of `window` when its host's turn comes, before its request
is sent, and frees it only when its image is decoded, so at most `window` bodies are held at any
time; URLs still queued for a busy host hold no slot, so they cannot keep idle hosts waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager

from kgclip.fetch.batch import WEB, Batch, Outcome, decode, unfetched
from kgclip.fetch.hostgate import HostGate
from kgclip.fetch.http import FetchPolicy, SafeFetcher
from kgclip.fetch.images import ImageOptions
from kgclip.fetch.resample import load_kernels
from kgclip.workers import process_pool

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
                if not url.startswith(WEB):
                    async with window:
                        return await loop.run_in_executor(pool, decode, url, opts, batch.local.roots_for(url))
                # the window is taken once the host's turn comes and held until the body is decoded
                got = await fetcher.get(url, admit=window)
                if not got.ok or got.body is None:
                    return unfetched(got)
                try:
                    return await loop.run_in_executor(pool, decode, got, opts)
                finally:
                    window.release()

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
                # Interrupted or failed: stop the batches still running and collect their ends, so
                # nothing is left to report "exception was never retrieved".
                unfinished = [outcomes for _, outcomes in running]
                for outcomes in unfinished:
                    outcomes.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)


@contextmanager
def _decoders(workers: int) -> Iterator[Executor]:
    """Processes for real parallelism; one worker is a thread, which still overlaps the downloads
    because Pillow releases the GIL while it decodes and encodes. The resize kernels are loaded
    before the processes fork, so they start with them."""
    load_kernels()
    pool: Executor = process_pool(workers) if workers > 1 else ThreadPoolExecutor(1)
    with pool:
        yield pool
