"""tables.GroupWriter: rows appended a few at a time (as records, tuples or tables) make the file
`write_records` makes (tests/test_streaming.py: its atomicity under failure and SIGKILL)."""

import pyarrow.parquet as pq
import pytest

from kgclip.tables import GroupWriter, Rejected, Sample, to_table, write_records


def _samples(n: int) -> list[Sample]:
    return [
        Sample(
            f"{i:09d}", f"shard-{i // 7:05d}.tar", f"{i:064x}", 8, 8, 16, 16,
            [f"https://h{k}.example/{i}.jpg" for k in range(i % 4 + 1)],  # lists of several lengths
            [f"https://h/{i}.html"] * (i % 3), [f"a fox {i % 50}"] * (i % 2), [f"q{i % 5}"], [f"e{i % 4}"],
            "CC0-1.0" if i % 2 else None, None, f"caption {i}", i * 7919, "train",
            ['{"query_id": "q1"}'] if i % 4 == 0 else [],
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(("rows", "step"), [(500, 1), (500, 13), (500, 500), (20_000, 1024)])
def test_appended_records_are_byte_identical_to_one_write(tmp_path, rows, step):
    """Also past the parquet writer's batches of 1,024 rows, where list columns written from
    several chunks would page differently (the row group is written from one chunk)."""
    samples = _samples(rows)
    write_records(tmp_path / "whole.parquet", samples, Sample)
    with GroupWriter(tmp_path / "appended.parquet", Sample.SCHEMA, 65_536) as out:
        for n, first in enumerate(range(0, len(samples), step)):
            some = samples[first : first + step]
            if n % 3 == 0:
                out.add_records(some)
            elif n % 3 == 1:
                out.add_table(to_table(some, Sample))
            else:
                for sample in some:
                    out.add(tuple(getattr(sample, name) for name in Sample.SCHEMA.names))
    assert out.rows == rows
    assert (tmp_path / "appended.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_an_empty_table_is_the_one_write_records_makes(tmp_path):
    write_records(tmp_path / "whole.parquet", [], Rejected)
    with GroupWriter(tmp_path / "appended.parquet", Rejected.SCHEMA) as out:
        out.add_records([])
    assert (tmp_path / "appended.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_past_a_row_group_the_rows_are_the_same_in_groups_of_the_given_size(tmp_path):
    samples = _samples(230)
    write_records(tmp_path / "whole.parquet", samples, Sample)
    with GroupWriter(tmp_path / "appended.parquet", Sample.SCHEMA, rows_per_group=100) as out:
        for first in range(0, len(samples), 9):
            out.add_records(samples[first : first + 9])
    meta = pq.read_metadata(tmp_path / "appended.parquet")
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [100, 100, 30]
    assert pq.read_table(tmp_path / "appended.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))


def test_a_failure_leaves_no_file(tmp_path):
    path = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError), GroupWriter(path, Sample.SCHEMA, rows_per_group=10) as out:
        out.add_records(_samples(25))
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
