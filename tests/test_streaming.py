"""Streaming tables and stages (issue 17): row groups written as rows arrive, atomically; fetch's
hit URLs and pending batches kept in the ledger, not in memory; importers that read a table lazily."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kgclip.config import parse
from kgclip.fetch import stage as fetch_stage
from kgclip.fetch.ledger import FetchLedger
from kgclip.pipeline import StageContext
from kgclip.search import importers
from kgclip.search import stage as search_stage
from kgclip.tables import Fetched, GroupWriter, Hit, iter_batches, read_records, to_table, write_records
from kgclip.workdir import Workdir


def hits(n: int) -> list[Hit]:
    return [
        Hit(f"q{i % 7}", "corpus", i, f"http://h.test/{i}.jpg", None, f"alt {i}", i, None, "by", None, "{}")
        for i in range(n)
    ]


def test_group_writer_writes_row_groups_with_the_same_contents(tmp_path):
    rows = hits(1000)
    write_records(tmp_path / "whole.parquet", rows, Hit)
    with GroupWriter(tmp_path / "groups.parquet", Hit.SCHEMA, rows_per_group=300) as out:
        out.add_records(rows)
    assert out.rows == 1000
    assert pq.ParquetFile(tmp_path / "groups.parquet").metadata.num_row_groups == 4
    assert pq.read_table(tmp_path / "groups.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))
    assert list(read_records(tmp_path / "groups.parquet", Hit)) == rows
    batches = list(iter_batches(tmp_path / "groups.parquet", ["url"], rows=256))
    assert max(b.num_rows for b in batches) <= 256 and sum(b.num_rows for b in batches) == 1000


def test_group_writer_with_no_rows_writes_an_empty_table(tmp_path):
    with GroupWriter(tmp_path / "none.parquet", Hit.SCHEMA) as out:
        pass
    assert out.rows == 0
    assert pq.read_table(tmp_path / "none.parquet").equals(to_table([], Hit))


def test_group_writer_failing_keeps_the_previous_file(tmp_path):
    path = tmp_path / "hits.parquet"
    write_records(path, hits(3), Hit)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="boom"), GroupWriter(path, Hit.SCHEMA, rows_per_group=2) as out:
        out.add_records(hits(10))
        raise ValueError("boom")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["hits.parquet"]  # no temporary left


def test_group_writer_killed_midway_leaves_no_partial_table(tmp_path):
    """SIGKILL after several row groups: the table is the previous one; the temporary is all that is
    left, and a writer run again puts a complete table, without duplicates, in place."""
    path = tmp_path / "hits.parquet"
    write_records(path, hits(3), Hit)
    before = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_streaming import hits
        from kgclip.tables import GroupWriter, Hit
        from pathlib import Path
        out = GroupWriter(Path({str(path)!r}), Hit.SCHEMA, rows_per_group=100)
        out.add_records(hits(1000))  # ten row groups written to the temporary file
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    left = [p for p in tmp_path.iterdir() if p.name != "hits.parquet"]
    assert len(left) == 1 and left[0].name.startswith(".hits.parquet.tmp-") and left[0].stat().st_size > 0
    with GroupWriter(path, Hit.SCHEMA, rows_per_group=100) as out:
        out.add_records(hits(1000))
    table = pq.read_table(path)
    assert table.num_rows == 1000 and len(set(table.column("url").to_pylist())) == 1000


def test_ledger_loads_hit_urls_once_in_order_and_reads_pending_in_chunks(tmp_path):
    ledger = FetchLedger(tmp_path / "fetch.sqlite", "p")
    try:
        count = ledger.load_hits(
            [
                (["u:c", "u:a", "u:b"], ["web", "corpus", "web"]),
                (["u:a", "u:d", "u:c"], ["web", "web", "corpus"]),  # u:c: a corpus hit after all
            ]
        )
        assert count == 4
        done = Fetched("u:a", "ok", *(None,) * 11)
        failed = Fetched("u:d", "failed", "timeout", *(None,) * 10)
        ledger.record([done, failed])
        assert ledger.mark_pending() == 3  # u:a is done; u:d failed for now and is asked again
        chunks = list(ledger.pending(2))
        assert chunks == [[("u:c", True), ("u:b", False)], [("u:d", False)]]
        got = [row for chunk in ledger.hit_outcomes(1) for row in chunk]
        assert [(r[0], r[1]) for r in got] == [("u:a", "ok"), ("u:d", "failed")]  # URL order
        assert [Fetched(*r) for r in got] == ledger.outcomes(["u:a", "u:b", "u:c", "u:d"])
    finally:
        ledger.close()


def test_fetch_makes_batches_as_the_executor_asks(tmp_path, monkeypatch):
    """The stage hands the executor an iterator: the next batch's URLs are read from the ledger
    only when the previous batch has been committed, never all up front."""
    for i in range(5):
        Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    urls = [(tmp_path / f"{i}.png").as_uri() for i in range(5)]
    config = parse({"name": "t", "search": {"corpus": {"source": str(tmp_path)}}, "fetch": {"batch_size": 2}})
    ctx = StageContext(config, Workdir(tmp_path / "wd"))
    write_records(
        ctx.path("hits.parquet"),
        [Hit("q", "corpus", i, u, None, "a", None, None, None, None) for i, u in enumerate(urls)],
        Hit,
    )
    real = fetch_stage.run_local
    seen = []

    def run_local(batches, policy, opts, workers, commit):
        assert not isinstance(batches, list | tuple)
        committed = []

        def counting(batch, outcomes):
            committed.append(batch.number)
            commit(batch, outcomes)

        for batch in batches:
            seen.append((batch.number, list(committed), batch.urls, sorted(batch.local.urls)))
            real([batch], policy, opts, 1, counting)

    monkeypatch.setattr(fetch_stage, "run_local", run_local)
    result = fetch_stage.run(ctx)
    assert [(n, c) for n, c, _, _ in seen] == [(0, []), (1, [0]), (2, [0, 1])]
    assert [u for _, _, batch, _ in seen for u in batch] == urls
    assert all(batch == local for _, _, batch, local in seen)  # each batch's corpus URLs may be read
    assert result.stats["ok"] == 5 and result.rows == 5


def test_search_writes_hits_in_row_groups_and_counts_distinct_urls(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(9):
        Image.new("RGB", (40 + i, 40), "red").save(src / f"{i}.png")
        (src / f"{i}.txt").write_text(f"A red fox, number {i}." if i % 2 else f"A grey fox, number {i}.")
    config = parse({"name": "t", "search": {"top_k": 20, "corpus": {"source": str(src)}}})
    ctx = StageContext(config, Workdir(tmp_path / "wd"))
    from kgclip.tables import Query, QueryParams

    queries = [
        Query(f"q{i}", "entity", t, f"wn:{i}", None, QueryParams()) for i, t in enumerate(["fox", "red fox"])
    ]
    write_records(ctx.path("queries.parquet"), queries, Query)
    monkeypatch.setattr(search_stage, "HITS_PER_GROUP", 4)
    result = search_stage.run(ctx)
    table = pq.read_table(ctx.path("hits.parquet"))
    assert pq.ParquetFile(ctx.path("hits.parquet")).metadata.num_row_groups > 1
    assert table.column("query_id").to_pylist() == ["q0"] * 9 + ["q1"] * 4  # query order, as before
    assert result.stats["hits"] == 13 and result.stats["unique_urls"] == 9
    assert result.stats["per_backend"] == {"corpus": 13} and result.stats["queries_with_hits"] == 2


def test_url_count_is_exact_for_distinct_urls():
    count = search_stage.UrlCount(chunk=100)
    for i in range(1000):
        count.add(f"http://h.test/{i % 357}.jpg")
    assert count.count() == 357
    assert search_stage.UrlCount().count() == 0


def _csv(path, rows: int) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption", "category"])
        for i in range(rows):
            writer.writerow([f"http://h.test/{i:06d}.jpg", f"A photo of a red fox, number {i}.", "foxes"])


def test_table_importer_reads_a_csv_as_it_goes(tmp_path):
    """Reading a 40,000-row table item by item holds one row, not the table (about 20 MB as
    dicts): the peak of Python allocations stays under 2 MB."""
    _csv(tmp_path / "big.csv", 40_000)
    tracemalloc.start()
    try:
        count = sum(
            1 for item in importers.table(tmp_path / "big.csv") if isinstance(item, importers.CorpusItem)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 40_000
    assert peak < 2 * 2**20


def test_table_importer_reads_parquet_in_record_batches(tmp_path, monkeypatch):
    _csv(tmp_path / "t.csv", 10)
    with open(tmp_path / "t.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=3)
    whole = list(importers.table(tmp_path / "t.parquet"))
    monkeypatch.setattr(importers, "TABLE_BATCH_ROWS", 2)
    assert list(importers.table(tmp_path / "t.parquet")) == whole == list(importers.table(tmp_path / "t.csv"))
    assert [i.uri for i in whole] == [r["url"] for r in rows] and whole[0].category == "foxes"


def test_table_importer_still_refuses_a_table_without_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("name,colour\nfox,red\n")
    with pytest.raises(importers.CorpusSourceError, match="needs a location column"):
        list(importers.table(tmp_path / "bad.csv"))
    (tmp_path / "empty.csv").write_text("name,colour\n")
    assert list(importers.table(tmp_path / "empty.csv")) == []  # no rows: nothing to refuse
