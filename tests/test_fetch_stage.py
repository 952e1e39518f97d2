"""The fetch stage on its own: sources, the ledger, parts, and changed image settings."""

import io
import os
import tarfile

import pyarrow.parquet as pq
from PIL import Image

from fifo_guard import fifos
from kgclip.config import parse
from kgclip.fetch import stage as fetch_stage
from kgclip.fetch.ledger import SWITCHES, FetchLedger
from kgclip.fetch.sources import read_source
from kgclip.pipeline import StageContext
from kgclip.search.corpus import build_index
from kgclip.tables import Fetched, Hit, read_records, write_records
from kgclip.workdir import Workdir


def hit(url: str, rank: int = 1) -> Hit:
    return Hit("q", "corpus", rank, url, None, "alt", None, None, None, None)


def make(tmp_path, urls, **fetch):
    """A fetch of corpus hits; the corpus (not built yet) is `tmp_path`, so its files may be read."""
    search = {"corpus": {"source": str(tmp_path)}}
    config = parse({"name": "t", "search": search, "fetch": {"workers": 1, **fetch}})
    ctx = StageContext(config, Workdir(tmp_path / "wd"))
    write_records(ctx.path("hits.parquet"), [hit(u, i) for i, u in enumerate(urls)], Hit)
    return ctx


def picture(path, size=(900, 600), colour="green"):
    Image.new("RGB", size, colour).save(path)
    return path


def test_sources_refuse_what_they_cannot_read(tmp_path):
    roots = (os.path.realpath(tmp_path),)
    assert read_source("https://example.org/a.jpg", 10, roots).reason == "unsupported_scheme"
    assert read_source("file://otherhost/a.jpg", 10, roots).reason == "unsupported_scheme"
    assert read_source("relative/a.jpg", 10, roots).reason == "unsupported_scheme"
    assert read_source((tmp_path / "none.jpg").as_uri(), 10, roots).reason == "not_found"
    assert read_source(tmp_path.as_uri(), 10, roots).reason == "not_a_regular_file"
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 11)
    assert read_source(big.as_uri(), 10, roots).reason == "too_many_bytes"
    assert read_source(str(big), 20, roots) == b"x" * 11  # a plain absolute path works too
    assert read_source(str(big), 20).reason == "local_path_refused"  # not a corpus hit: no roots


def test_outcomes_parts_and_stored_jpegs(tmp_path):
    a = picture(tmp_path / "a.png").as_uri()
    ctx = make(tmp_path, [a, a, "ftp://example.org/x.jpg", (tmp_path / "gone.png").as_uri()], batch_size=2)
    result = fetch_stage.run(ctx)
    rows = {r.url: r for r in read_records(ctx.path("fetched.parquet"), Fetched)}
    assert len(rows) == 3  # the duplicate URL is fetched once
    ok = rows[a]
    assert (
        ok.status == "ok"
        and (ok.orig_width, ok.orig_height) == (900, 600)
        and (ok.width, ok.height) == (768, 512)
    )
    with tarfile.open(ctx.path("parts") / ok.part) as tar:
        stored = Image.open(io.BytesIO(tar.extractfile(f"{ok.member}.jpg").read()))
        assert stored.format == "JPEG" and stored.size == (768, 512)
    assert rows["ftp://example.org/x.jpg"].reason == "unsupported_scheme"
    assert rows[(tmp_path / "gone.png").as_uri()].reason == "not_found"
    assert result.stats["ok"] == 1 and result.stats["rejected"] == {"unsupported_scheme": 1, "not_found": 1}


def test_rerun_fetches_nothing_new(tmp_path):
    ctx = make(tmp_path, [picture(tmp_path / f"{i}.png", colour=(i, 0, 0)).as_uri() for i in range(5)])
    fetch_stage.run(ctx)
    first = pq.read_table(ctx.path("fetched.parquet"))
    again = fetch_stage.run(ctx)
    assert again.stats["fetched_now"] == 0
    assert pq.read_table(ctx.path("fetched.parquet")).equals(first)


def test_changed_image_settings_redo_everything_and_drop_old_parts(tmp_path):
    urls = [picture(tmp_path / f"{i}.png", colour=(0, i, 0)).as_uri() for i in range(3)]
    ctx = make(tmp_path, urls)
    fetch_stage.run(ctx)
    old_parts = set(ctx.path("parts").glob("*.tar"))
    smaller = make(tmp_path, urls, size=128)
    result = fetch_stage.run(smaller)
    assert result.stats["fetched_now"] == 3
    assert not old_parts & set(smaller.path("parts").glob("*.tar"))
    assert {r.height for r in read_records(smaller.path("fetched.parquet"), Fetched)} == {128}


