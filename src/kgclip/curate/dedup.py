"""Duplicate merging: copies of one picture become one sample with every text.

Two levels. Exact copies share the SHA-256 of their normalised RGB pixels (fetch/images.py), not of
the file: the same picture served as PNG by one host and re-saved by another is one image. Near
copies (resized, re-encoded, recoloured, framed or slightly cropped by another host) have
perceptual hashes within `near_distance` bits (curate/phash.py); their groups are merged through a
multi-index Hamming search (curate/hashindex.py), never by comparing all pairs. The merged sample
keeps the largest copy's pixels and the texts, URLs and queries of every copy.

Merging is transitive (connected components): a chain a~b~c merges a and c even if they are
further apart than the threshold. At the default threshold such chains are copies of one picture.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from kgclip.curate.hashindex import HashIndex
from kgclip.curate.phash import colour_distance
from kgclip.progress import console
from kgclip.tables import Fetched, Hit, Query


@dataclass
class Group:
    """All fetched copies of one image, with the texts and queries that led to any of them.

    `copies[0]` is the kept copy (its pixels go into the shard); `near` counts the other distinct
    pictures (near duplicates) merged in.
    """

    pixel_sha256: str
    copies: list[Fetched]
    hits: list[Hit] = field(default_factory=list)
    near: int = 0

    @property
    def phash(self) -> int | None:
        return self.copies[0].phash

    @property
    def colour(self) -> int | None:
        return self.copies[0].colour

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


def group_duplicates(
    fetched: list[Fetched], hits: list[Hit], near_distance: int = 0, near_colour: int = 255
) -> list[Group]:
    """Groups ordered by the kept pixel hash, copies by URL (the kept picture's first), hits by
    (query, rank): fully deterministic. `near_distance` 0 merges exact copies only; near copies
    must also have mean colours within `near_colour` per channel."""
    exact: dict[str, Group] = {}
    for row in sorted(fetched, key=lambda r: r.url):
        if row.status != "ok" or row.pixel_sha256 is None:
            continue
        exact.setdefault(row.pixel_sha256, Group(row.pixel_sha256, [])).copies.append(row)
    groups = [exact[k] for k in sorted(exact)]
    if near_distance > 0:
        groups = _merge_near(groups, near_distance, near_colour)
    by_url = {c.url: g.pixel_sha256 for g in groups for c in g.copies}
    hits_by_group: dict[str, list[Hit]] = defaultdict(list)
    for hit in hits:
        if hit.url in by_url:
            hits_by_group[by_url[hit.url]].append(hit)
    for group in groups:
        group.hits = sorted(hits_by_group[group.pixel_sha256], key=lambda h: (h.query_id, h.rank, h.url))
    return groups


def _merge_near(groups: list[Group], distance: int, colours: int) -> list[Group]:
    hashed = [i for i, g in enumerate(groups) if g.phash is not None]
    began = time.monotonic()
    index = HashIndex([groups[i].phash for i in hashed])
    pairs = index.search(index.hashes, distance)[:2]
    console.print(
        f"curate: near-duplicate search over {len(hashed):,} pictures within {distance} bits "
        f"took {time.monotonic() - began:.1f} s"
    )
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(*pairs, strict=True):
        ca, cb = groups[hashed[a]].colour, groups[hashed[b]].colour
        if ca is not None and cb is not None and colour_distance(ca, cb) > colours:
            continue  # one drawing in two colours: two pictures
        ra, rb = root(hashed[a]), root(hashed[b])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    components: dict[int, list[Group]] = defaultdict(list)
    for i, group in enumerate(groups):
        components[root(i)].append(group)
    merged = [_combine(members) for members in components.values()]
    return sorted(merged, key=lambda g: g.pixel_sha256)


def _combine(members: list[Group]) -> Group:
    """One group for a component: the largest picture kept (ties: the lowest pixel hash)."""
    if len(members) == 1:
        return members[0]
    keep = min(members, key=lambda g: (-(g.copies[0].width or 0) * (g.copies[0].height or 0), g.pixel_sha256))
    others = sorted((c for g in members if g is not keep for c in g.copies), key=lambda c: c.url)
    return Group(keep.pixel_sha256, [*keep.copies, *others], near=len(members) - 1)
