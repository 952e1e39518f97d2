"""The columnar grouping (curate/plan.py) makes exactly the groups of the object path
(`group_duplicates` in tests/curate_reference.py): same kept pixels, copies, hits and near counts,
in the same order."""

import random

import pytest

from curate_reference import group_duplicates
from kgclip.curate.plan import plan
from kgclip.tables import Fetched, Hit, write_records

LICENCES = ["CC BY 4.0", "cc0", None, "by-sa", "public domain", "All rights reserved"]


def _harvest(seed: int, pictures: int = 300) -> tuple[list[Fetched], list[Hit]]:
    rng = random.Random(seed)
    hashes = [rng.getrandbits(63) for _ in range(pictures)]
    for p in range(1, pictures, 4):  # near copies a few bits away, some in another colour
        hashes[p] = hashes[p - 1] ^ (1 << rng.randrange(63)) ^ (1 << rng.randrange(63))
    colours = [rng.choice([0x808080, 0x10F020]) for _ in range(pictures)]
    fetched: list[Fetched] = []
    for k in range(pictures * 2):
        p = rng.randrange(pictures)
        url = f"https://h{rng.randrange(5)}.example/{rng.randrange(pictures * 3)}.jpg"  # some URLs twice
        status = rng.choice(["ok"] * 8 + ["rejected", "failed"])
        size = rng.choice([64, 128, 128, 256])
        fetched.append(
            Fetched(
                url, status, None if status == "ok" else "http_404", None, "p-00000.tar", f"{k:010d}",
                size * 2, size * 2, size, size, 100, None,
                None if status != "ok" or rng.random() < 0.03 else f"{p:064x}",
                phash=None if rng.random() < 0.05 else hashes[p], colour=colours[p],
            )
        )
    hits = []
    for f in fetched:
        for _ in range(rng.randrange(3)):
            hits.append(
                Hit(
                    f"q{rng.randrange(9)}", rng.choice(["a", "b"]), rng.randrange(4), f.url,
                    rng.choice([None, f"{f.url}.html"]), rng.choice(["", "a fox", " a fox "]), None, None,
                    rng.choice(LICENCES), rng.choice([None, "someone"]),
                    rng.choice([None, '{"field": "caption", "words": ["fox"], "subject": true}']),
                )
            )
    hits.append(Hit("q1", "a", 0, "https://nowhere.example/x.jpg", None, "", None, None, None, None))
    rng.shuffle(hits)
    return fetched, hits


def _shape(groups) -> list[tuple]:
    return [
        (g.pixel_sha256, g.near, g.accepted, [c.url for c in g.copies], [c.member for c in g.copies],
         [(h.query_id, h.backend, h.rank, h.url, h.page_url, h.alt_text, h.license, h.attribution, h.evidence)
          for h in g.hits])
        for g in groups
    ]


