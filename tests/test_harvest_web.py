"""Whole harvests whose hits are http URLs on a loopback image host: rejections, SIGKILL and
resume, and a Ray run that must equal the local one."""

import tarfile

import pyarrow.parquet as pq
import pytest

from kgclip.cli import _run
from kgclip.config import load
from kgclip.workdir import Workdir
from resume import kill_mid_fetch_then_resume, without_fetch

SAMPLE_COLUMNS = ["key", "sha256", "urls", "alt_texts", "query_ids", "width", "height"]


def test_every_bad_image_over_http_is_rejected_with_its_reason(web_photo_run):
    rejected = {
        r["item"].rsplit("/", 1)[1]: r["reason"]
        for r in pq.read_table(web_photo_run / "rejected.parquet").to_pylist()
    }
    assert rejected == {
        "lion_truncated.jpg": "truncated",
        "lion_empty.jpg": "empty_file",
        "lion_page.jpg": "not_an_image",  # an HTML page served as image/jpeg
        "lion_tiny.png": "too_small",
        "lion_bomb.png": "decompression_bomb",  # refused from its header, before decoding
    }
    detail = {
        r["item"].rsplit("/", 1)[1]: r["detail"]
        for r in pq.read_table(web_photo_run / "rejected.parquet").to_pylist()
    }
    assert detail["lion_page.jpg"] == "html document"


def test_web_and_file_harvests_store_the_same_images(web_photo_run, photo_run):
    def pixels(work):
        return sorted(
            pq.read_table(work / "samples.parquet", columns=["sha256"]).column("sha256").to_pylist()
        )

    assert pixels(web_photo_run) == pixels(photo_run)


def test_the_ledger_records_sizes_statuses_and_timings(web_photo_run):
    rows = pq.read_table(web_photo_run / "fetched.parquet").to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["http_status"] == 200 and r["attempts"] == 1 for r in ok)
    assert all(r["source_bytes"] > 0 and r["download_s"] > 0 and r["decode_s"] > 0 for r in ok)
    empty = next(r for r in rows if r["url"].endswith("lion_empty.jpg"))
    assert (empty["source_bytes"], empty["http_status"]) == (0, 200)


def test_sigkill_during_web_fetch_then_resume_gives_the_same_samples(
    web_photo_run, web_photo_config, tmp_path
):
    work = tmp_path / "work"
    without_fetch(web_photo_run, work)
    done_before, total, stats = kill_mid_fetch_then_resume(web_photo_config, work, web_photo_run)
    assert stats["fetched_now"] == total - done_before  # nothing done twice, nothing lost
    _assert_same_dataset(work, web_photo_run)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
def test_a_ray_run_equals_the_local_run(web_photo_run, web_photo_config, slow_photo_host, tmp_path):
    """Same samples and shard bytes as the local run, and the per-host limit held across tasks."""
    pytest.importorskip("ray")
    config = tmp_path / "ray.toml"
    config.write_text(
        f'extends = "{web_photo_config}"\n[fetch]\nexecutor = "ray"\nper_host_concurrency = 2\n'
        "[ray]\nnum_cpus = 2\ntasks_in_flight = 4\n"
    )
    work = tmp_path / "work"
    without_fetch(web_photo_run, work)
    _run(load(config), work)
    stats = Workdir(work).load_manifest()["fetch"].stats
    assert stats["fetched_now"] == stats["urls"] > 0
    assert slow_photo_host.most_open == 2  # two tasks ran at once, and shared one host limit
    _assert_same_dataset(work, web_photo_run)


def _assert_same_dataset(work, reference) -> None:
    got = pq.read_table(work / "samples.parquet", columns=SAMPLE_COLUMNS)
    assert got.equals(pq.read_table(reference / "samples.parquet", columns=SAMPLE_COLUMNS))
    names = sorted(p.name for p in (reference / "shards").glob("*.tar"))
    assert sorted(p.name for p in (work / "shards").glob("*.tar")) == names
    for name in names:
        assert _members(work / "shards" / name) == _members(reference / "shards" / name)


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
