"""The search stage: hits from the corpus backend, the request ledger, recorded rejects."""

import os
import shutil

import pyarrow.parquet as pq
import pytest
from PIL import Image

from kgclip.config import parse
from kgclip.pipeline import StageContext
from kgclip.search import stage as search_stage
from kgclip.tables import Hit, Query, QueryParams, Rejected, read_records, write_records
from kgclip.workdir import Workdir


def make_corpus(src):
    for i, caption in enumerate(["A red fox.", "A fox cub in snow.", "A grey wolf.", "A cartoon fox."]):
        sub = src / ("cartoon" if "cartoon" in caption else "photos")
        sub.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (50 + i, 40), "red").save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text(caption)


def setup(tmp_path, texts, top_k=10):
    make_corpus(tmp_path / "src")
    config = parse({"name": "t", "search": {"top_k": top_k, "corpus": {"source": str(tmp_path / "src")}}})
    wd = Workdir(tmp_path / "wd")
    queries = [
        Query(f"q{i}", "entity", text, f"wn:{i}", None, QueryParams(exclude_terms=["cartoon"]))
        for i, text in enumerate(texts)
    ]
    write_records(wd.path("queries.parquet"), queries, Query)
    return StageContext(config, wd)


def test_hits_ranked_with_alt_text_and_rejects_recorded(tmp_path):
    ctx = setup(tmp_path, ["fox", "wolf", "unicorn", "???"])
    result = search_stage.run(ctx)
    hits = list(read_records(ctx.path("hits.parquet"), Hit))
    fox = [h for h in hits if h.query_id == "q0"]
    assert [h.rank for h in fox] == [1, 2]
    assert {h.alt_text for h in fox} == {"A red fox.", "A fox cub in snow."}  # the cartoon is excluded
    assert all(h.backend == "corpus" and h.url.startswith("file://") and h.width for h in hits)
    rejects = {r.item: r.reason for r in read_records(ctx.path("rejects/search.parquet"), Rejected)}
    assert rejects == {"q2": "no_results", "q3": "no_searchable_terms"}
    assert result.stats["queries_asked"] == 4 and result.stats["queries_with_hits"] == 2
    assert ctx.path("corpus.sqlite").exists()  # built from the source on first use


def test_second_run_sends_no_request_and_gives_the_same_table(tmp_path):
    ctx = setup(tmp_path, ["fox", "wolf"])
    search_stage.run(ctx)
    first = pq.read_table(ctx.path("hits.parquet"))
    again = search_stage.run(ctx)
    assert again.stats["queries_asked"] == 0 and again.stats["from_ledger"] == 2
    assert pq.read_table(ctx.path("hits.parquet")).equals(first)


def test_top_k_change_is_a_new_request(tmp_path):
    ctx = setup(tmp_path, ["fox"], top_k=1)
    search_stage.run(ctx)
    assert pq.read_table(ctx.path("hits.parquet")).num_rows == 1
    bigger = StageContext(
        parse(
            {
                **ctx.config.model_dump(mode="json"),
                "search": {"top_k": 5, "corpus": {"source": str(tmp_path / "src")}},
            }
        ),
        ctx.workdir,
    )
    assert search_stage.run(bigger).stats["queries_asked"] == 1
    assert pq.read_table(ctx.path("hits.parquet")).num_rows == 2


def test_corpus_search_on_ray_equals_the_local_search(demo_run, tmp_path):
    """The demo's 24k queries as Ray tasks: the same hits and rejects as the local run."""
    pytest.importorskip("ray")
    import orjson

    work = tmp_path / "work"
    shutil.copytree(demo_run, work, ignore=shutil.ignore_patterns("parts", "shards"))
    for leftover in work.glob("cache/search.sqlite*"):
        leftover.unlink()
    raw = orjson.loads((work / "config.json").read_bytes())
    raw["search"]["executor"] = "ray"
    raw["ray"] = {"num_cpus": 2}
    result = search_stage.run(StageContext(parse(raw), Workdir(work)))
    assert result.stats["queries_asked"] == result.stats["queries"] > 20_000
    for table in ("hits.parquet", "rejects/search.parquet"):
        assert pq.read_table(work / table).equals(pq.read_table(demo_run / table))


def _fox_kit(src):
    Image.new("RGB", (60, 40), "red").save(src / "photos" / "9.png")
    (src / "photos" / "9.txt").write_text("A small fox.")


def test_a_changed_source_makes_search_stale_and_rebuilds_the_index(tmp_path):
    ctx = setup(tmp_path, ["fox"])
    search_stage.run(ctx)
    built = search_stage.backend_fingerprint(ctx.config, ctx.workdir)
    assert search_stage.backend_fingerprint(ctx.config, ctx.workdir) == built  # stable while nothing changes
    _fox_kit(tmp_path / "src")
    assert search_stage.backend_fingerprint(ctx.config, ctx.workdir) != built  # status: search is stale
    again = search_stage.run(ctx)
    assert again.stats["queries_asked"] == 1  # a new corpus id: a new request
    texts = {h.alt_text for h in read_records(ctx.path("hits.parquet"), Hit)}
    assert "A small fox." in texts
    rebuilt = search_stage.backend_fingerprint(ctx.config, ctx.workdir)
    assert rebuilt not in (built, None)
    assert search_stage.backend_fingerprint(ctx.config, ctx.workdir) == rebuilt


def test_a_touched_source_rebuilds_to_the_same_corpus_and_asks_nothing_again(tmp_path):
    ctx = setup(tmp_path, ["fox"])
    search_stage.run(ctx)
    built = search_stage.backend_fingerprint(ctx.config, ctx.workdir)
    caption = tmp_path / "src" / "photos" / "0.txt"
    stat = caption.stat()
    os.utime(caption, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert search_stage.backend_fingerprint(ctx.config, ctx.workdir) != built
    assert search_stage.run(ctx).stats["queries_asked"] == 0
    assert search_stage.backend_fingerprint(ctx.config, ctx.workdir) == built


def test_another_source_or_importer_rebuilds_the_index(tmp_path):
    ctx = setup(tmp_path, ["fox"])
    search_stage.run(ctx)
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "src", other)
    _fox_kit(other)
    moved = parse({"name": "t", "search": {"corpus": {"source": str(other)}}})
    assert search_stage.backend_fingerprint(moved, ctx.workdir) != search_stage.backend_fingerprint(
        ctx.config, ctx.workdir
    )
    search_stage.run(StageContext(moved, ctx.workdir))
    assert "A small fox." in {h.alt_text for h in read_records(ctx.path("hits.parquet"), Hit)}
    folder = parse({"name": "t", "search": {"corpus": {"source": str(other), "importer": "folder"}}})
    before = search_stage.backend_fingerprint(folder, ctx.workdir)
    search_stage.run(StageContext(folder, ctx.workdir))
    assert search_stage.backend_fingerprint(folder, ctx.workdir) != before


def test_a_source_that_is_gone_leaves_the_index_as_it_is(tmp_path):
    ctx = setup(tmp_path, ["fox"])
    search_stage.run(ctx)
    built = search_stage.backend_fingerprint(ctx.config, ctx.workdir)
    shutil.rmtree(tmp_path / "src")
    assert search_stage.backend_fingerprint(ctx.config, ctx.workdir) == built
    assert search_stage.run(ctx).stats["queries_asked"] == 0
