"""Duplicate merging: copies of one picture become one sample with every text.

Two levels. Exact copies share the SHA-256 of their normalised RGB pixels (fetch/images.py), not of
the file: the same picture served as PNG by one host and re-saved by another is one image. Near
copies (resized, re-encoded, recoloured, framed or slightly cropped by another host) have
perceptual hashes within `near_distance` bits (curate/phash.py); their groups are merged through a
multi-index Hamming search (curate/hashindex.py), never by comparing all pairs. The merged sample
keeps the largest copy's pixels and the texts, URLs and queries of every copy.

A licence is a grant for particular pixels, so it travels with them: a sample's licence and
attribution come only from a copy whose pixels are the ones kept (a small CC0 crop must not license
a large unlicensed original). Among those identical copies the first by URL that states a licence
gives it, or with a licence filter the first whose licence passes (the pixels are the same, so any
publisher's grant covers them; a stated licence is never replaced by `unknown` from an unlabelled
copy). With a filter, near-duplicate merging keeps the largest picture among the copies whose
licence passes, and the largest of all only when none does (the filter then rejects the sample).

Merging is transitive (connected components): a chain a~b~c merges a and c even if they are
further apart than the threshold. At the default threshold such chains are copies of one picture.

The curate stage makes these same groups on compact arrays (curate/plan.py), without a record per
row; `group_duplicates` is the reference it is tested against, and `Group` what both hand on.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kgclip.curate.hashindex import HashIndex
from kgclip.curate.licences import UNKNOWN, allowed, normalise
from kgclip.curate.phash import colour_distance
from kgclip.progress import console
from kgclip.tables import Fetched, Hit, Query


@dataclass
class Group:
    """All fetched copies of one image, with the texts and queries that led to any of them.

    `copies[0]` is the kept copy (its pixels go into the shard), followed by its exact copies;
    `near` counts the other distinct pictures (near duplicates) merged in. `accepted` is the
    licence filter, which decides whose licence the kept pixels carry.
    """

    pixel_sha256: str
    copies: list[Fetched]
    hits: list[Hit] = field(default_factory=list)
    near: int = 0
    accepted: tuple[str, ...] = ()

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

    def kept_copies(self) -> list[Fetched]:
        """The copies whose pixels go into the shard: only their licences apply to them."""
        return [c for c in self.copies if c.pixel_sha256 == self.pixel_sha256]

    def page_urls(self) -> list[str]:
        """Every page; the licence source's first, then the other pages of the kept pixels."""
        source = self.licence_source()
        kept = {c.url for c in self.kept_copies()}
        ordered = sorted(self.hits, key=lambda h: h.url not in kept)  # stable: hit order otherwise
        return _unique(h.page_url for h in [*([source] if source else []), *ordered] if h.page_url)

    def alt_texts(self) -> list[str]:
        return _unique(h.alt_text.strip() for h in self.hits if h.alt_text.strip())

    def query_ids(self) -> list[str]:
        return _unique(h.query_id for h in self.hits)

    def entity_ids(self, queries: dict[str, Query]) -> list[str]:
        ids = (queries[q].entity_id for q in self.query_ids() if q in queries)
        return _unique(i for i in ids if i)

    def licence_source(self) -> Hit | None:
        """The hit whose licence the kept pixels carry (module docstring): the first stating one of
        a kept copy, by URL, that passes the filter; else the first stating one (which the filter
        then refuses); None when no copy of these pixels states a licence."""
        kept = [c.url for c in self.kept_copies()]
        rank = {url: i for i, url in enumerate(kept)}
        stated = sorted(
            (h for h in self.hits if h.url in rank and normalise(h.license) != UNKNOWN),
            key=lambda h: rank[h.url],  # stable: (query, rank) within one URL
        )
        passing = (h for h in stated if allowed(normalise(h.license), self.accepted))
        return next(passing, stated[0] if stated else None)

    def licence(self) -> tuple[str, str | None]:
        """The normalised licence of the kept pixels and the attribution that goes with it."""
        source = self.licence_source()
        return (normalise(source.license), source.attribution) if source else (UNKNOWN, None)

    def licence_passes(self) -> bool:
        return allowed(self.licence()[0], self.accepted)


def _unique(items: object) -> list:
    return list(dict.fromkeys(items))  # type: ignore[call-overload]


def group_duplicates(
    fetched: list[Fetched],
    hits: list[Hit],
    near_distance: int = 0,
    near_colour: int = 255,
    accepted: Sequence[str] = (),
) -> list[Group]:
    """Groups ordered by the kept pixel hash, copies by URL (the kept picture's first), hits by
    (query, rank): fully deterministic. `near_distance` 0 merges exact copies only; near copies
    must also have mean colours within `near_colour` per channel. `accepted` is the licence
    filter: it decides which near copy's pixels (and so whose licence) a merged sample keeps."""
    exact: dict[str, Group] = {}
    for row in sorted(fetched, key=lambda r: r.url):
        if row.status != "ok" or row.pixel_sha256 is None:
            continue
        group = exact.setdefault(row.pixel_sha256, Group(row.pixel_sha256, [], accepted=tuple(accepted)))
        group.copies.append(row)
    by_url = {c.url: sha for sha, g in exact.items() for c in g.copies}
    hits_by_group: dict[str, list[Hit]] = defaultdict(list)
    for hit in hits:
        if hit.url in by_url:
            hits_by_group[by_url[hit.url]].append(hit)
    groups = [exact[k] for k in sorted(exact)]
    for group in groups:
        group.hits = _hit_order(hits_by_group[group.pixel_sha256])
    if near_distance > 0:
        groups = _merge_near(groups, near_distance, near_colour)
    return groups


def _hit_order(hits: Iterable[Hit]) -> list[Hit]:
    return sorted(hits, key=lambda h: (h.query_id, h.rank, h.url))


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
    """One group for a component: the largest picture kept (ties: the lowest pixel hash), among
    the pictures whose licence passes the filter when any does."""
    if len(members) == 1:
        return members[0]
    candidates = [g for g in members if g.licence_passes()] or members
    keep = min(
        candidates, key=lambda g: (-(g.copies[0].width or 0) * (g.copies[0].height or 0), g.pixel_sha256)
    )
    others = sorted((c for g in members if g is not keep for c in g.copies), key=lambda c: c.url)
    return Group(
        keep.pixel_sha256,
        [*keep.copies, *others],
        _hit_order(h for g in members for h in g.hits),
        near=len(members) - 1,
        accepted=keep.accepted,
    )
