"""The record-per-row reference of curate's grouping, filters and balancing: what curate did
before issue 17 put it on compact arrays (curate/plan.py, curate/stage.py), kept here as the
plainest statement of the rules. tests/test_curate_plan.py checks the array grouping against
`group_duplicates`; tests/test_licences.py and tests/test_balance.py state the rules on it; and
tests/test_curate_frozen.py checks the stage's outputs against those this code wrote."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kgclip.curate.balance import balance_draw
from kgclip.curate.dedup import Group
from kgclip.curate.hashindex import HashIndex
from kgclip.curate.phash import colour_distance
from kgclip.progress import console
from kgclip.tables import Fetched, Hit, Query, Rejected


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


def filter_licences(groups: list[Group]) -> tuple[list[Group], list[Rejected]]:
    """Keep the groups whose licence passes their filter; a rejected row for every copy of the others.

    The filter is the one the groups were built with (`group_duplicates(accepted=...)`), which
    also chose the copy whose licence the kept pixels carry: a group is refused only when no
    identical copy of its kept pixels states a passing licence."""
    kept: list[Group] = []
    refused: list[Rejected] = []
    for g in groups:
        if g.licence_passes():
            kept.append(g)
        else:
            why = f"{g.licence()[0]} is not among {', '.join(g.accepted)}"
            refused.extend(Rejected("curate", c.url, "licence", why) for c in g.copies)
    return kept, refused


@dataclass
class Balanced:
    kept: list[Group]
    dropped: list[tuple[Group, str]]  # with the cap that dropped it, for the rejected table
    entity_counts_before: Counter[str]
    entity_counts_after: Counter[str]


def balance(
    groups: list[Group], queries: dict[str, Query], max_per_entity: int, max_per_query: int, seed: int
) -> Balanced:
    def entities(g: Group) -> list[str]:
        return g.entity_ids(queries)

    before = Counter(e for g in groups for e in entities(g))
    kept, dropped = groups, []
    for cap, keys, name in (
        (max_per_entity, entities, "max_per_entity"),
        (max_per_query, Group.query_ids, "max_per_query"),
    ):
        if cap > 0:
            kept, out = _cap(kept, keys, cap, seed, name)
            dropped += [(g, f"{name} {cap}") for g in out]
    after = Counter(e for g in kept for e in entities(g))
    return Balanced(kept, dropped, before, after)


def _cap(
    groups: list[Group], keys: Callable[[Group], list[str]], cap: int, seed: int, name: str
) -> tuple[list[Group], list[Group]]:
    counts = Counter(k for g in groups for k in keys(g))
    kept: list[Group] = []
    out: list[Group] = []
    for g in groups:
        own = keys(g)
        survives = not own or any(
            counts[k] <= cap or balance_draw(seed, name, k, g.pixel_sha256) < cap / counts[k] for k in own
        )
        (kept if survives else out).append(g)
    return kept, out
