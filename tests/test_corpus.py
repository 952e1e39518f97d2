"""Local corpus: importers, the FTS5 index, and BM25 search."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, features

from fifo_guard import fifos
from kgclip.fetch.images import ACCEPTED_EXTENSIONS, ACCEPTED_FORMATS
from kgclip.search.corpus import CorpusBackend, CorpusError, build_index, number_variants
from kgclip.search.importers import CorpusSourceError, detect, import_source
from kgclip.tables import Query, QueryParams

TUXPAINT = Path("/usr/share/tuxpaint/stamps")


def q(text: str, exclude: tuple[str, ...] = ()) -> Query:
    return Query("id", "entity", text, None, None, QueryParams(exclude_terms=list(exclude)))


def png(path: Path, size=(40, 30), colour="red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture(scope="module")
def tux_index(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "tux.sqlite"
    build_index(TUXPAINT, out, "auto")
    return out


def test_tuxpaint_import_reads_english_caption_category_and_licence(tux_index):
    backend = CorpusBackend(tux_index)
    try:
        found = backend.search_now(q("koala"), 5).results
    finally:
        backend.close()
    assert found, "the koala stamp should be found"
    koala = found[0]
    assert koala.alt_text == "A koala."
    assert koala.url == (TUXPAINT / "animals/marsupials/koala.png").as_uri()
    assert koala.license == "GPL-2"
    assert "Tux Paint" in (koala.attribution or "")
    assert koala.width and koala.height


def test_tuxpaint_counts_and_recorded_skips(tux_index):
    db = sqlite3.connect(tux_index)
    items = db.execute("SELECT count(*) FROM items").fetchone()[0]
    skipped = dict(db.execute("SELECT reason, count(*) FROM skipped GROUP BY reason"))
    category = db.execute("SELECT category FROM items WHERE uri LIKE '%/koala.png'").fetchone()[0]
    db.close()
    assert detect(TUXPAINT) == "tuxpaint"
    png_count = sum(1 for _ in TUXPAINT.rglob("*.png"))
    assert items == png_count  # every PNG has a caption (mirrors share their twin's)
    assert skipped == {"vector_image": sum(1 for _ in TUXPAINT.rglob("*.svg"))}
    assert category == "animals/marsupials"


def test_bm25_ranks_caption_matches_and_all_terms_must_match(tux_index):
    backend = CorpusBackend(tux_index)
    try:
        kangaroo = backend.search_now(q("red kangaroo"), 10).results
        assert [f.alt_text for f in kangaroo] == ["A red kangaroo."]
        # number: plural queries find singular captions and back, but no stemming beyond that
        assert backend.search_now(q("koalas"), 3).results[0].alt_text == "A koala."
        assert {f.alt_text for f in backend.search_now(q("cep"), 5).results} >= {"A red headed cep."}
        assert backend.search_now(q("orang"), 5).results == []  # Porter would match "orange"
        assert "any" not in " ".join(f.alt_text for f in backend.search_now(q("ani"), 5).results)
        # a folder name matches only when configured (test_corpus_subject.py has the rest)
        assert backend.search_now(q("marsupial"), 20).results == []
        assert backend.search_now(q("zzzunknownzzz"), 5).results == []
        assert backend.search_now(q("!!! ..."), 5).failure == "no_searchable_terms"
        # FTS syntax in query text is quoted away: no syntax errors, operators are plain words
        assert backend.search_now(q('koala" *'), 5).results[0].alt_text == "A koala."
        assert backend.search_now(q("koala OR NOT"), 5).results == []
    finally:
        backend.close()


def test_number_variants():
    assert number_variants("koala") == ["koala", "koalaes", "koalas"]
    assert "berries" in number_variants("berry") and "berry" in number_variants("berries")
    assert "fox" in number_variants("foxes") and "foxes" in number_variants("fox")


def test_exclude_terms_filter_on_caption_and_category(tux_index):
    backend = CorpusBackend(tux_index)
    try:
        everything = backend.search_now(q("pyramid"), 20).results
        photos = backend.search_now(q("pyramid", ("cartoon",)), 20).results
    finally:
        backend.close()
    assert any("/cartoon/" in f.url for f in everything)
    assert not any("/cartoon/" in f.url for f in photos)


def test_request_key_depends_on_corpus_text_k_and_excludes(tmp_path):
    png(tmp_path / "src/a.png")
    (tmp_path / "src/a.txt").write_text("a red fox")
    a = build_index(tmp_path / "src", tmp_path / "a.sqlite")
    (tmp_path / "src/a.txt").write_text("a grey fox")
    b = build_index(tmp_path / "src", tmp_path / "b.sqlite")
    assert a.corpus_id != b.corpus_id
    back = CorpusBackend(tmp_path / "a.sqlite")
    try:
        keys = {
            back.request_key(q("fox"), 5),
            back.request_key(q("fox"), 6),
            back.request_key(q("fox", ("x",)), 5),
        }
        assert len(keys) == 3
        assert back.request_key(q("fox"), 5) == back.request_key(q("fox"), 5)
    finally:
        back.close()


def test_folder_importer_with_sidecars(tmp_path):
    src = tmp_path / "src"
    png(src / "birds/robin.png")
    (src / "birds/robin.txt").write_text("A robin\n on a branch ")
    (src / "birds/robin.json").write_text(
        '{"license": "CC0", "attribution": "me", "page_url": "https://x/1"}'
    )
    png(src / "birds/nocaption.png")
    png(src / "birds/empty.png")
    (src / "birds/empty.txt").write_text("  \n")
    png(src / "bad.png")
    (src / "bad.txt").write_text("bad meta")
    (src / "bad.json").write_text("{not json")
    (src / "drawing.svg").write_text("<svg/>")
    (src / "notes.md").write_text("ignored, not an image")
    entries = list(import_source(src, "auto"))
    items = [e for e in entries if hasattr(e, "uri")]
    skipped = {Path(e.path).name: e.reason for e in entries if hasattr(e, "reason")}
    assert [(i.text, i.category, i.license, i.attribution, i.page_url) for i in items] == [
        ("A robin on a branch", "birds", "CC0", "me", "https://x/1")
    ]
    assert skipped["nocaption.png"] == "no_caption"
    assert skipped["empty.png"] == "empty_caption"
    assert skipped["bad.json"].startswith("bad_sidecar_json")
    assert skipped["drawing.svg"] == "vector_image"
    assert "notes.md" not in skipped


def test_folder_importer_takes_every_format_fetch_accepts(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    formats = {".ico": "ICO", ".avif": "AVIF", ".jfif": "JPEG", ".tif": "TIFF", ".bmp": "BMP"}
    if not features.check("avif"):
        del formats[".avif"]
    for suffix, fmt in formats.items():
        Image.new("RGB", (48, 48), "red").save(src / f"{fmt.lower()}{suffix}", format=fmt)
        (src / f"{fmt.lower()}.txt").write_text(f"A {fmt} fox.")
    (src / "layers.psd").write_bytes(b"8BPS")  # Pillow reads PSD, fetch refuses it
    (src / "layers.txt").write_text("A layered fox.")
    report = build_index(src, tmp_path / "c.sqlite")
    assert report.items == len(formats)
    assert report.skipped == {"unsupported_format": 1}
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        sizes = set(db.execute("SELECT width, height FROM items"))
        skipped = list(db.execute("SELECT path, reason FROM skipped"))
    assert sizes == {(48, 48)}
    assert skipped == [(str(src / "layers.psd"), "unsupported_format: PSD")]


def test_the_importers_take_the_formats_fetch_decodes():
    Image.init()
    for suffix, fmt in Image.registered_extensions().items():
        if fmt in ACCEPTED_FORMATS:
            assert ACCEPTED_EXTENSIONS.get(suffix) == fmt, suffix
    assert set(ACCEPTED_EXTENSIONS.values()) == set(ACCEPTED_FORMATS)


@pytest.mark.parametrize(
    ("sidecar", "reason"),
    [
        ('{"license": ["CC0", "CC-BY"]}', "bad_sidecar_json: license is a JSON array, not a string"),
        ('{"page_url": 7}', "bad_sidecar_json: page_url is a JSON number, not a string"),
        ('["CC0"]', "bad_sidecar_json: a JSON array, not an object"),
        ('{"license": "CC0",', "bad_sidecar_json: "),
    ],
)
def test_a_bad_sidecar_skips_its_image_with_the_reason(tmp_path, sidecar, reason):
    png(tmp_path / "fox.png")
    (tmp_path / "fox.txt").write_text("A fox.")
    (tmp_path / "fox.json").write_text(sidecar)
    entries = list(import_source(tmp_path, "folder"))
    assert len(entries) == 1 and entries[0].path == str(tmp_path / "fox.json")
    assert entries[0].reason.startswith(reason)


def test_empty_sidecar_values_are_no_values(tmp_path):
    png(tmp_path / "fox.png")
    (tmp_path / "fox.txt").write_text("A fox.")
    (tmp_path / "fox.json").write_text('{"license": " ", "attribution": null, "page_url": "https://x/1"}')
    [item] = import_source(tmp_path, "folder")
    assert (item.license, item.attribution, item.page_url) == (None, None, "https://x/1")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_importer(tmp_path, suffix):
    png(tmp_path / "imgs/x.png")
    rows = [
        {"path": "imgs/x.png", "caption": "a small fox", "license": "CC-BY-4.0"},
        {"path": "https://example.org/y.jpg", "caption": "a big fox", "license": ""},
        {"path": "", "caption": "no location", "license": ""},
        {"path": "imgs/z.png", "caption": "  ", "license": ""},
    ]
    table = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        table.write_text(
            "path,caption,license\n" + "".join(f"{r['path']},{r['caption']},{r['license']}\n" for r in rows)
        )
    else:
        pq.write_table(pa.Table.from_pylist(rows), table)
    report = build_index(table, tmp_path / "t.sqlite")
    assert report.items == 2
    assert report.skipped == {"no_location": 1, "empty_caption": 1}
    back = CorpusBackend(tmp_path / "t.sqlite")
    try:
        found = back.search_now(q("fox"), 5).results
    finally:
        back.close()
    by_text = {f.alt_text: f for f in found}
    assert by_text["a small fox"].url == (tmp_path / "imgs/x.png").resolve().as_uri()
    assert by_text["a small fox"].license == "CC-BY-4.0"
    assert by_text["a small fox"].width == 40
    assert by_text["a big fox"].url == "https://example.org/y.jpg"
    assert by_text["a big fox"].license is None and by_text["a big fox"].width is None


def test_table_without_needed_columns_is_a_clear_error(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("file,words\na.png,hello\n")
    with pytest.raises(CorpusSourceError, match="needs a location column"):
        build_index(table, tmp_path / "t.sqlite")
    assert not (tmp_path / "t.sqlite").exists()
    assert not list(tmp_path.glob(".t.sqlite.tmp-*"))  # a failed build removes its temporary file


def test_opening_a_missing_or_foreign_index_fails_clearly(tmp_path):
    with pytest.raises(CorpusError, match="kgclip corpus index"):
        CorpusBackend(tmp_path / "none.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(CorpusError, match="not a kgclip corpus"):
        CorpusBackend(other)


def test_index_skips_fifos_and_files_outside_its_root_instead_of_hanging(tmp_path):
    src = tmp_path / "src"
    png(src / "good.png")
    (src / "good.txt").write_text("a good fox")
    (src / "pipe.txt").write_text("a fox in a pipe")
    png(src / "captioned.png")
    secret = png(tmp_path / "outside" / "secret.png")
    (src / "link.png").symlink_to(secret)
    (src / "link.txt").write_text("a fox linked from outside")
    out = tmp_path / "c.sqlite"
    with fifos(src / "pipe.png", src / "captioned.txt"):
        report = build_index(src, out)
    assert report.items == 1
    assert report.skipped == {"not_a_regular_file": 2, "outside_corpus_root": 1}
    with sqlite3.connect(out) as db:
        skipped = dict(db.execute("SELECT path, reason FROM skipped"))
        (roots,) = db.execute("SELECT value FROM meta WHERE key = 'roots'").fetchone()
    assert skipped == {
        str(src / "pipe.png"): "not_a_regular_file",
        str(src / "captioned.txt"): "not_a_regular_file",
        str(src / "link.png"): "outside_corpus_root",
    }
    assert orjson.loads(roots) == [os.path.realpath(src)]


def test_a_table_lists_only_regular_files_below_its_folder(tmp_path):
    png(tmp_path / "t/imgs/x.png")
    png(tmp_path / "elsewhere.png")
    rows = [
        ("imgs/x.png", "a small fox"),
        ("imgs/pipe.png", "a fox in a pipe"),
        ("../elsewhere.png", "a fox one folder up"),
        ((tmp_path / "elsewhere.png").as_uri(), "a fox by file URL"),
        ("/etc/hostname", "a fox by absolute path"),
        ("https://example.org/y.jpg", "a web fox"),
    ]
    table = tmp_path / "t/t.csv"
    table.write_text("path,caption\n" + "".join(f"{p},{c}\n" for p, c in rows))
    with fifos(tmp_path / "t/imgs/pipe.png"):
        report = build_index(table, tmp_path / "t.sqlite")
    assert report.items == 2  # x.png and the web URL
    assert report.skipped == {"not_a_regular_file": 1, "outside_corpus_root": 3}


def test_a_fifo_given_as_the_table_is_refused_not_read(tmp_path):
    with fifos(tmp_path / "t.csv"), pytest.raises(CorpusSourceError, match="FIFO, not a regular file"):
        build_index(tmp_path / "t.csv", tmp_path / "t.sqlite", "table")


def test_a_killed_build_leaves_nothing_that_the_next_build_keeps(tmp_path):
    src = tmp_path / "src"
    png(src / "good.png")
    (src / "good.txt").write_text("a good fox")
    out = tmp_path / "idx" / "c.sqlite"
    out.parent.mkdir()
    with subprocess.Popen([sys.executable, "-c", "pass"]) as finished:
        pass  # waited for: its pid names no process now
    stale = [out.with_name(f".c.sqlite.tmp-{finished.pid}{end}") for end in ("", "-journal")]
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        running = out.with_name(f".c.sqlite.tmp-{alive.pid}")  # another build still at work
        for path in [*stale, running]:
            path.write_bytes(b"half an index")
        try:
            build_index(src, out)
        finally:
            alive.kill()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["c.sqlite", running.name])
