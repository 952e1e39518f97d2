"""The shared machinery of web image-search backends: keys, limits, retries, pagination.

A backend subclass says only how a query becomes request parameters and how a response becomes
results. Everything about being a polite, robust client lives here, once: the key is read from the
environment variable the config names (never logged, never part of a ledger key), requests go
through the backend's RateLimiter, 429 pauses the whole backend for Retry-After (seconds or an
HTTP date), 5xx, timeouts and garbled bodies are retried with backoff, an error a service reports
inside an HTTP 200 body is retried or recorded as the subclass judges it, and a rejected key stops
the stage instead of poisoning the ledger with thousands of failures. So does a service that
cannot be reached at all (no network, a wrong host name: `max_connect_failures` connection
attempts in a row fail), instead of crawling through every query's retries for days.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import orjson

from kgclip.config import WebBackendConfig
from kgclip.redact import protect, redact
from kgclip.retryafter import parse_retry_after
from kgclip.search.base import Found, Outcome
from kgclip.search.ratelimit import QuotaExhausted, RateLimiter
from kgclip.tables import Query
from kgclip.useragent import user_agent
from kgclip.workdir import digest_of


class SearchError(RuntimeError):
    """A backend that cannot be used at all (missing or rejected key, unreachable); the stage stops."""


class _Retry(Exception):
    pass


class Refused(Exception):
    """The service answered with an error that asking again will not fix; recorded as final."""


class WebBackend:
    name = "web"
    #: the most results one request can return
    page_size = 50
    #: the most results a query can reach by paging, when the service caps it
    max_results: int | None = None
    #: a backend that skips some results may page on, up to this many times the pages k needs
    page_factor = 1
    #: the service refuses anonymous requests: a key variable must be configured and set
    needs_key = False
    #: requests a query makes before its result pages (a name or taxon lookup)
    lookups = 0

    def __init__(self, cfg: WebBackendConfig, used_today: int = 0) -> None:
        self.cfg = cfg
        self.key = ""
        if self.needs_key and not cfg.api_key_env:
            raise SearchError(f"{self.name}: needs a key: set api_key_env to the name of its variable")
        if cfg.api_key_env:
            self.key = os.environ.get(cfg.api_key_env, "")
            if not self.key:
                raise SearchError(f"{self.name}: the API key variable {cfg.api_key_env} is not set")
            protect(self.key)
        self.limiter = RateLimiter(
            cfg.rate_per_s, cfg.burst, cfg.concurrency, cfg.daily_quota, used_today, cfg.max_requests
        )
        self.max_concurrency = cfg.concurrency
        #: requests that reached the service (a connection that failed sent nothing)
        self.requests = 0
        self._unreached = 0  # connection attempts failed in a row, across all queries
        self._http: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """Made on first use, inside the event loop that will use it."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                headers={"User-Agent": user_agent(self.cfg.contact), "Accept": "application/json"},
                timeout=httpx.Timeout(self.cfg.timeout_s, connect=min(self.cfg.timeout_s, 10.0)),
            )
        return self._http

    # -- what a subclass provides -------------------------------------------------------------

    def endpoint(self) -> str:
        raise NotImplementedError

    def params(self, query: Query, k: int, page: int) -> dict[str, Any]:
        """Request parameters for one page (0-based) of a query, without the key."""
        raise NotImplementedError

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, params) that carry the key; kept out of ledger keys and logs."""
        return {}, {}

    def parse(self, data: Any) -> tuple[list[Found], bool]:
        """Results of one response, and whether more pages exist."""
        raise NotImplementedError

    def api_error(self, data: Any) -> tuple[str, bool] | None:
        """An error the service reports inside an HTTP 200 body: (reason, retryable), or None."""
        return None

    def observe(self, response: httpx.Response) -> None:
        """Sees every HTTP response, e.g. to honour a service's own rate-limit headers."""

    # -- the SearchBackend protocol -----------------------------------------------------------

    def fingerprint(self) -> str:
        return digest_of(self.name, self.cfg.base_url)

    def request_key(self, query: Query, k: int) -> str:
        pages = [self.params(query, k, p) for p in range(self._pages(k))]
        return digest_of(
            self.name, self.cfg.base_url, orjson.dumps(pages, option=orjson.OPT_SORT_KEYS).decode()
        )

    def _pages(self, k: int) -> int:
        return -(-min(k, self.max_results or k) // self.page_size)

    def most_requests(self, k: int) -> int:
        """The most requests one query can take, retries aside: its lookups and every page it may
        read (fewer when the results run out first)."""
        return self.lookups + self.page_factor * self._pages(k)

    async def search(self, query: Query, k: int) -> Outcome:
        try:
            found = await self.collect(query, k)
        except QuotaExhausted as exc:
            return Outcome(failure=f"quota: {exc}", retryable=True)
        except _Retry as exc:
            return Outcome(failure=redact(str(exc)), retryable=True)
        except Refused as exc:
            return Outcome(failure=redact(str(exc)))
        return Outcome(results=_unique(found)[:k])

    async def collect(self, query: Query, k: int) -> list[Found]:
        """Page through one query; a service that needs a lookup first overrides this."""
        found: list[Found] = []
        for page in range(self.page_factor * self._pages(k)):
            results, more = self.parse(await self.get_json(self.params(query, k, page)))
            found.extend(results)
            if not more or len(found) >= k:
                break
        return found

    async def get_json(self, params: dict[str, Any], url: str | None = None) -> Any:
        """One GET to `url` (default: the endpoint), with limits, retries and the key added."""
        headers, key_params = self.auth()
        failures = []
        for attempt in range(self.cfg.max_retries + 1):
            async with self.limiter.slot():
                try:
                    response = await self.client().get(
                        url or self.endpoint(), params={**params, **key_params}, headers=headers
                    )
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    self._not_reached(exc)
                    failures.append(f"connect: {type(exc).__name__}")
                    response = None
                except httpx.TimeoutException:
                    self._reached()
                    failures.append("timeout")
                    response = None
                except httpx.TransportError as exc:
                    self._reached()
                    failures.append(f"transport: {type(exc).__name__}")
                    response = None
            if response is not None:
                self._reached()
                self.observe(response)
                data, wait = self._judge(response, failures)
                if wait is None:
                    return data
                self.limiter.pause(wait)
            elif attempt < self.cfg.max_retries:
                await asyncio.sleep(min(self.cfg.backoff_s * 2**attempt, 60.0))
        raise _Retry(f"{self.name}: gave up after {self.cfg.max_retries + 1} attempts: {'; '.join(failures)}")

    def _reached(self) -> None:
        """A request got through to the service (whatever came of it): it counts as sent."""
        self.requests += 1
        self._unreached = 0

    def _not_reached(self, exc: httpx.TransportError) -> None:
        """One more connection attempt failed; after `max_connect_failures` in a row the service is
        taken as unreachable and the stage stops. The queries not answered stay unanswered in the
        ledger, so a rerun asks them once the service can be reached."""
        self._unreached += 1
        if self._unreached >= self.cfg.max_connect_failures:
            host = httpx.URL(self.endpoint()).host
            reason = redact(
                f"{self.name}: cannot reach {host}: {self._unreached} connection attempts in a row "
                f"failed, the last with {type(exc).__name__}: {exc or 'no detail'}"
            )
            self.limiter.stop(reason)  # queries waiting for a slot send nothing more
            raise SearchError(reason)

    def _judge(self, response: httpx.Response, failures: list[str]) -> tuple[Any, float | None]:
        """(body, None) when the response is usable; else (None, how long to pause before the next try)."""
        status = response.status_code
        if status in (401, 403):
            raise SearchError(f"{self.name}: HTTP {status}: the API key or access was refused")
        backoff = self.cfg.backoff_s * 2 ** len(failures)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429 or status >= 500:
            failures.append(f"HTTP {status}")
            return None, retry_after or backoff
        if status != 200:
            raise _Retry(f"{self.name}: HTTP {status}: {response.text[:200]}")
        ctype = response.headers.get("Content-Type", "")
        if "json" not in ctype:
            failures.append(f"content type {ctype or 'none'}")
            return None, backoff
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            failures.append("malformed JSON")
            return None, backoff
        if not isinstance(data, dict):
            failures.append("JSON that is not an object")
            return None, backoff
        error = self.api_error(data)
        if error is None:
            return data, None
        reason, retryable = error
        if not retryable:
            raise Refused(f"{self.name}: {reason}")
        failures.append(reason)
        return None, retry_after or backoff

    def close(self) -> None:
        """Nothing to do outside the event loop: `aclose` ends the HTTP client inside it."""

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _unique(found: list[Found]) -> list[Found]:
    seen: set[str] = set()
    out = []
    for f in found:
        if f.url not in seen:
            seen.add(f.url)
            out.append(f)
    return out
