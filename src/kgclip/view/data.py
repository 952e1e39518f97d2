"""What each page shows, read from the viewer's index (one indexed query per piece)."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from kgclip.view.index import connect

PAGE = 48
TREE_PER_TYPE = 50  # entities listed under each type in the whole tree
TREE_ALL = 5000  # under the one type asked for


def _loads(value: str | None) -> Any:
    return orjson.loads(value) if value else []


class Store:
    """Read-only access to one index; one SQLite connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._summary: dict[str, Any] | None = None
        self._facets: dict[str, list[tuple[str, str]]] | None = None

    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path)
        return db

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return self.db.execute(sql, args).fetchone()

    def all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self.db.execute(sql, args).fetchall()

    def summary(self) -> dict[str, Any]:
        """Whole-dataset counts: read from the summary tables the index build made."""
        if self._summary is None:
            splits = self.all("SELECT split, n FROM summary_splits")
            self._summary = {
                "samples": sum(r["n"] for r in splits),
                "splits": splits,
                "entities": self.one("SELECT count(*) FROM entities WHERE pictures > 0")[0],
                "licences": self.all("SELECT license, n FROM summary_licences LIMIT 20"),
                "rejections": self.rejection_counts(),
            }
        return self._summary

    def sample(self, key: str) -> dict[str, Any] | None:
        row = self.one("SELECT * FROM samples WHERE key = ?", key)
        if row is None:
            return None
        s = dict(row)
        for col in ("urls", "page_urls", "alt_texts", "query_ids", "entity_ids"):
            s[col] = _loads(s[col])
        s["evidence"] = [orjson.loads(e) for e in _loads(s["evidence"])]
        s["copies"] = self.copies(s["urls"], s["sha256"])
        s["queries"] = [self.query(q) for q in s["query_ids"]]
        s["entities"] = [self.entity(e) for e in s["entity_ids"]]
        return s

    def copies(self, urls: list[str], kept_sha256: str) -> list[dict[str, Any]]:
        """Per URL merged into a sample: its source size, and whether its pixels are the kept
        picture's or a near duplicate's (with the perceptual hashes' distance); None if not fetched."""
        rows = {u: self.one("SELECT * FROM copies WHERE url = ?", u) for u in urls}
        kept = next((r for r in rows.values() if r is not None and r["pixel_sha256"] == kept_sha256), None)
        out = []
        for url, r in rows.items():
            copy: dict[str, Any] = {"url": url, "fetched": r is not None}
            if r is not None:
                copy |= dict(r)
                copy["same_pixels"] = r["pixel_sha256"] == kept_sha256
                both = kept is not None and kept["phash"] is not None and r["phash"] is not None
                copy["distance"] = (kept["phash"] ^ r["phash"]).bit_count() if both else None
            out.append(copy)
        return out

    def query(self, query_id: str) -> dict[str, Any]:
        row = self.one("SELECT * FROM queries WHERE query_id = ?", query_id)
        return dict(row) if row else {"query_id": query_id, "kind": "?", "text": "", "entity_id": None}

    def entity(self, entity_id: str) -> dict[str, Any] | None:
        row = self.one("SELECT * FROM entities WHERE id = ?", entity_id)
        if row is None:
            return None
        e = dict(row)
        for col in ("aliases", "parents", "common_names"):
            e[col] = _loads(e[col])
        return e

    def entity_names(self, ids: list[str]) -> dict[str, str]:
        out = {}
        for i in ids:
            row = self.one("SELECT name FROM entities WHERE id = ?", i)
            out[i] = row[0] if row else i
        return out

    def entities_named(self, names: list[str]) -> dict[str, sqlite3.Row]:
        """name -> the most pictured entity of that name (any case), for names an entity has."""
        out = {}
        for name in dict.fromkeys(names):
            row = self.one(
                "SELECT id, name, pictures FROM entities WHERE name = ? COLLATE NOCASE "
                "ORDER BY pictures DESC, id LIMIT 1",
                name,
            )
            if row is not None:
                out[name] = row
        return out

    def entity_queries(self, entity_id: str) -> dict[str, list[sqlite3.Row]]:
        by_kind: dict[str, list[sqlite3.Row]] = defaultdict(list)
        for q in self.all(
            "SELECT * FROM queries WHERE entity_id = ? ORDER BY kind, hits DESC, text", entity_id
        ):
            by_kind[q["kind"]].append(q)
        return dict(by_kind)

    def attributes(self, entity_id: str) -> list[sqlite3.Row]:
        return self.all(
            "SELECT * FROM attributes WHERE entity_id = ? ORDER BY category, attribute", entity_id
        )

    def entity_pictures(self, entity_id: str, page: int) -> list[sqlite3.Row]:
        return self.all(
            "SELECT s.key, s.sha256, s.caption FROM sample_entities e JOIN samples s ON s.key = e.key "
            "WHERE e.entity_id = ? ORDER BY e.key LIMIT ? OFFSET ?",
            entity_id,
            PAGE,
            page * PAGE,
        )

    def tree(self, q: str | None, type_id: str | None = None) -> list[dict[str, Any]]:
        """Roots → natural types → entities with pictures: every type with its counts, and its
        `TREE_PER_TYPE` most pictured entities (all of one type's for `type_id`); with `q`, only the
        entities whose name or alias contains it."""
        where, args = "pictures > 0", []
        if q:
            where += " AND (name LIKE ? ESCAPE '\\' OR aliases LIKE ? ESCAPE '\\')"
            like = "%" + re.sub(r"([%_\\])", r"\\\1", q) + "%"
            args += [like, like]
        if type_id == "":  # the entities without a natural type
            where += " AND type_id IS NULL"
        elif type_id is not None:
            where += " AND type_id = ?"
            args.append(type_id)
        if q or type_id is not None:
            groups = self.all(
                "SELECT root, type_id, type_name, count(*) entities, sum(pictures) pictures "
                f"FROM entities WHERE {where} GROUP BY root, type_id",
                *args,
            )
        else:
            groups = self.all("SELECT * FROM summary_types")
        per_type = TREE_ALL if type_id is not None else TREE_PER_TYPE
        rows = self.all(
            "SELECT * FROM (SELECT id, name, root, type_id, pictures, row_number() OVER "
            f"(PARTITION BY root, type_id ORDER BY pictures DESC, name) rn FROM entities WHERE {where}) "
            "WHERE rn <= ? ORDER BY rn",
            *args,
            per_type,
        )
        listed: dict[tuple[str, str | None], list[sqlite3.Row]] = defaultdict(list)
        for r in rows:
            listed[(r["root"], r["type_id"])].append(r)
        roots: dict[str, dict[str, Any]] = {}
        for g in groups:
            root = roots.setdefault(g["root"], {"id": g["root"], "types": [], "pictures": 0})
            root["types"].append(
                dict(g)
                | {"id": g["type_id"], "name": g["type_name"], "listed": listed[(g["root"], g["type_id"])]}
            )
            root["pictures"] += g["pictures"]
        names = self.entity_names(list(roots))
        out = []
        for root in sorted(roots.values(), key=lambda x: -x["pictures"]):
            root["name"] = names[root["id"]]
            root["types"].sort(key=lambda x: -x["pictures"])
            out.append(root)
        return out

    def rejection_counts(self) -> list[sqlite3.Row]:
        return self.all("SELECT stage, reason, n FROM summary_rejections")

    def rejections(self, stage: str, reason: str, page: int) -> list[sqlite3.Row]:
        return self.all(
            "SELECT rowid n, item, detail, part IS NOT NULL pictured FROM rejected "
            "WHERE stage = ? AND reason = ? LIMIT ? OFFSET ?",
            stage,
            reason,
            PAGE,
            page * PAGE,
        )

    def facets(self) -> dict[str, list[tuple[str, str]]]:
        """The search filters' choices as (value, label), computed once per server."""
        if self._facets is None:
            roots = [r[0] for r in self.all("SELECT DISTINCT root FROM entities WHERE pictures > 0")]
            backends = set()
            for (b,) in self.all("SELECT backends FROM summary_backends"):
                backends.update(x for x in (b or "").split(",") if x)
            self._facets = {
                "root": sorted(self.entity_names(roots).items(), key=lambda kv: kv[1]),
                "type": [
                    (r[0], r[1])
                    for r in self.all(
                        "SELECT DISTINCT type_id, type_name FROM summary_types WHERE type_id IS NOT NULL "
                        "ORDER BY type_name"
                    )
                ],
                "kind": [(r[0], r[0]) for r in self.all("SELECT DISTINCT kind FROM queries WHERE hits > 0")],
                "backend": [(b, b) for b in sorted(backends)],
                "licence": [
                    (r["license"], r["license"])
                    for r in self.all("SELECT license FROM summary_licences WHERE license IS NOT NULL")
                ],
            }
        return self._facets

    def search(self, q: str, filters: dict[str, str], limit: int = PAGE) -> dict[str, list]:
        """Full text over entity names and aliases, alt texts and captions, and query texts; pictures
        filtered by root, natural type, query kind, backend and licence (without text: just filtered)."""
        words = re.findall(r"\w+", q)
        match = " ".join('"' + w + '"' for w in words)
        out: dict[str, list] = {"entity": [], "sample": [], "query": []}
        if words:
            where, args = "search MATCH ? AND search.kind = 'entity'", [match]
            for col in ("root", "type"):
                if filters.get(col):
                    where += f" AND e.{'root' if col == 'root' else 'type_id'} = ?"
                    args.append(filters[col])
            out["entity"] = self.all(
                "SELECT ref, snippet(search, 2, '', '', '…', 12) snip FROM search "
                f"JOIN entities e ON e.id = search.ref WHERE {where} ORDER BY rank LIMIT ?",
                *args,
                limit,
            )
            where, args = "search MATCH ? AND search.kind = 'query'", [match]
            if filters.get("kind"):
                where += " AND q.kind = ?"
                args.append(filters["kind"])
            out["query"] = self.all(
                "SELECT ref, q.kind, snippet(search, 2, '', '', '…', 12) snip FROM search "
                f"JOIN queries q ON q.query_id = search.ref WHERE {where} ORDER BY rank LIMIT ?",
                *args,
                limit,
            )
        if not words and not any(filters.values()):
            return out
        if words:
            sql = (
                "SELECT s.key, s.sha256, snippet(search, 2, '', '', '…', 12) snip FROM search "
                "JOIN samples s ON s.key = search.ref WHERE search MATCH ? AND search.kind = 'sample'"
            )
            args = [match]
        else:
            sql, args = "SELECT s.key, s.sha256, s.caption snip FROM samples s WHERE 1", []
        entity_filter = (
            " AND EXISTS (SELECT 1 FROM sample_entities se JOIN entities e ON e.id = se.entity_id "
            "WHERE se.key = s.key AND e.{} = ?)"
        )
        if filters.get("root"):
            sql += entity_filter.format("root")
            args.append(filters["root"])
        if filters.get("type"):
            sql += entity_filter.format("type_id")
            args.append(filters["type"])
        if filters.get("kind"):
            sql += (
                " AND EXISTS (SELECT 1 FROM sample_queries sq JOIN queries q ON q.query_id = sq.query_id "
                "WHERE sq.key = s.key AND q.kind = ?)"
            )
            args.append(filters["kind"])
        if filters.get("backend"):
            sql += " AND s.backends LIKE ? ESCAPE '\\'"
            args.append("%," + re.sub(r"([%_\\])", r"\\\1", filters["backend"]) + ",%")
        if filters.get("licence"):
            sql += " AND s.license = ?"
            args.append(filters["licence"])
        sql += (" ORDER BY rank" if words else " ORDER BY s.key") + " LIMIT ?"
        out["sample"] = self.all(sql, *args, limit)
        return out