@pytest.mark.parametrize(
    ("seed", "distance", "accepted"),
    [(0, 0, ()), (1, 6, ()), (2, 6, ("cc0",)), (3, 4, ("cc-by", "pdm")), (4, 0, ("cc0",))],
)
def test_the_plan_groups_as_the_object_path_does(tmp_path, seed, distance, accepted):
    fetched, hits = _harvest(seed)
    write_records(tmp_path / "fetched.parquet", fetched, Fetched)
    write_records(tmp_path / "hits.parquet", hits, Hit)
    made = plan(
        tmp_path / "fetched.parquet", tmp_path / "hits.parquet", distance, 48, accepted,
    )
    expected = group_duplicates(fetched, hits, distance, 48, accepted)
    assert made.sha(range(len(made))) == [g.pixel_sha256 for g in expected]
    # several buckets of 17 groups; windows never cross a bucket's bounds
    made.spill(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", tmp_path / "spill", per_bucket=17)
    got = [g for _, groups in made.windows(range(len(made)), window=5) for g in groups]
    assert _shape(got) == _shape(expected)
    some = [f for f in range(len(made)) if f % 3 == 1]
    assert _shape(g for _, groups in made.windows(some, window=4) for g in groups) == _shape(
        expected[f] for f in some
    )
    assert any(g.near for g in expected) == (distance > 0)  # the case is exercised
    assert any(len(g.copies) > 1 for g in expected)


def test_an_empty_harvest_makes_an_empty_plan(tmp_path):
    write_records(tmp_path / "fetched.parquet", [], Fetched)
    write_records(tmp_path / "hits.parquet", [], Hit)
    made = plan(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", 6)
    made.spill(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", tmp_path / "spill")
    assert len(made) == 0 and list(made.windows([])) == []


def test_a_fetched_table_from_before_the_hash_columns_groups_as_if_they_were_empty(tmp_path):
    """fetched.parquet written before `phash` and `colour` existed: those columns are read as null."""
    import dataclasses

    import pyarrow.parquet as pq

    fetched, hits = _harvest(5, pictures=60)
    write_records(tmp_path / "fetched.parquet", fetched, Fetched)
    old = pq.read_table(tmp_path / "fetched.parquet").drop_columns(["phash", "colour"])
    pq.write_table(old, tmp_path / "fetched.parquet")
    write_records(tmp_path / "hits.parquet", hits, Hit)
    made = plan(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", 6, 48, ("cc0",))
    blank = [dataclasses.replace(f, phash=None, colour=None) for f in fetched]
    expected = group_duplicates(blank, hits, 6, 48, ("cc0",))
    made.spill(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", tmp_path / "spill")
    assert _shape(g for _, groups in made.windows(range(len(made))) for g in groups) == _shape(expected)
    hashes, valid = made.copy_phashes()
    assert len(hashes) == sum(len(g.copies) for g in expected) and not valid.any()


def test_kept_hashes_are_packed_only_when_they_are_lowercase_sha256_hex():
    import numpy as np

    from kgclip.curate.plan import _packed

    hexes = np.array([f"{k * 7919:064x}".encode() for k in range(70_000)], dtype="S64")  # > a batch
    every = np.arange(70_000)[::-1]
    packed = _packed(hexes, every)
    assert packed.shape == (70_000, 32) and bytes(packed[-2]).hex() == f"{7919:064x}"
    assert bytes(packed[0]).hex() == f"{69_999 * 7919:064x}"
    tail = hexes.copy()
    tail[0] = b"G" * 64  # one odd hash in the last batch taken: all stay text
    assert np.array_equal(_packed(tail, every), tail[every])
    short = np.array([b"abc", b"def"])
    assert np.array_equal(_packed(short, np.array([1, 0])), short[::-1])


def test_small_batches_and_several_lookup_passes_make_the_same_groups(tmp_path, monkeypatch):
    """Every step that reads or packs in batches (the columns, the hits' URL lookup in passes, the
    pixel-hash runs) cut at 7 rows: the groups are those of the reference still."""
    from kgclip.curate import plan as module

    monkeypatch.setattr(module, "BATCH", 7)
    fetched, hits = _harvest(6, pictures=80)
    write_records(tmp_path / "fetched.parquet", fetched, Fetched)
    write_records(tmp_path / "hits.parquet", hits, Hit)
    passes = []
    lookup = module.pc.index_in
    monkeypatch.setattr(module.pc, "index_in", lambda *a, **k: passes.append(1) or lookup(*a, **k))
    made = plan(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", 6, 48, ("cc0",))
    assert 1 < len(passes) <= module.HIT_PASSES  # the hits' URLs in slices, not one lookup per batch
    expected = group_duplicates(fetched, hits, 6, 48, ("cc0",))
    made.spill(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", tmp_path / "spill", per_bucket=9)
    got = [g for _, groups in made.windows(range(len(made)), window=4) for g in groups]
    assert _shape(got) == _shape(expected)


def test_the_plan_lets_go_of_its_hashes_and_queries_once_taken(tmp_path):
    """The perceptual hashes go after the decontamination step even with no evaluation index (they
    are 9 bytes a copy), and the query codes once the balancing has them."""
    from kgclip.curate.stage import _eval_copies
    from kgclip.curate.write import Drops

    fetched, hits = _harvest(7, pictures=40)
    write_records(tmp_path / "fetched.parquet", fetched, Fetched)
    write_records(tmp_path / "hits.parquet", hits, Hit)
    made = plan(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", 6)
    assert made.phashes is not None and made.queries is not None
    assert _eval_copies(made, Drops(len(made)), [], 6) == {}
    assert made.phashes is None
    owner, codes, ids = made.query_pairs()
    assert made.queries is None and len(owner) == len(codes) == made.hit_start[-1] and ids


def test_pixel_hashes_of_several_lengths_across_batches_group_as_the_reference(tmp_path, monkeypatch):
    """The batch-wise fixed-width hashes fall back to the whole column when a later batch's hashes
    have another length (hashes are fetch's 64-hex in practice; the fallback keeps any text right)."""
    import dataclasses

    from kgclip.curate import plan as module

    monkeypatch.setattr(module, "BATCH", 5)
    fetched, hits = _harvest(8, pictures=50)
    fetched = [
        dataclasses.replace(f, pixel_sha256=f.pixel_sha256[:40]) if f.pixel_sha256 and k > 60 else f
        for k, f in enumerate(fetched)
    ]
    write_records(tmp_path / "fetched.parquet", fetched, Fetched)
    write_records(tmp_path / "hits.parquet", hits, Hit)
    made = plan(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", 6, 48)
    expected = group_duplicates(fetched, hits, 6, 48)
    assert made.sha(range(len(made))) == [g.pixel_sha256 for g in expected]
    made.spill(tmp_path / "fetched.parquet", tmp_path / "hits.parquet", tmp_path / "spill")
    got = [g for _, groups in made.windows(range(len(made))) for g in groups]
    assert _shape(got) == _shape(expected)
