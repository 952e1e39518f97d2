"""Curate's shard jobs as Ray tasks (`[curate] executor = "ray"`): the grouping stays in this
process; each task writes whole shards from the spill folder and the fetch parts, which it reads
from the work directory (a file system every worker sees)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from kgclip.config import RayConfig
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
            try:
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
            except ray.exceptions.RayTaskError as exc:
                raise PipelineError(f"curate: a task failed on Ray: {exc.cause or exc}") from None

    return run


def _index_parts(parts: list[str], layout: Layout) -> None:
    assert layout.indexes is not None
    for name in parts:
        index_part(layout.parts / name, layout.indexes)
