"""The fetch ledger: one row per URL, committed only after its tar part is safely on disk.

That ordering is what makes fetch survive SIGKILL: a part without ledger rows is an orphan
that the next run deletes and redoes; ledger rows always point at a complete part.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from kgclip.tables import Fetched

COLUMNS = [
    "url",
    "status",
    "reason",
    "detail",
    "part",
    "member",
    "orig_width",
    "orig_height",
    "width",
    "height",
    "bytes",
    "source_sha256",
    "pixel_sha256",
    "source_bytes",
    "http_status",
    "attempts",
    "download_s",
    "decode_s",
    "phash",
    "colour",
    "runs",
]
TEMP_CACHE_KIB = 8192  # page cache of the temporary tables: bounded, whatever their size
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS outcomes(
    url TEXT PRIMARY KEY, params TEXT NOT NULL, {", ".join(COLUMNS[1:])}, at REAL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclasses.dataclass(frozen=True)
class Switch:
    """A policy switch that decides outcomes: the refusals it makes when it is at its strict value
    (the client's reasons, which the ledger keeps as the detail of a `rejected` row). Turned loose,
    those refusals are asked again; turned strict, the images downloaded while it was loose are
    (kgclip does not record which address or header let each one through, so every web image
    stored then is judged again)."""

    name: str
    strict: bool
    refusals: tuple[str, ...]


SWITCHES = (
    Switch("allow_loopback", False, ("blocked_address:loopback",)),
    Switch("allow_private", False, ("blocked_address:private", "blocked_address:shared")),
    Switch("honour_x_robots", True, ("x_robots_tag",)),
)


class FetchLedger:
    def __init__(self, path: Path, params: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.params = params
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._add_new_columns()

    def _add_new_columns(self) -> None:
        """A ledger written by an older kgclip lacks the later measurement columns; they stay NULL."""
        present = {row[1] for row in self._db.execute("PRAGMA table_info(outcomes)")}
        with self._db:
            for column in COLUMNS:
                if column not in present:
                    self._db.execute(f"ALTER TABLE outcomes ADD COLUMN {column}")

    def drop_other_params(self) -> int:
        """Outcomes made with other image settings no longer describe what this run would store."""
        with self._db:
            return self._db.execute("DELETE FROM outcomes WHERE params != ?", (self.params,)).rowcount

    def rejudge(self, switches: dict[str, bool]) -> dict[str, int]:
        """Forget the outcomes that a policy switch decided and that its value now would decide
        otherwise; returns how many per switch (`name=value`). Refusals a switch made are
        forgotten whenever it is loose (also those of a ledger older than this record); images
        stored while a switch was loose, when it is strict again. The switches are then recorded,
        in the same transaction."""
        found = self._db.execute("SELECT value FROM meta WHERE key = 'switches'").fetchone()
        before: dict[str, bool] = orjson.loads(found[0]) if found else {}
        forgotten: dict[str, int] = {}
        with self._db:
            for switch in SWITCHES:
                now = switches[switch.name]
                if now != switch.strict:
                    marks = ", ".join("?" * len(switch.refusals))
                    count = self._db.execute(
                        f"DELETE FROM outcomes WHERE status = 'rejected' AND detail IN ({marks})",
                        switch.refusals,
                    ).rowcount
                elif before.get(switch.name, switch.strict) != switch.strict:
                    count = self._db.execute(
                        "DELETE FROM outcomes WHERE status = 'ok'"
                        " AND (url LIKE 'http://%' OR url LIKE 'https://%')"
                    ).rowcount
                else:
                    count = 0
                if count:
                    forgotten[f"{switch.name}={str(now).lower()}"] = count
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('switches', ?)", (orjson.dumps(switches).decode(),)
            )
        return forgotten

    def done_urls(self) -> set[str]:
        """URLs with a final outcome; transient failures are not, so a rerun asks them again."""
        return {r[0] for r in self._db.execute("SELECT url FROM outcomes WHERE status != 'failed'")}

    def forget_unstored(self) -> int:
        """Drop every outcome that stored no image (refusals included), so all are asked again."""
        with self._db:
            return self._db.execute("DELETE FROM outcomes WHERE status != 'ok'").rowcount

    def parts(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT DISTINCT part FROM outcomes WHERE part IS NOT NULL")}

    def forget_parts(self, parts: Iterable[str]) -> int:
        """Forget the outcomes stored in these parts (gone or damaged), so their URLs are fetched again."""
        with self._db:
            return sum(
                self._db.execute("DELETE FROM outcomes WHERE part = ?", (part,)).rowcount for part in parts
            )

    def record(self, rows: Iterable[Fetched], give_up_after: int | None = None) -> None:
        """Commit a batch's outcomes. A URL that has now failed transiently in `give_up_after` runs is
        recorded as rejected (`gave_up`, with its last failure), so a dead host cannot keep a harvest
        pending for ever; `--retry-failed` asks it again."""
        rows = [self._count_run(r, give_up_after) if r.status == "failed" else r for r in rows]
        placeholders = ", ".join("?" * (len(COLUMNS) + 2))
        now = time.time()
        with self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO outcomes(params, {', '.join(COLUMNS)}, at) VALUES ({placeholders})",
                [(self.params, *(getattr(r, c) for c in COLUMNS), now) for r in rows],
            )

    def _count_run(self, row: Fetched, give_up_after: int | None) -> Fetched:
        found = self._db.execute("SELECT runs FROM outcomes WHERE url = ?", (row.url,)).fetchone()
        before = (found[0] or 0) if found else 0
        if row.reason == "queue_timeout":  # never sent: the host's queue, not the URL, failed
            return dataclasses.replace(row, runs=before)
        runs = before + 1
        if give_up_after is not None and runs >= give_up_after:
            detail = f"{row.reason} in {runs} runs: {row.detail}"
            return dataclasses.replace(row, status="rejected", reason="gave_up", detail=detail, runs=runs)
        return dataclasses.replace(row, runs=runs)

    def outcomes(self, urls: Iterable[str]) -> list[Fetched]:
        wanted = set(urls)
        rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM outcomes ORDER BY url")
        return [Fetched(*row) for row in rows if row[0] in wanted]

    # Streaming (issue 17): the hit URLs and the pending ones live in temporary tables on disk, so
    # the stage holds one batch of URLs and one row group of outcomes at a time, whatever the harvest.

    def load_hits(self, batches: Iterable[tuple[list[str], list[str]]]) -> int:
        """Every hit URL once, in the order first met, with whether the local corpus produced it
        (from (urls, backends) batches), into a temporary table; returns how many URLs."""
        self._db.execute("PRAGMA temp_store = FILE")
        self._db.execute(f"PRAGMA temp.cache_size = -{TEMP_CACHE_KIB}")
        self._db.executescript(
            "DROP TABLE IF EXISTS temp.hit_urls;"
            "CREATE TEMP TABLE hit_urls(pos INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE, corpus INTEGER);"
        )
        with self._db:
            for urls, backends in batches:
                self._db.executemany(
                    "INSERT INTO temp.hit_urls(url, corpus) VALUES (?, ?)"
                    " ON CONFLICT(url) DO UPDATE SET corpus = max(corpus, excluded.corpus)",
                    ((u, int(b == "corpus")) for u, b in zip(urls, backends, strict=True)),
                )
        return int(self._db.execute("SELECT count(*) FROM temp.hit_urls").fetchone()[0])

    def mark_pending(self) -> int:
        """The loaded hit URLs without a final outcome (as `done_urls`), in hit order, into a
        temporary table that `pending` reads; returns how many."""
        self._db.executescript(
            "DROP TABLE IF EXISTS temp.pending;"
            "CREATE TEMP TABLE pending(seq INTEGER PRIMARY KEY, url TEXT NOT NULL, corpus INTEGER);"
        )
        with self._db:
            return self._db.execute(
                "INSERT INTO temp.pending(url, corpus) SELECT h.url, h.corpus FROM temp.hit_urls h"
                " WHERE NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.url = h.url AND o.status != 'failed')"
                " ORDER BY h.pos"
            ).rowcount

    def pending(self, size: int) -> Iterator[list[tuple[str, bool]]]:
        """The pending URLs (`mark_pending`) in chunks of `size`, each read when it is asked for,
        with whether the local corpus produced each."""
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT seq, url, corpus FROM temp.pending WHERE seq > ? ORDER BY seq LIMIT ?", (last, size)
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(url, bool(corpus)) for _, url, corpus in rows]

    def hit_outcomes(self, size: int) -> Iterator[list[tuple]]:
        """The outcomes of the loaded hit URLs in URL order (as `outcomes`), `size` rows at a time,
        each row a tuple in COLUMNS order."""
        cursor = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM outcomes"
            " WHERE url IN (SELECT url FROM temp.hit_urls) ORDER BY url"
        )
        while rows := cursor.fetchmany(size):
            yield rows

    def close(self) -> None:
        self._db.close()
