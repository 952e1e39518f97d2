"""Exact-duplicate merging: copies with identical pixels become one sample with every text.

The key is the SHA-256 of the normalised RGB pixels (see fetch/images.py), not of the file:
the same picture served as PNG by one host and re-saved by another is one training image,
and its alt texts from both hosts are worth keeping.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from kgclip.tables import Fetched, Hit, Query


@dataclass
class Group:
    """All fetched copies of one image, with the texts and queries that led to any of them."""

    pixel_sha256: str
    copies: list[Fetched]
    hits: list[Hit] = field(default_factory=list)

    @property
    def first(self) -> Fetched:
        return self.copies[0]

    def urls(self) -> list[str]:
        return [c.url for c in self.copies]

    def page_urls(self) -> list[str]:
        return _unique(h.page_url for h in self.hits if h.page_url)

    def alt_texts(self) -> list[str]:
        return _unique(h.alt_text.strip() for h in self.hits if h.alt_text.strip())

    def query_ids(self) -> list[str]:
        return _unique(h.query_id for h in self.hits)

    def entity_ids(self, queries: dict[str, Query]) -> list[str]:
        ids = (queries[q].entity_id for q in self.query_ids() if q in queries)
        return _unique(i for i in ids if i)

    def licence(self) -> tuple[str | None, str | None]:
        """The first copy (by URL) that states a licence; its attribution goes with it."""
        by_url = {h.url: h for h in sorted(self.hits, key=lambda h: (h.url, h.rank)) if h.license}
        for url in self.urls():
            if url in by_url:
                return by_url[url].license, by_url[url].attribution
        return None, None


def _unique(items: object) -> list:
    return list(dict.fromkeys(items))  # type: ignore[call-overload]


def group_duplicates(fetched: list[Fetched], hits: list[Hit]) -> list[Group]:
    """Groups ordered by pixel hash, copies by URL, hits by (query, rank): fully deterministic."""
    groups: dict[str, Group] = {}
    by_url: dict[str, str] = {}
    for row in sorted(fetched, key=lambda r: r.url):
        if row.status != "ok" or row.pixel_sha256 is None:
            continue
        groups.setdefault(row.pixel_sha256, Group(row.pixel_sha256, [])).copies.append(row)
        by_url[row.url] = row.pixel_sha256
    hits_by_group: dict[str, list[Hit]] = defaultdict(list)
    for hit in hits:
        if hit.url in by_url:
            hits_by_group[by_url[hit.url]].append(hit)
    for sha, group in groups.items():
        group.hits = sorted(hits_by_group[sha], key=lambda h: (h.query_id, h.rank, h.url))
    return [groups[k] for k in sorted(groups)]
