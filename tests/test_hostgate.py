"""Per-host politeness shared by every worker: the local gate, and the lease-based gate that Ray
tasks share (tested here as a plain object; test_harvest_web.py runs it inside Ray)."""

import asyncio
import itertools
import time

import pytest

from kgclip.fetch.hostgate import LocalHostGate, host_slot
from kgclip.fetch.ray_run import GateActor


def test_local_gate_limits_concurrency_per_host_only():
    gate = LocalHostGate(concurrency=2, rate_per_s=0)
    active: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}

    async def request(host: str) -> None:
        async with host_slot(gate, host):
            active[host] += 1
            peak[host] = max(peak[host], active[host])
            await asyncio.sleep(0.01)
            active[host] -= 1

    async def go() -> None:
        await asyncio.gather(*(request(h) for h in "ab" * 6))

    asyncio.run(go())
    assert peak == {"a": 2, "b": 2}


def test_local_gate_spaces_request_starts_and_honours_pauses():
    gate = LocalHostGate(concurrency=10, rate_per_s=50)
    starts: list[float] = []

    async def go() -> None:
        async def one() -> None:
            async with host_slot(gate, "h"):
                starts.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(5)))
        await gate.pause("h", 0.2)
        paused_at = time.monotonic()
        await one()
        assert starts[-1] - paused_at >= 0.19

    asyncio.run(go())
    gaps = [b - a for a, b in itertools.pairwise(starts[:5])]
    assert min(gaps) >= 0.018  # 50 per second


def test_gate_rejects_zero_concurrency():
    with pytest.raises(ValueError, match="at least 1"):
        LocalHostGate(concurrency=0, rate_per_s=1)


def test_shared_gate_takes_back_the_slot_of_a_task_that_died():
    """A Ray task killed while it holds a slot never releases it; its lease runs out instead."""
    gate = GateActor(concurrency=1, rate_per_s=0, lease_s=0.3)

    async def go() -> tuple[float, int]:
        await gate.acquire("h")  # held by a task that then dies
        began = time.monotonic()
        lease = await gate.acquire("h")  # waits until the dead task's lease expires
        waited = time.monotonic() - began
        await gate.release(lease)
        await gate.release(lease)  # a second release of the same lease is ignored
        return waited, len(gate._leases)

    waited, held = asyncio.run(go())
    assert 0.25 <= waited < 3.0
    assert held == 0


def test_shared_gate_releases_in_any_order_and_counts_per_host():
    gate = GateActor(concurrency=2, rate_per_s=0, lease_s=60)

    async def go() -> None:
        first = await gate.acquire("a")
        second = await gate.acquire("a")
        other = await gate.acquire("b")  # another host is not blocked by a's slots
        third = asyncio.ensure_future(gate.acquire("a"))
        await asyncio.sleep(0.05)
        assert not third.done()
        await gate.release(first)
        lease = await asyncio.wait_for(third, 2)
        for held in (second, other, lease):
            await gate.release(held)

    asyncio.run(go())


def test_local_gate_gives_up_waiting_and_keeps_nothing():
    """A wait that times out, for a slot or for a rate token, must not keep a slot: otherwise every
    queue timeout would shrink the host's concurrency for good."""
    gate = LocalHostGate(concurrency=2, rate_per_s=2)

    async def go() -> None:
        await gate.acquire("h")  # a slot and the first token
        with pytest.raises(TimeoutError):
            await gate.acquire("h", timeout=0.1)  # a slot is free, the next token is 0.5 s away
        await gate.acquire("h", timeout=2)  # the second slot is still there
        with pytest.raises(TimeoutError):
            await gate.acquire("h", timeout=0.1)  # both slots taken
        await gate.release("h")
        await gate.release("h")
        await gate.acquire("h", timeout=2)
        await gate.acquire("h", timeout=2)

    asyncio.run(go())


def test_shared_gate_answers_none_when_the_wait_runs_out():
    """The actor keeps the caller's deadline itself: a caller that gave up is never granted a lease."""
    gate = GateActor(concurrency=1, rate_per_s=0, lease_s=60)

    async def go() -> None:
        held = await gate.acquire("h")
        began = time.monotonic()
        assert await gate.acquire("h", 0.2) is None
        assert 0.15 <= time.monotonic() - began < 1.0
        assert list(gate._leases) == [held]
        await gate.release(held)
        assert isinstance(await gate.acquire("h", 0.2), int)

    asyncio.run(go())
