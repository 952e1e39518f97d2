"""A polite SPARQL client for WDQS and QLever: serial, cached, retrying, identifiable.

WDQS bans clients that run queries in parallel or ignore 429s, and both endpoints ask for a
User-Agent with contact details (Wikimedia's policy). So: one query at a time, Retry-After
honoured, exponential backoff on 5xx, timeouts and garbled answers, and every successful
answer cached in SQLite so that a re-run of the stage sends no query at all.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from kgclip.retryafter import parse_retry_after
from kgclip.useragent import user_agent

ENDPOINTS = {
    "wdqs": "https://query.wikidata.org/sparql",
    "qlever": "https://qlever.dev/api/wikidata",
}
JSON_TYPE = "application/sparql-results+json"


class SparqlError(RuntimeError):
    """An endpoint that keeps failing, or a query it refuses; the message says which and why."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    dialect: str  # "wdqs" or "qlever"

    @classmethod
    def resolve(cls, endpoint: str, dialect: str | None) -> Endpoint:
        if endpoint in ENDPOINTS:
            return cls(ENDPOINTS[endpoint], dialect or endpoint)
        if dialect is None:
            raise SparqlError(
                f"endpoint {endpoint}: say which dialect it speaks (dialect = 'wdqs' or 'qlever')"
            )
        return cls(endpoint, dialect)


class SparqlCache:
    """Successful answers by (endpoint, query); the query text is the key, so any change re-asks."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers(key TEXT PRIMARY KEY, body BLOB NOT NULL, at REAL)"
        )

    @staticmethod
    def key(url: str, query: str) -> str:
        return hashlib.sha256(f"{url}\n{query}".encode()).hexdigest()

    def get(self, url: str, query: str) -> bytes | None:
        row = self._db.execute("SELECT body FROM answers WHERE key = ?", (self.key(url, query),)).fetchone()
        return row[0] if row else None

    def put(self, url: str, query: str, body: bytes) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (self.key(url, query), body, time.time())
            )

    def close(self) -> None:
        self._db.close()


class _Retry(Exception):
    def __init__(self, why: str, wait: float | None = None) -> None:
        super().__init__(why)
        self.wait = wait


class SparqlClient:
    def __init__(
        self,
        endpoint: Endpoint,
        contact: str,
        cache: SparqlCache | None = None,
        timeout: float = 60.0,
        attempts: int = 5,
        backoff: float = 2.0,
        max_wait: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.cache = cache
        self.attempts = attempts
        self.backoff = backoff
        self.max_wait = max_wait
        self.sleep = sleep
        self.sent = 0
        self._http = httpx.Client(
            headers={"User-Agent": user_agent(contact), "Accept": JSON_TYPE},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
        )

    def select(self, query: str) -> list[dict[str, Any]]:
        """The bindings of a SELECT query (W3C SPARQL-JSON), from the cache when possible."""
        body = self.cache.get(self.endpoint.url, query) if self.cache else None
        if body is None:
            body = self._ask(query)
            if self.cache:
                self.cache.put(self.endpoint.url, query, body)
        return orjson.loads(body)["results"]["bindings"]

    def _ask(self, query: str) -> bytes:
        failures: list[str] = []
        for attempt in range(self.attempts):
            try:
                return self._once(query)
            except _Retry as retry:
                failures.append(str(retry))
                if attempt + 1 == self.attempts:
                    break
                wait = retry.wait if retry.wait is not None else self.backoff * 2**attempt
                self.sleep(min(wait, self.max_wait))
        raise SparqlError(f"{self.endpoint.url}: gave up after {self.attempts} attempts: {_tally(failures)}")

    def _once(self, query: str) -> bytes:
        self.sent += 1
        try:
            if self.endpoint.dialect == "qlever":
                response = self._http.post(
                    self.endpoint.url,
                    content=query.encode(),
                    headers={"Content-Type": "application/sparql-query"},
                )
            else:
                response = self._http.post(self.endpoint.url, data={"query": query})
        except httpx.TimeoutException as exc:
            raise _Retry(f"timeout ({type(exc).__name__})") from None
        except httpx.ConnectError as exc:
            raise _Retry(f"cannot connect: {exc}") from None
        except httpx.TransportError as exc:
            raise _Retry(f"transport error: {exc}") from None
        status = response.status_code
        if status == 429:
            raise _Retry(
                "429 Too Many Requests", _retry_after(response.headers.get("Retry-After"), default=60.0)
            )
        if status >= 500:
            raise _Retry(f"HTTP {status}", _retry_after(response.headers.get("Retry-After"), default=None))
        if status != 200:
            raise SparqlError(f"{self.endpoint.url}: HTTP {status}: {response.text[:500]}")
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype not in (JSON_TYPE, "application/json"):
            raise _Retry(f"unexpected content type {ctype or 'none'}")
        body = response.content
        try:
            parsed = orjson.loads(body)
            parsed["results"]["bindings"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise _Retry(f"malformed SPARQL-JSON ({len(body)} bytes)") from None
        return body

    def close(self) -> None:
        self._http.close()


def _tally(failures: list[str]) -> str:
    """`HTTP 500; timeout`; a reason that repeats is said once with its count: `... (5 times)`."""
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure] = counts.get(failure, 0) + 1
    return "; ".join(why if n == 1 else f"{why} ({n} times)" for why, n in counts.items())


def _retry_after(value: str | None, default: float | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), else `default`."""
    seconds = parse_retry_after(value)
    return default if seconds is None else seconds
