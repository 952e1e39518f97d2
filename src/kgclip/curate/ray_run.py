"""Curate on Ray (`[curate] executor = "ray"`): the blocks of the near-duplicate search and the
shard jobs as Ray tasks; the rest of the grouping stays in this process. A shard task reads the
spill folder and the fetch parts from the work directory (a file system every worker sees)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from kgclip.config import RayConfig
from kgclip.curate.hashindex import BlockMap, Table
from kgclip.curate.plan import Plan
from kgclip.curate.samples import Lookups
from kgclip.curate.shards import index_part
from kgclip.curate.write import Done, Job, Layout, Runner, write_job
from kgclip.pipeline import PipelineError
from kgclip.raycluster import in_flight, ray_session, run_bounded


def ray_runner(made: Plan, lookups: Lookups, layout: Layout, cfg: RayConfig) -> Runner:
    """Tasks that first index the fetch parts (every task reads a few members of every part, since
    samples come in pixel-hash order: reading each part's headers in each task would cost
    0.1 ms a picture per task), then write the jobs."""
    layout = replace(layout, indexes=layout.spill / "part-index")

    def run(todo: Sequence[Job], advance: Callable[[int], None]) -> Iterator[Done]:
        with ray_session(cfg) as ray:
            limit = in_flight(ray, cfg)
            with _task_errors(ray):
                parts = sorted(p.name for p in layout.parts.glob("*.tar"))
                chunks = [parts[i :: limit] for i in range(min(limit, len(parts)))]
                index = ray.remote(_index_parts).options(num_cpus=1, max_retries=cfg.task_retries)
                list(run_bounded(ray, lambda some: index.remote(some, layout), chunks, limit))  # all indexed
                shared = ray.put(made), ray.put(lookups)  # once, not once per task
                task = ray.remote(write_job).options(num_cpus=1, max_retries=cfg.task_retries)
                done = run_bounded(ray, lambda job: task.remote(job, *shared, layout), todo, limit)
                for job, result in done:
                    advance(len(job))
                    yield result

    return run


def _index_parts(parts: list[str], layout: Layout) -> None:
    assert layout.indexes is not None
    for name in parts:
        index_part(layout.parts / name, layout.indexes)


def ray_blocks(cfg: RayConfig) -> BlockMap:
    """The near-duplicate search's blocks as Ray tasks (the only part of the grouping whose time
    grows faster than the pictures: curate.md, Time); each chunk's table goes to the object store
    once."""

    def run(
        table: Table, queries: np.ndarray, starts: list[int], block: int, radius: int, above: bool
    ) -> list[np.ndarray]:
        with ray_session(cfg) as ray:
            shared = ray.put(table), ray.put(queries)
            task = ray.remote(_search_block).options(num_cpus=1, max_retries=cfg.task_retries)
            submit = lambda s: task.remote(*shared, s, block, radius, above)  # noqa: E731
            with _task_errors(ray):
                found = dict(run_bounded(ray, submit, starts, in_flight(ray, cfg)))
        return [found[s] for s in starts]

    return run


def _search_block(
    table: Table, queries: np.ndarray, start: int, block: int, radius: int, above: bool
) -> np.ndarray:
    return table.search_block(queries[start : start + block], start, radius, above)


@contextmanager
def _task_errors(ray: Any) -> Iterator[None]:
    """A task's failure as the pipeline's error, saying what the task said."""
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        raise PipelineError(f"curate: a task failed on Ray: {exc.cause or exc}") from None
