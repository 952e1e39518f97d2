"""Data fractions: nested by construction, cut by query (the method's way) or by picture, and the
training stream yields exactly the subset's pictures, paired only with their kept queries' texts."""

import itertools

import pyarrow.parquet as pq
import pytest
import torch

from kgclip.config import TrainConfig
from kgclip.train.data import ShardStream
from kgclip.train.subset import Subset

FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def _kept(samples, subset):
    rows = pq.read_table(samples).to_pylist()
    if subset.by == "picture":
        return {r["key"] for r in rows if subset.keeps_picture(r["sha256"])}
    return {r["key"] for r in rows if any(subset.keeps_query(q) for q in r["query_ids"])}


@pytest.mark.parametrize("by", ["query", "picture"])
def test_each_fraction_contains_every_smaller_one(demo_run, by):
    samples = demo_run / "samples.parquet"
    kept = [_kept(samples, Subset(f, by, seed=0)) for f in FRACTIONS]
    for smaller, larger in itertools.pairwise(kept):
        assert smaller < larger  # strictly: each step adds pictures on the demo's 187
    assert len(kept[-1]) == 187
    counts = [Subset(f, by, seed=0).count(samples) for f in FRACTIONS]
    assert [c["pictures"] for c in counts] == [len(k) for k in kept]
    # another seed draws another subset of about the same size
    other = _kept(samples, Subset(1 / 4, by, seed=1))
    assert other != kept[3] and abs(len(other) - len(kept[3])) < 40


def test_by_query_the_share_of_queries_is_about_the_fraction():
    ids = [f"q{i}" for i in range(20_000)]
    for f in FRACTIONS[:-1]:
        share = sum(Subset(f, "query", 0).keeps_query(q) for q in ids) / len(ids)
        assert abs(share - f) < 4 * (f * (1 - f) / len(ids)) ** 0.5  # four standard deviations


def test_a_picture_keeps_only_its_kept_queries():
    subset = Subset(0.5, "query", 0)
    ids = [f"q{i}" for i in range(40)]
    meta = {"key": "k", "alt_texts": ["a"], "queries": [{"id": q, "kind": "entity"} for q in ids]}
    chosen = subset.select(meta)
    assert [q["id"] for q in chosen["queries"]] == [q for q in ids if subset.keeps_query(q)]
    assert chosen["alt_texts"] == ["a"] and len(meta["queries"]) == 40  # the original is untouched
    dropped = [q for q in ids if not subset.keeps_query(q)][:3]
    assert subset.select(meta | {"queries": [{"id": q} for q in dropped]}) is None


def test_the_training_stream_yields_the_subset_only(demo_run):
    subset = Subset(1 / 4, "query", 0)
    expected = _kept(demo_run / "samples.parquet", subset)
    shards = sorted(str(p) for p in (demo_run / "shards").glob("*.tar"))
    cfg = TrainConfig(batch_size=8, shuffle_buffer=16, data_fraction=0.25)
    stream = ShardStream(
        shards,
        cfg,
        lambda image: torch.zeros(3, 4, 4),
        lambda texts: torch.zeros(len(texts), 4, dtype=torch.long),
        seed=0,
        rank=0,
        image_size=4,
        per_epoch=4,
        start=0,
        stop=12,
        subset=subset,
    )
    seen = {key for batch in stream for key in batch.keys}
    assert seen and seen <= expected
    assert len(seen) > len(expected) // 2  # 96 draws from about 45 pictures reach most of them
