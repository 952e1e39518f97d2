"""Near-duplicate search: kgclip's multi-index Hamming search against all-pairs comparison.

Hashes: 63-bit values drawn bit by bit with the per-bit frequencies of real pHashes, with 5%
planted near copies (0-6 bits flipped). Uniformly random hashes are the best case for multi-index
hashing (every 16-bit chunk value equally likely, so a probe finds few candidates); real pHashes
are skewed (a few bits are set in 75-93% of pictures), which fills some chunk values and makes the
search slower. The frequencies below were measured on the 373 distinct pictures of six harvests
(`fetched.parquet` of three demo runs and three openclipart runs); `--measure FILE...` measures
them again from any parquet files with a `phash` column and uses those. Bits are drawn
independently: correlations between bits are not modelled.

Both methods find every pair within the curate stage's default radius (6); the all-pairs peer is
numpy's vectorised XOR and popcount over blocks, which is what "compare everything" costs at its
fastest in Python. Both are measured at every N given with `--sizes` (they must agree); multi-index
alone at `--large`. All pairs at N = 1,000,000 is 5x10^11 comparisons, about two hours here: give
`--sizes ... 1000000` to measure it rather than extrapolate.

Run: `.venv/bin/python benchmarks/near_duplicates.py [--sizes 20000 100000] [--large 1000000]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kgclip.curate.hashindex import HashIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import describe

RADIUS = 6
BITS = 63
# Share of pictures with each bit set (bit 0 = least significant), from six harvests' fetched.parquet
# (/tmp/d, d2, d3: the demo; /tmp/ow, ow0, ow2: openclipart), 373 distinct phash values.
REAL_FREQUENCIES = (
    0.402, 0.461, 0.437, 0.464, 0.475, 0.480, 0.485, 0.475, 0.472, 0.397, 0.496, 0.378, 0.453,
    0.381, 0.450, 0.735, 0.413, 0.493, 0.424, 0.475, 0.544, 0.418, 0.453, 0.531, 0.483, 0.450,
    0.520, 0.397, 0.496, 0.421, 0.472, 0.745, 0.434, 0.477, 0.450, 0.434, 0.445, 0.434, 0.475,
    0.539, 0.461, 0.367, 0.539, 0.373, 0.472, 0.456, 0.437, 0.901, 0.520, 0.461, 0.464, 0.499,
    0.483, 0.453, 0.456, 0.509, 0.410, 0.775, 0.448, 0.753, 0.456, 0.930, 0.515,
)  # fmt: skip


def measure_frequencies(files: list[Path]) -> tuple[np.ndarray, int]:
    """Per-bit share of set bits over the distinct non-null phash values of the files."""
    import pyarrow.parquet as pq

    distinct: set[int] = set()
    for f in files:
        distinct.update(
            h for h in pq.read_table(f, columns=["phash"]).column("phash").to_pylist() if h is not None
        )
    values = np.array(sorted(distinct), dtype=np.int64).astype(np.uint64)
    bits = (values[:, None] >> np.arange(BITS, dtype=np.uint64)) & np.uint64(1)
    return bits.mean(axis=0), len(values)


def hashes(n: int, rng: np.random.Generator, frequencies: np.ndarray) -> np.ndarray:
    """n hashes, bit b set with probability frequencies[b]; 5% are near copies of another."""
    base = np.zeros(n, dtype=np.uint64)
    for b, p in enumerate(frequencies):
        base |= (rng.random(n) < p).astype(np.uint64) << np.uint64(b)
    planted = rng.choice(n, size=n // 20, replace=False)
    flips = np.zeros(len(planted), dtype=np.uint64)
    for k, count in enumerate(rng.integers(0, RADIUS + 1, size=len(planted))):
        for bit in rng.choice(BITS, size=count, replace=False):
            flips[k] |= np.uint64(1) << np.uint64(bit)
    base[planted] = base[rng.choice(n, size=len(planted))] ^ flips
    return base


def all_pairs(h: np.ndarray, budget: int = 1 << 25, rows: int = 0) -> np.ndarray:
    """Every (i, j) within RADIUS as sorted keys i * n + j; blocks of rows bound memory to ~budget cells.

    With `rows`, only the first `rows` hashes are compared with all n (a measured share of the work).
    """
    n = len(h)
    block = max(1, budget // n)
    found = []
    for start in range(0, rows or n, block):
        d = np.bitwise_count(h[start : min(start + block, rows or n), None] ^ h[None, :])
        q, i = np.nonzero(d <= RADIUS)
        found.append((q.astype(np.int64) + start) * n + i)
    return np.concatenate(found)


def mih(h: np.ndarray) -> tuple[np.ndarray, float]:
    began = time.perf_counter()
    q, i, _ = HashIndex(h).search(h, RADIUS)
    return q.astype(np.int64) * len(h) + i, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000],
                        help="N at which both methods run and must agree")  # fmt: skip
    parser.add_argument("--large", type=int, default=1_000_000, help="N for multi-index alone (0: skip)")
    parser.add_argument(
        "--peer-rows",
        type=int,
        default=0,
        help="at --large, also time all pairs for this many query rows against all N (a measured share)",
    )
    parser.add_argument("--uniform", action="store_true", help="uniformly random bits (the best case)")
    parser.add_argument(
        "--measure", type=Path, nargs="+", help="parquet files to measure bit frequencies from"
    )
    args = parser.parse_args()
    if args.uniform:
        freq, source = np.full(BITS, 0.5), "uniform (0.5 each)"
    elif args.measure:
        freq, count = measure_frequencies(args.measure)
        source = f"measured now from {count} distinct pHashes in {len(args.measure)} files"
    else:
        freq, source = np.array(REAL_FREQUENCIES), "real pHashes (373 pictures of six harvests, built in)"
    print(
        describe(
            hashes=f"{BITS} bits, bit frequencies {source}: {freq.min():.3f}-{freq.max():.3f}, "
            f"5% planted near copies",
            radius=RADIUS,
            peer="all pairs: numpy XOR + bitwise_count over row blocks of ~32M cells",
            rounds="1 per N (single-threaded numpy on both sides)",
        )
    )
    rng = np.random.default_rng(0)
    for n in args.sizes:
        h = hashes(n, rng, freq)
        ours, mine = mih(h)
        began = time.perf_counter()
        theirs = all_pairs(h)
        peer = time.perf_counter() - began
        assert np.array_equal(ours, theirs), f"the two methods disagree at N = {n:,}"
        pairs = int((ours // n != ours % n).sum())
        print(f"N = {n:,}: both find the same {pairs:,} near pairs within {RADIUS} bits; "
              f"multi-index {mine:.2f} s, all pairs {peer:.2f} s: {peer / mine:.1f}x")  # fmt: skip
    if args.large:
        h = hashes(args.large, rng, freq)
        began = time.perf_counter()
        index = HashIndex(h)
        built = time.perf_counter() - began
        q, i, _ = index.search(h, RADIUS)
        total = time.perf_counter() - began
        print(f"N = {args.large:,}: multi-index {total:.1f} s (index built in {built:.1f} s), "
              f"{int((q != i).sum()):,} near pairs; all pairs not run in full at this N")  # fmt: skip
        if args.peer_rows:
            rows = min(args.peer_rows, args.large)
            began = time.perf_counter()
            theirs = all_pairs(h, rows=rows)
            part = time.perf_counter() - began
            keys = q[q < rows].astype(np.int64) * args.large + i[q < rows]
            assert np.array_equal(np.sort(keys), theirs), "the two methods disagree on the measured rows"
            whole = part * args.large / rows
            print(f"  all pairs, first {rows:,} of {args.large:,} query rows against all: {part:.1f} s "
                  f"(same pairs as multi-index for those rows); each row costs the same, so all rows "
                  f"~{whole:,.0f} s (~{whole / 3600:.1f} h): ~{whole / total:.0f}x, "
                  f"{rows / args.large:.0%} of the work measured")  # fmt: skip


if __name__ == "__main__":
    main()
