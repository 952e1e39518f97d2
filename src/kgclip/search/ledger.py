"""The search ledger: every request's outcome is stored before it counts as done.

A SIGKILL loses at most the requests in flight, and a rerun never repeats a request whose
answer is already known, which matters when each request costs money or quota.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

import orjson

from kgclip.search.base import Found, Outcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests(
    backend TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL, failure TEXT,
    results BLOB, at REAL NOT NULL, PRIMARY KEY(backend, key));
CREATE TABLE IF NOT EXISTS usage(
    backend TEXT NOT NULL, day TEXT NOT NULL, requests INTEGER NOT NULL, PRIMARY KEY(backend, day));
"""


class SearchLedger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def get(self, backend: str, key: str) -> Outcome | None:
        """A final outcome, or None when the request was never answered or should be retried."""
        row = self._db.execute(
            "SELECT status, failure, results FROM requests WHERE backend = ? AND key = ?", (backend, key)
        ).fetchone()
        if row is None or row[0] == "retry":
            return None
        status, failure, results = row
        if status == "failed":
            return Outcome(failure=failure)
        return Outcome(results=[Found(**r) for r in orjson.loads(results)])

    def put(self, backend: str, key: str, outcome: Outcome) -> None:
        self.put_many(backend, [(key, outcome)])

    def put_many(self, backend: str, answers: list[tuple[str, Outcome]]) -> None:
        """Record several answers in one transaction."""
        now = time.time()
        rows = [
            (
                backend,
                key,
                "ok" if o.failure is None else ("retry" if o.retryable else "failed"),
                o.failure,
                orjson.dumps([asdict(r) for r in o.results]),
                now,
            )
            for key, o in answers
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?, ?)", rows)

    def add_usage(self, backend: str, requests: int) -> None:
        """HTTP requests sent today (UTC), so a daily quota holds across runs."""
        if requests:
            with self._db:
                self._db.execute(
                    "INSERT INTO usage VALUES (?, ?, ?) ON CONFLICT(backend, day) DO UPDATE"
                    " SET requests = requests + excluded.requests",
                    (backend, _today(), requests),
                )

    def used_today(self, backend: str) -> int:
        row = self._db.execute(
            "SELECT requests FROM usage WHERE backend = ? AND day = ?", (backend, _today())
        ).fetchone()
        return row[0] if row else 0

    def count(self, backend: str) -> int:
        return self._db.execute("SELECT count(*) FROM requests WHERE backend = ?", (backend,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())
