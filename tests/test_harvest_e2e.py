"""The whole offline harvest: demo shards, skipping, re-running, and SIGKILL during fetch."""

import orjson
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from kgclip.cli import _run
from kgclip.config import load, load_raw, parse
from kgclip.pipeline import status
from kgclip.workdir import Workdir
from resume import kill_mid_fetch_then_resume, without_fetch


def test_demo_shards_load_with_webdataset_and_carry_all_texts(demo_run):
    sizes = orjson.loads((demo_run / "shards/sizes.json").read_bytes())
    shards = sorted((demo_run / "shards").glob("*.tar"))
    assert [p.name for p in shards] == sorted(sizes)
    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
    assert len(samples) == sum(sizes.values()) > 150
    for s in samples:
        assert {"jpg", "txt", "json"} <= set(s)
        assert s["jpg"][:3] == b"\xff\xd8\xff"
        meta = orjson.loads(s["json"])
        assert s["txt"].decode() == meta["caption"] and meta["caption"]
        assert meta["alt_texts"], "every Tux Paint image has its caption as alt text"
        kinds = {"entity", "entity_attribute", "type_attribute"}
        assert meta["queries"] and all(q["kind"] in kinds and q["text"] for q in meta["queries"])
        for entity in meta["entities"]:
            assert entity["name"] and entity["description"] and entity["id"].startswith("wn:n")
            assert entity["natural_type"]["name"]
    # samples found only by a type-attribute query ("aquatic animal") name no entity
    found = [orjson.loads(s["json"]) for s in samples]
    with_entity = [m for m in found if m["entities"]]
    assert len(with_entity) >= 0.9 * len(found)
    assert all(q["kind"] == "type_attribute" for m in found if not m["entities"] for q in m["queries"])
    # the demo's attribute queries ("aquatic animal") name a folder, not a caption's subject: they
    # find pictures only with `match_categories` (test_captions.py harvests the demo so)
    assert {q["kind"] for m in found for q in m["queries"]} == {"entity"}


def test_demo_koala_sample(demo_run):
    samples = pq.read_table(demo_run / "samples.parquet").to_pylist()
    koala = next(s for s in samples if "A koala." in s["alt_texts"])
    assert "wn:n01882714" in koala["entity_ids"]  # koala.n.01
    assert koala["license"] == "GPL-2" and koala["urls"][0].endswith("/koala.png")
    assert min(koala["width"], koala["height"]) <= 512


def test_demo_records_every_rejection(demo_run):
    fetched = pq.read_table(demo_run / "fetched.parquet").to_pylist()
    rejected = pq.read_table(demo_run / "rejected.parquet").to_pylist()
    assert len(rejected) == sum(r["status"] != "ok" for r in fetched)
    assert all(r["reason"] for r in rejected)
    samples = pq.read_table(demo_run / "samples.parquet")
    ok = sum(r["status"] == "ok" for r in fetched)
    merged = Workdir(demo_run).load_manifest()["curate"].stats["duplicates_merged"]
    assert samples.num_rows == ok - merged
    assert len(set(samples.column("sha256").to_pylist())) == samples.num_rows


def test_second_run_does_no_work(demo_copy):
    assert _run(load("demo"), demo_copy) == []
    assert {s.state for s in status(load("demo"), Workdir(demo_copy))} == {"done"}


def test_deleted_table_reruns_that_stage_and_nothing_upstream(demo_copy):
    (demo_copy / "queries.parquet").unlink()
    before = Workdir(demo_copy).load_manifest()
    ran = _run(load("demo"), demo_copy)
    assert ran[0] == "queries" and "entities" not in ran and "types" not in ran
    after = Workdir(demo_copy).load_manifest()
    assert after["entities"].finished == before["entities"].finished
    # the rebuilt table is identical, so downstream stages rightly stay valid
    assert after["queries"].outputs == before["queries"].outputs


def test_changed_queries_config_reruns_downstream_only(demo_copy):
    raw = load_raw("demo")
    raw["queries"]["use_aliases"] = False
    changed = parse(raw)
    states = {s.stage.name: s.state for s in status(changed, Workdir(demo_copy))}
    assert states == {
        "entities": "done",
        "filter": "done",
        "types": "done",
        "attributes": "done",
        "queries": "stale",
        "search": "done",
        "fetch": "done",
        "curate": "done",
    }
    assert _run(changed, demo_copy) == ["queries", "search", "fetch", "curate"]


def test_duplicates_merge_with_every_alt_text(photo_run):
    samples = pq.read_table(photo_run / "samples.parquet").to_pylist()
    by_alt = {a: s for s in samples for a in s["alt_texts"]}
    koala = by_alt["Koala sleeping in a eucalyptus tree."]
    assert "A photo of a koala, number 0." in koala["alt_texts"]
    assert len(koala["urls"]) == 2
    zebra = by_alt["A zebra on the plain."]
    assert "Zebra, re-uploaded." in zebra["alt_texts"] and len(zebra["urls"]) == 2
    stats = Workdir(photo_run).load_manifest()["curate"].stats
    assert (stats["duplicates_merged"], stats["near_duplicates_merged"]) == (3, 1)


def test_near_duplicates_merge_and_keep_the_largest_copy(photo_run):
    samples = pq.read_table(photo_run / "samples.parquet").to_pylist()
    fox = next(s for s in samples if "A red fox, reposted." in s["alt_texts"])
    assert "A photo of a red fox, number 1." in fox["alt_texts"]
    assert len(fox["urls"]) == 2 and fox["urls"][0].endswith("red_fox_01.jpg")  # the larger picture
    assert (fox["width"], fox["height"]) == (683, 512)
    assert fox["phash"] is not None


def test_every_bad_image_is_rejected_with_its_reason(photo_run):
    rejected = {
        r["item"].rsplit("/", 1)[1]: r["reason"]
        for r in pq.read_table(photo_run / "rejected.parquet").to_pylist()
    }
    assert rejected == {
        "lion_truncated.jpg": "truncated",
        "lion_empty.jpg": "empty_file",
        "lion_page.jpg": "not_an_image",
        "lion_tiny.png": "too_small",
        "lion_bomb.png": "decompression_bomb",
    }
    keys = {s["urls"][0].rsplit("/", 1)[1] for s in pq.read_table(photo_run / "samples.parquet").to_pylist()}
    assert not keys & set(rejected)


def test_sigkill_during_fetch_then_resume_gives_the_same_samples(photo_run, photo_config, tmp_path):
    work = tmp_path / "work"
    without_fetch(photo_run, work)
    done_before, total, stats = kill_mid_fetch_then_resume(photo_config, work, photo_run)
    assert stats["fetched_now"] == total - done_before  # nothing done twice, nothing lost
    columns = ["key", "sha256", "urls", "alt_texts", "query_ids"]
    got = pq.read_table(work / "samples.parquet", columns=columns)
    assert got.equals(pq.read_table(photo_run / "samples.parquet", columns=columns))
    assert sorted(p.name for p in (work / "shards").glob("*.tar")) == sorted(
        p.name for p in (photo_run / "shards").glob("*.tar")
    )


@pytest.mark.parametrize(
    "stage", ["entities", "filter", "types", "attributes", "queries", "search", "fetch", "curate"]
)
def test_status_reports_row_counts_and_times(demo_run, stage):
    rec = Workdir(demo_run).load_manifest()[stage]
    assert rec.rows > 0 and rec.seconds >= 0 and rec.outputs
