"""Deterministic, nested subsets of a harvest, for data-fraction experiments (`[train] data_fraction`).

The method's authors cut their data by query list (1/2 … 1/32 of the queries), so kgclip does too by
default: a query is in the fraction f when u(query) < f, u being a number in [0, 1) drawn from the
seed and the query's id (blake2b). The subset at f therefore contains the subset at every smaller f,
by construction, on any machine and without a list to keep. A picture is kept when one of its
queries is, and is paired only with the kept queries' texts, as if the others had never been
searched; its alt texts stay, since they came with the picture. `fraction_by = "picture"` keeps
each picture by u(its pixels' SHA-256) instead, which holds across re-curations.

The fraction is of queries (or pictures) drawn independently, so at a small harvest the share kept
varies around f; the run records the counts it got (`subset` in its meta).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from kgclip.config import TrainConfig


def share(seed: int, kind: str, ident: str) -> float:
    """u in [0, 1): the same for the same (seed, kind, id) everywhere."""
    digest = hashlib.blake2b(f"fraction:{seed}:{kind}:{ident}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Subset:
    fraction: float
    by: str  # "query" or "picture"
    seed: int

    @classmethod
    def of(cls, cfg: TrainConfig, seed: int) -> Subset | None:
        return cls(cfg.data_fraction, cfg.fraction_by, seed) if cfg.data_fraction < 1 else None

    def keeps_query(self, query_id: str) -> bool:
        return share(self.seed, "query", query_id) < self.fraction

    def keeps_picture(self, sha256: str) -> bool:
        return share(self.seed, "picture", sha256) < self.fraction

    def select(self, meta: dict[str, Any]) -> dict[str, Any] | None:
        """The sample's kgclip JSON as the subset has it (only its kept queries), or None: not in it."""
        if self.by == "picture":
            return meta if self.keeps_picture(str(meta.get("sha256"))) else None
        kept = [q for q in meta.get("queries") or [] if self.keeps_query(str(q.get("id")))]
        return meta | {"queries": kept} if kept else None

    def count(self, samples: Path) -> dict[str, int]:
        """Pictures and queries in the subset, from the harvest's samples table (train split), read a
        batch at a time."""
        pictures, queries = 0, set()
        rows = pq.ParquetFile(samples).iter_batches(columns=["sha256", "query_ids", "split"])
        for batch in rows:
            for sha, qids, split in zip(*(c.to_pylist() for c in batch.columns), strict=True):
                if split != "train":
                    continue
                if self.by == "picture":
                    chosen = self.keeps_picture(sha)
                    kept = qids if chosen else []
                else:
                    kept = [q for q in qids if self.keeps_query(q)]
                    chosen = bool(kept)
                pictures += chosen
                queries.update(kept)
        return {"pictures": pictures, "queries": len(queries)}
