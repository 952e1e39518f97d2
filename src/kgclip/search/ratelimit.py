"""Per-backend politeness: a token bucket, a concurrency cap, server-imposed pauses, a daily quota.

A web API states its limits (requests per second or minute, per day) and enforces them with 429s;
kgclip stays under them instead of bouncing off them. `Retry-After` from the server pauses every
request to that backend, not just the one that got it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

SAFETY = 0.98


class QuotaExhausted(Exception):
    """The backend's daily quota (or the run's request budget) is used up; resume later."""


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        concurrency: int = 1,
        daily_quota: int | None = None,
        used_today: int = 0,
        budget: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        # 2% under the stated limit: clock and network jitter must not turn into 429s
        self.rate = rate_per_s * SAFETY
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._clock = clock
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self._gate = asyncio.Semaphore(concurrency)
        self.daily_quota = daily_quota
        self.used_today = used_today
        self.budget = budget
        self.sent = 0
        self._stopped: str | None = None

    def pause(self, seconds: float) -> None:
        """The server asked for a pause (Retry-After): nobody sends until it is over."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def stop(self, reason: str) -> None:
        """The server says a longer quota (monthly, say) is used up: no more requests this run."""
        self._stopped = reason

    def _check_quota(self) -> None:
        if self._stopped is not None:
            raise QuotaExhausted(self._stopped)
        if self.daily_quota is not None and self.used_today >= self.daily_quota:
            raise QuotaExhausted(f"daily quota of {self.daily_quota} requests used")
        if self.budget is not None and self.sent >= self.budget:
            raise QuotaExhausted(f"request budget of {self.budget} used (--max-requests)")

    async def _take(self) -> None:
        async with self._lock:
            while True:
                self._check_quota()
                now = self._clock()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    self.sent += 1
                    self.used_today += 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the concurrent slots and one token for the duration of a request."""
        async with self._gate:
            await self._take()
            yield
