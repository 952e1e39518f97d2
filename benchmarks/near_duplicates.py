"""Near-duplicate search: kgclip's multi-index Hamming search against all-pairs comparison.

Hashes: uniformly random 63-bit values with 5% planted near copies (0-6 bits flipped), the shape
of a harvest's perceptual hashes where most pictures are distinct. Both methods find every pair
within the curate stage's default radius (6); the all-pairs peer is numpy's vectorised XOR and
popcount over blocks, which is what "compare everything" costs at its fastest in Python.

Printed: both methods on the same N (they must agree), their times and the ratio, then the
multi-index search alone at a million hashes, where all pairs would take hours.

Run: `.venv/bin/python benchmarks/near_duplicates.py [--small 20000] [--large 1000000]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kgclip.curate.hashindex import HashIndex

RADIUS = 6


def hashes(n: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    planted = rng.choice(n, size=n // 20, replace=False)
    flips = np.zeros(len(planted), dtype=np.uint64)
    for k, count in enumerate(rng.integers(0, RADIUS + 1, size=len(planted))):
        for bit in rng.choice(63, size=count, replace=False):
            flips[k] |= np.uint64(1) << np.uint64(bit)
    base[planted] = base[rng.choice(n, size=len(planted))] ^ flips
    return base


def all_pairs(h: np.ndarray, block: int = 2000) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    for start in range(0, len(h), block):
        d = np.bitwise_count(h[start : start + block, None] ^ h[None, :])
        q, i = np.nonzero(d <= RADIUS)
        found.update((int(a) + start, int(b)) for a, b in zip(q, i, strict=True))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    h = hashes(args.small, rng)
    began = time.perf_counter()
    q, i, _ = HashIndex(h).search(h, RADIUS)
    ours = time.perf_counter() - began
    began = time.perf_counter()
    theirs = all_pairs(h)
    peer = time.perf_counter() - began
    assert set(zip(q.tolist(), i.tolist(), strict=True)) == theirs, "the two methods disagree"
    pairs = sum(a != b for a, b in theirs)
    print(f"N = {args.small:,}: both find the same {pairs:,} near pairs within {RADIUS} bits")
    print(f"  multi-index {ours:.2f} s, all pairs {peer:.2f} s: {peer / ours:.1f}x")

    h = hashes(args.large, rng)
    began = time.perf_counter()
    index = HashIndex(h)
    built = time.perf_counter() - began
    q, i, _ = index.search(h, RADIUS)
    total = time.perf_counter() - began
    estimate = peer * (args.large / args.small) ** 2
    print(f"N = {args.large:,}: multi-index {total:.1f} s (index built in {built:.1f} s), "
          f"{int((q != i).sum()):,} near pairs; all pairs would take ~{estimate / 3600:.1f} h "
          f"(quadratic from the measurement above): ~{estimate / total:,.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
