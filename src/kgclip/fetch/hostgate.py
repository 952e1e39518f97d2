"""Per-host politeness: how many requests a host may have open, how often one may start, and
Retry-After pauses.

The limits must hold for the whole harvest, not per worker: a host that asked for 2 requests a
second must not get 2 per Ray task. So the fetcher only talks to a `HostGate`; on one machine
that is a `LocalHostGate` inside the event loop, and on Ray every task reaches one shared gate
actor (fetch/ray_run.py), which holds a `LocalHostGate` itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol


class HostGate(Protocol):
    async def acquire(self, host: str, timeout: float | None = None) -> None:
        """Wait for a free connection slot of `host` and for its next rate token.

        Raises TimeoutError, holding nothing, when both did not come within `timeout` seconds: a
        request must be able to give up waiting for a host that is slow or paused.
        """

    async def release(self, host: str) -> None:
        """Give back the slot taken by `acquire`."""

    async def pause(self, host: str, seconds: float) -> None:
        """Start no new request to `host` for `seconds` (a Retry-After answer)."""


@asynccontextmanager
async def host_slot(gate: HostGate, host: str, timeout: float | None = None) -> AsyncIterator[None]:
    """Hold a slot of `host` for the body; TimeoutError (from entering) when none came in time."""
    await gate.acquire(host, timeout)
    try:
        yield
    finally:
        await gate.release(host)


class _Host:
    def __init__(self, concurrency: int, rate_per_s: float) -> None:
        self.slots = asyncio.Semaphore(concurrency)
        self.lock = asyncio.Lock()
        self.next_start = 0.0  # monotonic time of the next token
        self.paused_until = 0.0
        self.interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0

    async def wait_turn(self) -> None:
        """A token bucket of depth one: at most `rate` request starts per second, after any pause."""
        async with self.lock:
            while True:
                now = time.monotonic()
                start = max(now, self.next_start, self.paused_until)
                if start <= now:
                    break
                await asyncio.sleep(start - now)
            self.next_start = max(now, self.next_start) + self.interval


class LocalHostGate:
    """The gate for one event loop; every host gets the same concurrency and rate."""

    def __init__(self, concurrency: int, rate_per_s: float) -> None:
        if concurrency < 1:
            raise ValueError("per-host concurrency must be at least 1")
        self._concurrency = concurrency
        self._rate = rate_per_s
        self._hosts: dict[str, _Host] = {}

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(self._concurrency, self._rate)
        return state

    async def acquire(self, host: str, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._acquire(self._host(host))

    @staticmethod
    async def _acquire(state: _Host) -> None:
        await state.slots.acquire()
        try:
            await state.wait_turn()
        except BaseException:  # cancelled (a timeout) while waiting for the token: no slot is kept
            state.slots.release()
            raise

    async def release(self, host: str) -> None:
        self.release_now(host)

    def release_now(self, host: str) -> None:
        """`release` for callers outside a coroutine; giving a slot back never waits."""
        self._host(host).slots.release()

    async def pause(self, host: str, seconds: float) -> None:
        state = self._host(host)
        state.paused_until = max(state.paused_until, time.monotonic() + seconds)
