"""Corpus queries as Ray tasks (`search.executor = "ray"`).

Only the corpus backend is spread: its cost is CPU (full-text search over a local index), which
more workers divide. Web backends stay on the driver, whatever the executor: their pace is set by
each service's rate limit and daily quota for one key, which one limiter and one ledger must
count, so more workers would only add ways to break a service's terms. Workers read the index
from the same path, so on a cluster it must be on a shared file system.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kgclip.config import RayConfig
from kgclip.progress import meter
from kgclip.raycluster import in_flight, ray_session, run_bounded
from kgclip.search.base import Outcome
from kgclip.search.corpus import CorpusBackend
from kgclip.tables import Query

CHUNK = 1000  # queries per task: milliseconds each, so a task is a second or two of work


def search_corpus_on_ray(
    index: Path,
    matching: tuple[str, bool | str, Path | None],
    queries: list[Query],
    k: int,
    cfg: RayConfig,
    record: Callable[[list[tuple[Query, Outcome]]], None],
) -> None:
    chunks = [queries[i : i + CHUNK] for i in range(0, len(queries), CHUNK)]
    with ray_session(cfg) as ray, meter("search (corpus, on Ray)", len(queries)) as m:
        task = ray.remote(search_chunk).options(num_cpus=1, max_retries=cfg.task_retries)
        path = str(index.resolve())

        def submit(chunk: list[Query]) -> object:
            return task.remote(path, matching, chunk, k)

        for chunk, outcomes in run_bounded(ray, submit, chunks, in_flight(ray, cfg)):
            record(list(zip(chunk, outcomes, strict=True)))
            m.advance(len(chunk))


def search_chunk(
    index: str, matching: tuple[str, bool | str, Path | None], queries: list[Query], k: int
) -> list[Outcome]:
    """A Ray task: one chunk of queries against the index, matched as configured (`match`,
    `match_categories`)."""
    backend = CorpusBackend(Path(index), *matching)
    try:
        return [backend.search_now(q, k) for q in queries]
    finally:
        backend.close()
