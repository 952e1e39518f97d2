"""Curate's shard jobs as Ray tasks (`[curate] executor = "ray"`): the grouping stays in this
process; each task writes whole shards from the spill folder and the fetch parts, which it reads
from the work directory (a file system every worker sees)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from kgclip.config import RayConfig
from kgclip.curate.plan import Plan
from kgclip.curate.samples import Lookups
from kgclip.curate.write import Done, Job, Layout, Runner, write_job
from kgclip.pipeline import PipelineError
from kgclip.raycluster import in_flight, ray_session, run_bounded


def ray_runner(made: Plan, lookups: Lookups, layout: Layout, cfg: RayConfig) -> Runner:
    def run(todo: Sequence[Job]) -> Iterator[Done]:
        with ray_session(cfg) as ray:
            shared = ray.put(made), ray.put(lookups)  # once, not once per task
            task = ray.remote(write_job).options(num_cpus=1, max_retries=cfg.task_retries)
            done = run_bounded(ray, lambda job: task.remote(job, *shared, layout), todo, in_flight(ray, cfg))
            try:
                for _, result in done:
                    yield result
            except ray.exceptions.RayTaskError as exc:
                raise PipelineError(f"curate: a shard task failed on Ray: {exc.cause or exc}") from None

    return run
