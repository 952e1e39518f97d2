"""Entity balancing, MetaCLIP-style: cap how many pictures one entity (or one query) contributes.

A picture found for an entity with `count` pictures survives that entity's cap `t` with
probability t / count (always, when count ≤ t); a picture of several entities survives if any of
them keeps it, so a rare entity keeps its pictures even when they also show a common one. The
draw is a hash of (seed, key, picture), not a random generator: the same seed and inputs keep the
same pictures, in any order and on any machine. The caps are applied on arrays by the curate
stage (`stage._balance`); tests/curate_reference.py states the same rule on records.
"""

from __future__ import annotations

import hashlib


def balance_draw(seed: int, name: str, key: str, picture: str) -> float:
    """A number in [0, 1) fixed by its arguments."""
    digest = hashlib.blake2b(f"{seed}\0{name}\0{key}\0{picture}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
