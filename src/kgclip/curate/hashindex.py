"""Find every stored hash within a Hamming radius of a query, without comparing all pairs.

Multi-index hashing (Norouzi et al., 2012): a 64-bit hash is cut into 4 chunks of 16 bits. If two
hashes differ in at most r bits, then by the pigeonhole principle some chunk differs in at most
r // 4 of them. Each chunk has its own table, the hashes sorted by that chunk's value; a query
probes, in every table, its own chunk value and all values within r // 4 bits of it, and only the
hashes found that way are compared in full. With r ≤ 7 that is 4 × 17 probes per query; with
r ≤ 11, 4 × 137. `pairs`, the index against itself, proposes each pair once.

The candidates grow as the square of the hashes: about N / 65,536 share a chunk value when the
bits are independent. A perceptual hash's bits are not (neighbouring DCT coefficients' signs agree
up to 95% of the time on the scale benchmark's pictures), and cut into contiguous 16-bit chunks
they crowd a few chunk values: 7× the candidates of independent bits at a million hashes. So
the bits are first permuted (Hamming distance does not change) to spread correlated bits over
different chunks, chosen from the hashes themselves (`_layout`): 1.5× the independent figure.
The candidates are compared in a compiled loop (numba) over each table's hashes in sorted order, a
few nanoseconds each, keeping nothing but the matches.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from itertools import combinations

import numpy as np
from numba import njit

CHUNKS = 4
CHUNK_BITS = 16
_MASK = np.uint64((1 << CHUNK_BITS) - 1)
Matches = tuple[np.ndarray, np.ndarray, np.ndarray]  # query indices, stored indices, distances
BLOCK = 100_000  # queries searched at once, at most ...
CANDIDATES = 50_000_000  # ... and about this many candidate pairs (a fraction of a second) per block
# and chunk: the unit of work handed to a runner (Ray tasks in curate)


class HashIndex:
    """The stored hashes and their bit layout; the chunk tables are built one at a time while a
    search runs (12 bytes a hash each, where all four at once held 48)."""

    def __init__(self, hashes: np.ndarray | list[int]) -> None:
        self.hashes = np.asarray(hashes, dtype=np.uint64)
        self._bits = _layout(self.hashes)  # permuted bit i is the hash's bit _bits[i]

    def __len__(self) -> int:
        return len(self.hashes)

    def search(self, queries: np.ndarray | list[int], radius: int, blocks: BlockMap | None = None) -> Matches:
        """All (query index, stored index, distance) with distance ≤ radius, sorted. The queries are
        searched in independent blocks; `blocks` runs them (in order; `search_blocks` by default,
        here, or as Ray tasks: curate/ray_run.py)."""
        queries = np.asarray(queries, dtype=np.uint64)
        q, i = self._run(queries, radius, blocks, above=False)
        return q, i, np.bitwise_count(queries[q] ^ self.hashes[i]).astype(np.int64)

    def pairs(self, radius: int, blocks: BlockMap | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every pair (a, b) of stored hashes with a < b within `radius`, sorted: the index searched
        against itself, each pair proposed once instead of in both orders and with itself (half
        the candidates of `search(self.hashes, radius)`)."""
        return self._run(self.hashes, radius, blocks, above=True)

    def _run(
        self, queries: np.ndarray, radius: int, blocks: BlockMap | None, above: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if radius < 0 or radius >= CHUNKS * CHUNK_BITS:
            raise ValueError(f"radius must be within 0..{CHUNKS * CHUNK_BITS - 1}")
        if len(self.hashes) == 0 or len(queries) == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        permuted = _permute(self.hashes, self._bits)
        queries = permuted if above else _permute(queries, self._bits)
        probes = len(_flips(radius // CHUNKS))
        found: list[np.ndarray] = []
        for c in range(CHUNKS):
            table = Table(permuted, c)
            block = table.block(probes)
            starts = list(range(0, len(queries), block))
            found.extend((blocks or search_blocks)(table, queries, starts, block, radius, above))
            del table
        keys = np.unique(np.concatenate(found))  # a pair proposed by several chunks counts once
        return keys // len(self.hashes), keys % len(self.hashes)


class Table:
    """One chunk's table: where each chunk value's run starts, the positions in chunk-value order
    (stable: ascending within a run, so a self-search can stop at the query's own; 32 bits when
    they fit) and the permuted hashes in that order (a probe's candidates are contiguous)."""

    def __init__(self, permuted: np.ndarray, chunk: int) -> None:
        keys = _chunk(permuted, chunk).astype(np.uint16)
        order = np.argsort(keys, kind="stable")
        self.chunk = chunk
        self.starts = np.zeros((1 << CHUNK_BITS) + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys, minlength=1 << CHUNK_BITS), out=self.starts[1:])
        del keys
        self.hashes = permuted[order]
        self.order = order.astype(np.int32) if len(order) < 2**31 else order

    def block(self, probes: int) -> int:
        """Queries per block: about CANDIDATES candidate pairs, estimating a probe's matches by how
        many stored hashes share a chunk value with a stored hash (the queries are usually the
        stored hashes themselves; real hashes crowd some values, so this exceeds len / 65536)."""
        runs = np.diff(self.starts).astype(np.float64)
        per_probe = float((runs**2).sum()) / max(1, len(self.order))
        return int(min(BLOCK, max(256, CANDIDATES // max(1.0, probes * per_probe))))

    def search_block(self, queries: np.ndarray, offset: int, radius: int, above: bool = False) -> np.ndarray:
        """Matches of one block of (permuted) queries, the first numbered `offset`, as keys
        query * stored hashes + stored, unsorted; with `above`, the queries are the stored hashes
        from `offset` on and only stored positions after each query's own are proposed."""
        return _matches(
            queries, offset, radius, _flips(radius // CHUNKS), self.chunk, self.starts, self.order,
            self.hashes, above,
        )


BlockMap = Callable[[Table, np.ndarray, list[int], int, int, bool], list[np.ndarray]]


def search_blocks(
    table: Table, queries: np.ndarray, starts: list[int], block: int, radius: int, above: bool
) -> list[np.ndarray]:
    """Each block of `block` queries from each start, in this process."""
    return [table.search_block(queries[s : s + block], s, radius, above) for s in starts]


@njit(cache=True)
def _matches(
    queries: np.ndarray,
    offset: int,
    radius: int,
    flips: np.ndarray,
    chunk: int,
    starts: np.ndarray,
    order: np.ndarray,
    hashes: np.ndarray,
    above: bool,
) -> np.ndarray:  # pragma: no cover - compiled; tested against brute force
    """Keys query * n + stored of every candidate within the radius, in no order."""
    n = len(order)
    found = np.empty(1024, dtype=np.int64)
    m = 0
    values = ((queries >> np.uint64(chunk * CHUNK_BITS)) & _MASK).astype(np.int64)
    # the queries in chunk-value order: consecutive queries probe the same or neighbouring runs,
    # which stay in cache (in position order each probe is a miss to memory, 3.5x slower)
    for j in np.argsort(values, kind="mergesort"):
        q = queries[j]
        own = offset + j
        for f in flips:
            probe = values[j] ^ np.int64(f)
            lo, hi = starts[probe], starts[probe + 1]
            # a run holds ascending positions: a self-search walks it down to the query's own
            for k in range(hi - 1, lo - 1, -1):
                if above and order[k] <= own:
                    break
                if _ones(q ^ hashes[k]) <= radius:
                    if m == len(found):
                        found = np.concatenate((found, np.empty(m, dtype=np.int64)))
                    found[m] = own * n + order[k]
                    m += 1
    return found[:m]


@njit(cache=True, inline="always")
def _ones(x: np.uint64) -> int:  # pragma: no cover - compiled
    """Set bits of a 64-bit word (SWAR; LLVM turns it into one popcnt where the CPU has it)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


def _layout(hashes: np.ndarray) -> np.ndarray:
    """A permutation of the 64 bits that puts correlated bits in different chunks: each bit, the
    most correlated first, joins the chunk with room whose bits it correlates with least (|Pearson|
    over at most 16,384 of the hashes, evenly spaced: deterministic, 8 MB and a few milliseconds;
    the permutation changes only the speed, never the matches)."""
    if len(hashes) < 2:
        return np.arange(64, dtype=np.uint64)
    sample = hashes[:: max(1, len(hashes) // 16_384)]
    bits = np.empty((len(sample), 64), dtype=np.float64)
    for b in range(64):
        bits[:, b] = (sample >> np.uint64(b)) & np.uint64(1)
    bits -= bits.mean(axis=0)
    covariance = bits.T @ bits
    spread = np.sqrt(np.diag(covariance))
    scale = np.outer(spread, spread)
    corr = np.abs(np.divide(covariance, scale, out=np.zeros_like(covariance), where=scale > 0))
    np.fill_diagonal(corr, 0.0)  # a constant bit (the 64th of a 63-bit hash) correlates with none
    chunks: list[list[int]] = [[] for _ in range(CHUNKS)]
    for b in np.argsort(-corr.max(axis=1), kind="stable").tolist():
        cost = [corr[b, chunk].sum() if len(chunk) < CHUNK_BITS else np.inf for chunk in chunks]
        chunks[int(np.argmin(cost))].append(b)
    return np.array([b for chunk in chunks for b in chunk], dtype=np.uint64)


@njit(cache=True)
def _permute(hashes: np.ndarray, bits: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    out = np.zeros_like(hashes)
    for j in range(len(hashes)):
        h = hashes[j]
        for i in range(len(bits)):
            out[j] |= ((h >> bits[i]) & np.uint64(1)) << np.uint64(i)
    return out


def _chunk(hashes: np.ndarray, c: int) -> np.ndarray:
    return (hashes >> np.uint64(c * CHUNK_BITS)) & _MASK


@cache
def _flips(bits: int) -> np.ndarray:
    """Every 16-bit mask with at most `bits` ones (XORed onto a chunk value, the probes). Made once
    per radius: a search asks for them per block and chunk, and the decontamination index searches
    a few hashes at a time, where making them was most of the search. Read-only, as it is shared."""
    masks = [0]
    for k in range(1, bits + 1):
        masks.extend(sum(1 << b for b in chosen) for chosen in combinations(range(CHUNK_BITS), k))
    flips = np.array(masks, dtype=np.uint64)
    flips.flags.writeable = False
    return flips
