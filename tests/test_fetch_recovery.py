"""A harvest always finishes: transient failures leave fetch pending (curate runs on what is stored)
and are given up after a few runs; lost parts are found and only their images fetched again; curate
never empties the shards before their replacement is ready."""

import csv
import shutil
import socket

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kgclip.cli import _run, app
from kgclip.config import load
from kgclip.curate import shards as shards_module
from kgclip.fetch.ledger import FetchLedger
from kgclip.pipeline import PipelineError, status
from kgclip.tables import Fetched, read_records
from kgclip.workdir import Workdir

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def one_dead_url(photo_corpus, photo_host, tmp_path):
    """Three photos on the loopback host and one URL to a closed loopback port."""
    images = sorted(p for p in photo_corpus.iterdir() if p.suffix != ".txt")[:3]
    with open(tmp_path / "corpus.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        for image in images:
            writer.writerow([f"{photo_host}/{image.name}", image.with_suffix(".txt").read_text().strip()])
        writer.writerow([f"http://127.0.0.1:{_closed_port()}/koala.jpg", "a koala in a tree"])
    config = tmp_path / "dead.toml"
    config.write_text(
        'extends = "demo"\nname = "dead-url"\n'
        f'[search.corpus]\nsource = "{tmp_path / "corpus.csv"}"\nimporter = "table"\n'
        "[fetch]\nworkers = 1\nallow_loopback = true\nmax_retries = 0\nmax_pixels = 20000000\n"
        'contact = "tests@example.org"\nper_host_rate_per_s = 1000\ngive_up_after_runs = 3\n'
    )
    return config


def test_a_url_that_keeps_failing_does_not_stop_the_harvest(one_dead_url, tmp_path):
    work = tmp_path / "work"
    first = invoke("harvest", str(one_dead_url), "-w", str(work))
    assert first.exit_code == 0, first.output
    assert "--only" not in first.output
    assert pq.read_table(work / "samples.parquet").num_rows >= 1  # curate ran on what is stored
    assert (work / "shards/sizes.json").is_file()
    shown = invoke("status", str(work))
    assert "pending" in shown.output
    fetch_state = {s.stage.name: s for s in status(load(one_dead_url), Workdir(work))}["fetch"]
    assert fetch_state.state == "pending" and fetch_state.record.stats["retry_later"] == 1
    assert fetch_state.why.startswith("1 URLs failed for transient reasons; the next run retries them")

    second = invoke("harvest", str(one_dead_url), "-w", str(work))  # asked again, still failing
    assert second.exit_code == 0 and "fetch: running" in second.output
    dead = [r for r in read_records(work / "fetched.parquet", Fetched) if r.status != "ok"]
    assert [(r.status, r.reason, r.runs) for r in dead] == [("failed", "connection_error", 2)]

    third = invoke("harvest", str(one_dead_url), "-w", str(work))  # the third failing run gives up
    assert third.exit_code == 0
    dead = [r for r in read_records(work / "fetched.parquet", Fetched) if r.status != "ok"]
    assert [(r.status, r.reason, r.runs) for r in dead] == [("rejected", "gave_up", 3)]
    assert dead[0].detail.startswith("connection_error in 3 runs")
    rejected = pq.read_table(work / "rejected.parquet").to_pylist()
    assert any(r["reason"] == "gave_up" for r in rejected)
    assert all(s.state == "done" for s in status(load(one_dead_url), Workdir(work)))
    assert "nothing to do" in invoke("harvest", str(one_dead_url), "-w", str(work)).output

    again = invoke("fetch", str(work), "--retry-failed")  # a user can still ask for it
    assert again.exit_code == 0 and "1 earlier failures will be retried" in again.output
    dead = [r for r in read_records(work / "fetched.parquet", Fetched) if r.status != "ok"]
    assert [(r.status, r.runs) for r in dead] == [("failed", 1)]


def _shard_bytes(work):
    return {p.name: p.read_bytes() for p in sorted((work / "shards").iterdir())}


def test_deleted_parts_are_found_and_only_their_images_fetched_again(demo_copy):
    before_samples = (demo_copy / "samples.parquet").read_bytes()
    before_shards = _shard_bytes(demo_copy)
    ok = sum(r.status == "ok" for r in read_records(demo_copy / "fetched.parquet", Fetched))
    shutil.rmtree(demo_copy / "parts")
    shown = invoke("status", str(demo_copy))
    assert "missing" in shown.output or "parts missing" in shown.output

    result = invoke("harvest", "demo", "-w", str(demo_copy), "--from", "curate")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    stats = Workdir(demo_copy).load_manifest()["fetch"].stats
    assert stats["fetched_now"] == ok  # the stored images, not the refused ones
    assert (demo_copy / "samples.parquet").read_bytes() == before_samples
    assert _shard_bytes(demo_copy) == before_shards


def test_one_lost_part_is_reported_and_refetched_alone(demo_copy):
    parts = sorted((demo_copy / "parts").glob("*.tar"))
    assert len(parts) >= 2
    lost = parts[0]
    in_lost = sum(r.part == lost.name for r in read_records(demo_copy / "fetched.parquet", Fetched))
    lost.write_bytes(lost.read_bytes()[:1000])  # damaged, not just gone
    states = {s.stage.name: s for s in status(load("demo"), Workdir(demo_copy))}
    assert states["fetch"].state == "stale" and "1 of" in states["fetch"].why
    assert "parts missing or damaged" in states["fetch"].why

    result = invoke("harvest", "demo", "-w", str(demo_copy))
    assert result.exit_code == 0, result.output
    assert "1 part(s) missing or damaged" in result.output
    assert f"their {in_lost:,} images are fetched again" in result.output
    assert Workdir(demo_copy).load_manifest()["fetch"].stats["fetched_now"] == in_lost


def test_only_curate_with_lost_parts_is_a_clear_error_and_keeps_the_shards(demo_copy):
    before = _shard_bytes(demo_copy)
    shutil.rmtree(demo_copy / "parts")
    result = invoke("harvest", "demo", "-w", str(demo_copy), "--only", "curate")
    assert result.exit_code == 2 and "curate needs fetch" in result.output
    assert _shard_bytes(demo_copy) == before


def test_a_failing_curate_leaves_the_previous_shards_whole(demo_copy, monkeypatch):
    before = _shard_bytes(demo_copy)
    calls = {"n": 0}
    real = shards_module.PartReader.read

    def failing(self, part, member):
        calls["n"] += 1
        if calls["n"] > 100:
            raise OSError("disk went away")
        return real(self, part, member)

    monkeypatch.setattr(shards_module.PartReader, "read", failing)
    with pytest.raises(PipelineError, match=r"cannot read image .*\(disk went away\)"):
        _run(load("demo"), demo_copy, start="curate")
    assert _shard_bytes(demo_copy) == before
    assert not list(demo_copy.glob(".shards.*"))


def test_files_in_parts_that_kgclip_did_not_write_are_left_alone(demo_copy):
    mine = demo_copy / "parts" / "my-backup.tar"
    mine.write_bytes(b"not a kgclip part")
    assert invoke("harvest", "demo", "-w", str(demo_copy), "--from", "fetch").exit_code == 0
    assert mine.read_bytes() == b"not a kgclip part"


def _failure(url: str, reason: str) -> Fetched:
    return Fetched(url, "failed", reason, reason, *(None,) * 9)


def test_only_runs_that_sent_a_request_count_towards_giving_up(tmp_path):
    ledger = FetchLedger(tmp_path / "fetch.sqlite", params="p")
    try:
        for reason in ("timeout", "queue_timeout", "queue_timeout", "connection_error"):
            ledger.record([_failure("http://a.test/x.jpg", reason)], give_up_after=3)
        (row,) = ledger.outcomes(["http://a.test/x.jpg"])
        assert (row.status, row.runs) == ("failed", 2)  # waiting in a queue is not the URL's fault
        ledger.record([_failure("http://a.test/x.jpg", "http_503")], give_up_after=3)
        (row,) = ledger.outcomes(["http://a.test/x.jpg"])
        assert (row.status, row.reason, row.runs) == ("rejected", "gave_up", 3)
        assert row.detail == "http_503 in 3 runs: http_503"
    finally:
        ledger.close()
