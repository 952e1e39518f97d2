"""Find every stored hash within a Hamming radius of a query, without comparing all pairs.

Multi-index hashing (Norouzi et al., 2012): a 64-bit hash is cut into 4 chunks of 16 bits. If two
hashes differ in at most r bits, then by the pigeonhole principle some chunk differs in at most
r // 4 of them. Each chunk has its own sorted table; a query probes, in every table, its own chunk
value and all values within r // 4 bits of it, and only the hashes found that way are compared in
full. With r ≤ 7 that is 4 × 17 probes per query; with r ≤ 11, 4 × 137. The candidates grow as the
square of the hashes (about N / 65,536 share a chunk value); `pairs`, the index against itself,
proposes each pair once.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np

CHUNKS = 4
CHUNK_BITS = 16
_MASK = np.uint64((1 << CHUNK_BITS) - 1)
Matches = tuple[np.ndarray, np.ndarray, np.ndarray]  # query indices, stored indices, distances
BLOCK = 20_000  # queries probed at once, at most ...
CANDIDATES = 2_000_000  # ... and about this many candidate pairs per block: bounds the temporary
# arrays (~100 MB) whatever the number of stored hashes, which sets how many share a chunk value


class HashIndex:
    def __init__(self, hashes: np.ndarray | list[int]) -> None:
        self.hashes = np.asarray(hashes, dtype=np.uint64)
        n = len(self.hashes)
        self._tables = []
        for c in range(CHUNKS):
            keys = _chunk(self.hashes, c)
            order = np.argsort(keys, kind="stable")
            # chunk value * n + position, ascending: the hashes with one chunk value are a run, in
            # position order, so a self-search can start each probe after the query's own position
            ranked = keys[order].astype(np.int64) * n + order
            # positions in 32 bits when they fit: 16 bytes less per hash over the four tables
            self._tables.append((ranked, order.astype(np.int32) if n < 2**31 else order))

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
        the candidates of `search(self.hashes, radius)`, which grow as the square of the hashes)."""
        return self._run(self.hashes, radius, blocks, above=True)

    def _run(
        self, queries: np.ndarray, radius: int, blocks: BlockMap | None, above: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if radius < 0 or radius >= CHUNKS * CHUNK_BITS:
            raise ValueError(f"radius must be within 0..{CHUNKS * CHUNK_BITS - 1}")
        if len(self.hashes) == 0 or len(queries) == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        block = self._block(len(_flips(radius // CHUNKS)))
        starts = list(range(0, len(queries), block))
        keys = np.concatenate((blocks or search_blocks)(self, queries, starts, block, radius, above))
        return keys // len(self.hashes), keys % len(self.hashes)

    def _block(self, probes: int) -> int:
        """Queries per block: about CANDIDATES candidate pairs, estimating a probe's matches by how
        many stored hashes share a chunk value with a stored hash (the queries are usually the
        stored hashes themselves; real hashes crowd some values, so this exceeds len / 65536)."""
        per_probe = 0.0
        for ranked, _ in self._tables:
            if len(ranked) == 0:
                continue
            keys = ranked // len(ranked)
            starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
            runs = np.diff(np.append(starts, len(keys)))
            per_probe += float((runs.astype(np.float64) ** 2).sum()) / max(1, len(keys))
        return int(min(BLOCK, max(256, CANDIDATES // max(1.0, probes * per_probe))))

    def search_block(self, queries: np.ndarray, offset: int, radius: int, above: bool = False) -> np.ndarray:
        """Matches of one block of queries (the first numbered `offset`) as sorted unique keys
        query * len(self) + stored; with `above`, the queries are the stored hashes from `offset`
        on and only stored positions after each query's own are proposed."""
        flips = _flips(radius // CHUNKS)
        n = len(self.hashes)
        found: list[np.ndarray] = []
        for c, (ranked, order) in enumerate(self._tables):
            run = (_chunk(queries, c)[:, None] ^ flips[None, :]).astype(np.int64) * n  # each probe's run
            start = run + (np.arange(offset + 1, offset + 1 + len(queries))[:, None] if above else 0)
            lo = np.searchsorted(ranked, start.ravel(), side="left")
            counts = np.searchsorted(ranked, (run + n).ravel(), side="left") - lo
            total = int(counts.sum())
            if total == 0:
                continue
            owners = np.repeat(np.arange(len(queries)), len(flips))
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            q = np.repeat(owners, counts)
            i = order[np.repeat(lo, counts) + offsets]
            close = np.bitwise_count(queries[q] ^ self.hashes[i]) <= radius  # a chunk only proposes
            found.append((q[close] + offset).astype(np.int64) * len(self.hashes) + i[close])
        # a pair proposed by several chunks counts once
        return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)


BlockMap = Callable[["HashIndex", np.ndarray, list[int], int, int, bool], list[np.ndarray]]


def search_blocks(
    index: HashIndex, queries: np.ndarray, starts: list[int], block: int, radius: int, above: bool
) -> list[np.ndarray]:
    """Each block of `block` queries from each start, in this process."""
    return [index.search_block(queries[s : s + block], s, radius, above) for s in starts]


def _chunk(hashes: np.ndarray, c: int) -> np.ndarray:
    return (hashes >> np.uint64(c * CHUNK_BITS)) & _MASK


def _flips(bits: int) -> np.ndarray:
    """Every 16-bit mask with at most `bits` ones (XORed onto a chunk value, the probes)."""
    masks = [0]
    for k in range(1, bits + 1):
        masks.extend(sum(1 << b for b in chosen) for chosen in combinations(range(CHUNK_BITS), k))
    return np.array(masks, dtype=np.uint64)
