"""Run fetch batches as Ray tasks, on this machine or on a cluster (`executor = "ray"`).

Each batch is one task that runs the local pipeline (fetch/local_run.py) with a single decoder;
the driver keeps the ledger and writes every tar part, so resuming, part names and the final
shards are exactly those of a local run. Tasks return their images to the driver, so workers
need no shared file system for the output (local-file hits must be readable on the workers).

Politeness holds across the cluster: every task asks one gate actor for per-host slots and rate
tokens. A task that dies while holding a slot cannot give it back, so slots are leases that the
actor takes back after the longest time a slot may legitimately be held: the wait for a global
slot that follows it (bounded by the queue timeout) plus one request (bounded by the request
timeout). A task that gives up waiting tells the actor how long it waits, so the actor never
grants a slot to a caller that has left.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

from kgclip.config import RayConfig
from kgclip.fetch.batch import Batch, Outcome
from kgclip.fetch.hostgate import LocalHostGate
from kgclip.fetch.http import FetchPolicy
from kgclip.fetch.images import ImageOptions
from kgclip.fetch.local_run import Commit, run_local
from kgclip.raycluster import in_flight, ray_session, run_bounded

_LEASE_MARGIN_S = 30.0


def run_ray(
    batches: Iterable[Batch], policy: FetchPolicy, opts: ImageOptions, cfg: RayConfig, commit: Commit
) -> None:
    with ray_session(cfg) as ray:
        lease_s = policy.queue_timeout + policy.total_timeout + _LEASE_MARGIN_S
        gate = (
            ray.remote(GateActor)
            .options(max_concurrency=10_000, num_cpus=0)
            .remote(policy.per_host_concurrency, policy.per_host_rate_per_s, lease_s)
        )
        task = ray.remote(fetch_batch).options(num_cpus=1, max_retries=cfg.task_retries)
        done = run_bounded(ray, lambda b: task.remote(b, policy, opts, gate), batches, in_flight(ray, cfg))
        for batch, outcomes in done:
            commit(batch, outcomes)


def fetch_batch(batch: Batch, policy: FetchPolicy, opts: ImageOptions, gate: Any) -> list[Outcome]:
    """A Ray task: one batch through the local pipeline, host limits from the shared gate."""
    out: list[Outcome] = []

    def keep(_batch: Batch, outcomes: list[Outcome]) -> None:
        out.extend(outcomes)

    run_local([batch], policy, opts, 1, keep, gate=ActorGate(gate))
    return out


class ActorGate:
    """The HostGate of one task: every call goes to the shared gate actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor
        self._leases: dict[str, list[int]] = {}

    async def acquire(self, host: str, timeout: float | None = None) -> None:
        lease = await self._actor.acquire.remote(host, timeout)
        if lease is None:
            raise TimeoutError(f"no slot of {host} within {timeout} s")
        self._leases.setdefault(host, []).append(lease)

    async def release(self, host: str) -> None:
        await self._actor.release.remote(self._leases[host].pop())

    async def pause(self, host: str, seconds: float) -> None:
        await self._actor.pause.remote(host, seconds)


class GateActor:
    """Ray's async actor around one LocalHostGate, with leases instead of bare slots."""

    def __init__(self, concurrency: int, rate_per_s: float, lease_s: float) -> None:
        self._gate = LocalHostGate(concurrency, rate_per_s)
        self._lease_s = lease_s
        self._leases: dict[int, tuple[str, float]] = {}
        self._ids = itertools.count()

    async def acquire(self, host: str, timeout: float | None = None) -> int | None:
        """A lease on a slot of `host`, or None when none came within `timeout` seconds.

        The caller's deadline is kept here rather than by cancelling the remote call, which would
        leave a granted slot with nobody to release it until its lease ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._reclaim()  # at least once a second, so a dead task's lease frees its slot
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            try:
                await self._gate.acquire(host, max(wait, 0.0))
                break
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        lease = next(self._ids)
        self._leases[lease] = (host, time.monotonic() + self._lease_s)
        return lease

    async def release(self, lease: int) -> None:
        held = self._leases.pop(lease, None)
        if held is not None:  # already reclaimed if the holder overran its lease
            self._gate.release_now(held[0])

    async def pause(self, host: str, seconds: float) -> None:
        await self._gate.pause(host, seconds)

    def _reclaim(self) -> None:
        now = time.monotonic()
        for lease, (host, deadline) in list(self._leases.items()):
            if deadline < now:
                del self._leases[lease]
                self._gate.release_now(host)
