"""How curate cuts the writing into jobs (curate/write.py): every group in exactly one job, each
job's shards its own, keys and shard numbers independent of the cut."""

import tarfile

import numpy as np
import pyarrow as pa
import pytest

from kgclip.curate.shards import PartReader, index_part
from kgclip.curate.write import ASIDE, DROPPED, Drops, jobs, merge_samples
from kgclip.tario import add_member

SCHEMA = pa.schema([("key", pa.int64())])


def _drops(groups: int, why: dict[int, tuple[str, str]]) -> Drops:
    drops = Drops(groups)
    for group, (kind, detail) in why.items():
        drops.add([group], kind, detail)
    return drops


def _layout(groups: int, why: dict, held: np.ndarray, per_shard: int, per_job: int) -> list[dict]:
    return [
        {
            "groups": job.groups.tolist(),
            "split": job.split.tolist(),
            "key": job.key.tolist(),
            "first": job.first,
            "why": {
                g: (ASIDE[d - 1], job.details[c])
                for g, d, c in zip(job.groups.tolist(), job.drop.tolist(), job.detail.tolist(), strict=True)
                if d
            },
        }
        for job in jobs(groups, _drops(groups, why), held, per_shard, per_job)
    ]


def test_one_job_holds_every_group_in_order():
    why = {1: ("eval", "x"), 4: ("entity", "max_per_entity 1")}
    held = np.array([False, True, False, False])  # the kept groups 0, 2, 3, 5: the second held out
    (job,) = _layout(6, why, held, per_shard=2, per_job=0)
    assert job == {
        "groups": [0, 1, 2, 3, 4, 5],
        "split": [0, DROPPED, 1, 0, DROPPED, 0],
        "key": [0, -1, 1, 2, -1, 3],
        "first": (0, 0),
        "why": why,
    }


def test_jobs_begin_on_shard_boundaries_and_dropped_groups_go_with_the_training_job_of_their_range():
    # groups 0..9: 2 and 7 dropped, 5 held out; training samples are groups 0 1 3 4 6 8 9
    why = {2: ("licence", "no"), 7: ("query", "max_per_query 3")}
    kept = [0, 1, 3, 4, 5, 6, 8, 9]
    held = np.array([g == 5 for g in kept])
    found = _layout(10, why, held, per_shard=2, per_job=3)  # rounded up to 4: two shards a job
    assert [j["groups"] for j in found] == [[0, 1, 2, 3, 4], [6, 7, 8, 9], [5]]
    assert [j["first"] for j in found] == [(0, 0), (4, 0), (0, 0)]
    assert [j["why"] for j in found] == [{2: why[2]}, {7: why[7]}, {}]
    assert found[2]["split"] == [1] and found[2]["key"] == [4]
    assert found[1]["key"] == [5, -1, 6, 7]
    # every group once, every key once
    groups = sorted(g for j in found for g in j["groups"])
    assert groups == list(range(10))
    keys = sorted(k for j in found for k in j["key"] if k >= 0)
    assert keys == list(range(len(kept)))


@pytest.mark.parametrize("per_job", [1, 2, 5, 100])
def test_held_out_jobs_start_on_held_out_shard_boundaries(per_job):
    rng = np.random.default_rng(per_job)
    held = rng.random(50) < 0.3
    found = jobs(50, Drops(50), held, 3, per_job)
    size = -(-per_job // 3) * 3
    val = [j for j in found if (j.split == 1).any()]
    assert all((j.split == 1).all() for j in val)
    assert [j.first[1] for j in val] == list(range(0, int(held.sum()), size))
    train = [j for j in found if (j.split == 0).any()]
    assert [j.first[0] for j in train] == list(range(0, int((~held).sum()), size))
    assert all(len(j) <= size for j in found)


def test_no_group_makes_one_empty_job():
    (job,) = jobs(0, Drops(0), np.zeros(0, dtype=bool), 5, 10)
    assert len(job.groups) == 0 and job.first == (0, 0)


def test_the_jobs_sample_rows_are_merged_in_key_order_across_batch_boundaries(tmp_path):
    """Rows come back in key order however the jobs' files are cut into batches and however many
    rows the merge takes at once (a batch ending exactly where a take ends included)."""
    held = np.array([n % 3 == 1 for n in range(23)])
    found = jobs(25, _drops(25, {4: ("eval", "x"), 17: ("licence", "y")}), held, per_shard=2, per_job=4)
    for job in found:
        keys = job.key[job.split != DROPPED].tolist()
        with pa.OSFile(str(tmp_path / f"samples-{job.number:05d}.arrow"), "wb") as sink:
            writer = pa.ipc.new_stream(sink, SCHEMA)
            for lo in range(0, len(keys), 2):  # batches of two rows
                writer.write_table(pa.table({"key": keys[lo : lo + 2]}, schema=SCHEMA))
            writer.close()

    class Out:
        def __init__(self) -> None:
            self.keys: list[int] = []

        def add_table(self, table: pa.Table) -> None:
            self.keys += table.column("key").to_pylist()

    for batch in (1, 2, 3, 4, 100):
        out = Out()
        merge_samples(tmp_path, found, out, batch=batch)
        assert out.keys == list(range(23)), batch


def test_a_saved_part_index_reads_the_same_members_as_a_scan(tmp_path):
    """Ray tasks read members through indexes saved once (shards.index_part); a part without a saved
    index is scanned, and a name stored twice reads its last member either way."""
    parts, indexes = tmp_path / "parts", tmp_path / "index"
    parts.mkdir()
    members = [("a", b"first"), ("b", b"bee"), ("a", b"second")]
    with tarfile.open(parts / "p-00000.tar", "w") as tar:
        for name, data in members:
            add_member(tar, f"{name}.jpg", data)
    with tarfile.open(parts / "p-00001.tar", "w") as tar:
        add_member(tar, "c.jpg", b"sea")
    index_part(parts / "p-00000.tar", indexes)
    assert sorted(p.name for p in indexes.iterdir()) == ["p-00000.tar.npz"]
    for reader in (PartReader(parts), PartReader(parts, indexes=indexes)):
        got = [reader.read("p-00000.tar", m) for m in ("a", "b")] + [reader.read("p-00001.tar", "c")]
        assert got == [b"second", b"bee", b"sea"]
        with pytest.raises(FileNotFoundError):
            reader.read("p-00000.tar", "z")
        reader.close()


def test_drops_keep_one_detail_per_distinct_text():
    """A million pictures balanced out cost a byte and an int each, not a record each."""
    drops = Drops(6)
    drops.add(np.array([0, 2, 4]), "entity", "max_per_entity 2")
    drops.add([5], "eval", "cub:a.jpg (distance 3)")
    drops.add(np.array([1]), "entity", "max_per_entity 2")
    assert drops.details == ["max_per_entity 2", "cub:a.jpg (distance 3)"]
    assert drops.kind.tolist() == [3, 3, 3, 0, 3, 1] and drops.detail.tolist() == [0, 0, 0, 0, 0, 1]
    assert len(drops) == 5
