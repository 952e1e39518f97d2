"""Entity balancing, MetaCLIP-style: cap how many pictures one entity (or one query) contributes.

A picture found for an entity with `count` pictures survives that entity's cap `t` with
probability t / count (always, when count ≤ t); a picture of several entities survives if any of
them keeps it, so a rare entity keeps its pictures even when they also show a common one. The
draw is a hash of (seed, key, picture), not a random generator: the same seed and inputs keep the
same pictures, in any order and on any machine.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from kgclip.curate.dedup import Group
from kgclip.tables import Query


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


def balance_draw(seed: int, name: str, key: str, picture: str) -> float:
    """A number in [0, 1) fixed by its arguments."""
    digest = hashlib.blake2b(f"{seed}\0{name}\0{key}\0{picture}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