def test_orphan_part_from_a_killed_run_is_removed(tmp_path):
    ctx = make(tmp_path, [picture(tmp_path / "a.png").as_uri()])
    fetch_stage.run(ctx)
    orphan = ctx.path("parts") / "deadbeef-00007.tar"
    orphan.write_bytes(b"half-written by a killed run")
    fetch_stage.run(ctx)
    assert not orphan.exists()


def test_local_files_are_read_only_for_corpus_hits_below_the_corpus_roots(tmp_path):
    """A web service's answer (or an edited hits table) must not make fetch read any local file."""
    src = tmp_path / "corpus"
    src.mkdir()
    for name, colour in (("inside", "green"), ("swapped", "blue")):
        picture(src / f"{name}.png", colour=colour)
        (src / f"{name}.txt").write_text(f"a {colour} picture")
    outside = picture(tmp_path / "outside.png", colour="red")
    build_index(src, tmp_path / "corpus.sqlite")
    (src / "swapped.png").unlink()
    (src / "swapped.png").symlink_to(outside)  # indexed as a corpus file, now leading out of it
    inside = (src / "inside.png").as_uri()
    refused = {
        (src / "swapped.png").as_uri(): "corpus",
        f"{src.as_uri()}/../outside.png": "corpus",
        str(src / "inside.png"): "gbif",  # a corpus file, but named by a web backend
        outside.as_uri(): "gbif",
        "/etc/passwd": "openverse",
    }
    named = {inside: "corpus", **refused, (src / "pipe.png").as_uri(): "corpus"}
    hits = [Hit("q", b, i, u, None, "", None, None, None, None) for i, (u, b) in enumerate(named.items(), 1)]
    search = {"corpus": {"index": str(tmp_path / "corpus.sqlite")}}
    config = parse({"name": "t", "search": search, "fetch": {"workers": 1}})
    ctx = StageContext(config, Workdir(tmp_path / "wd"))
    write_records(ctx.path("hits.parquet"), hits, Hit)
    with fifos(src / "pipe.png"):
        result = fetch_stage.run(ctx)
    rows = {r.url: r for r in read_records(ctx.path("fetched.parquet"), Fetched)}
    assert rows[inside].status == "ok"
    assert {url: rows[url].reason for url in refused} == dict.fromkeys(refused, "local_path_refused")
    assert rows[(src / "pipe.png").as_uri()].reason == "not_a_regular_file"
    assert result.stats["rejected"] == {"local_path_refused": 5, "not_a_regular_file": 1}


def _row(url: str, status: str, detail: str | None = None) -> Fetched:
    part = "p.tar" if status == "ok" else None
    reason = detail.split(":")[0] if detail else None
    return Fetched(url, status, reason, detail, part, None, None, None, None, None, None, None, None)


def test_a_tightened_switch_judges_web_images_again_never_local_files(tmp_path):
    ledger = FetchLedger(tmp_path / "fetch.sqlite", "p")
    try:
        strict = {s.name: s.strict for s in SWITCHES}
        assert ledger.rejudge(strict) == {}
        ledger.record([_row("http://a/1.jpg", "ok"), _row("file:///c/1.png", "ok")])
        assert ledger.rejudge(strict) == {}  # nothing changed
        assert ledger.rejudge({**strict, "allow_private": True}) == {}  # nothing it refused
        ledger.record([_row("https://b/2.jpg", "ok")])
        assert ledger.rejudge(strict) == {"allow_private=false": 2}
        assert ledger.done_urls() == {"file:///c/1.png"}
    finally:
        ledger.close()


def test_refusals_a_loose_switch_would_not_make_are_asked_again_in_an_older_ledger(tmp_path):
    ledger = FetchLedger(tmp_path / "fetch.sqlite", "p")
    try:
        ledger.record(
            [
                _row("http://127.0.0.1/1.jpg", "rejected", "blocked_address:loopback"),
                _row("http://10.0.0.1/1.jpg", "rejected", "blocked_address:private"),
                _row("http://100.64.0.1/1.jpg", "rejected", "blocked_address:shared"),
                _row("http://169.254.169.254/1.jpg", "rejected", "blocked_address:link_local"),
                _row("http://a/x.jpg", "rejected", "x_robots_tag"),
            ]
        )  # recorded with no switches, as by a kgclip before them
        loose = {"allow_loopback": True, "allow_private": True, "honour_x_robots": False}
        assert ledger.rejudge(loose) == {
            "allow_loopback=true": 1,
            "allow_private=true": 2,
            "honour_x_robots=false": 1,
        }
        assert ledger.done_urls() == {"http://169.254.169.254/1.jpg"}  # never allowed by a switch
    finally:
        ledger.close()
