"""Decontamination end to end: index evaluation images (folders and WebDataset tars), then the
curate stage drops their copies from a harvest and says which evaluation image each matched."""

import io
import re
import shutil
import tarfile

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps
from starlette.testclient import TestClient
from typer.testing import CliRunner

from fifo_guard import fifos
from kgclip.cli import _run, app
from kgclip.config import load
from kgclip.curate.decontam import (
    MATCHES,
    DecontamError,
    EvalIndex,
    _eval_thumbnail,
    _matched,
    build_index,
    match_file,
    parse_source,
    save_matches,
)
from kgclip.pipeline import stage_by_name, state_of
from kgclip.tables import Rejected
from kgclip.view.app import create_app
from kgclip.workdir import Workdir


def _jpeg(image: Image.Image, quality: int = 70) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def evalset(photo_corpus, tmp_path):
    """An evaluation set holding altered versions of three harvested photos: one resized and
    recompressed in a class folder, one framed inside a WebDataset tar, and one that the harvested
    copy is a 7% crop of (the evaluation set has the uncropped original)."""
    root = tmp_path / "eval"
    (root / "images" / "lion").mkdir(parents=True)
    lion = Image.open(photo_corpus / "lion_02.jpg")
    (root / "images" / "lion" / "a.jpg").write_bytes(_jpeg(lion.resize((600, 450)), 60))
    zebra = Image.open(photo_corpus / "zebra_05.jpg")
    framed = _jpeg(ImageOps.expand(zebra.resize((800, 600)), border=30, fill="grey"))
    with tarfile.open(root / "test-0.tar", "w") as tar:
        for name, data in [("000.webp.jpg", framed), ("000.cls", b"3")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tulip = Image.open(photo_corpus / "tulip_07.jpg")
    w, h = tulip.size
    original = Image.new("RGB", (int(w / 0.93), h), "darkgreen")
    original.paste(tulip, (original.width - w, 0))
    (root / "images" / "tulip.png").write_bytes(_jpeg(original.resize((original.width // 4, h // 4))))
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


def test_curate_drops_copies_of_evaluation_images(photo_run, photo_config, evalset, tmp_path):
    index = tmp_path / "eval.parquet"
    report = build_index([parse_source(f"bench={evalset}")], index)
    assert (report.images, report.unreadable) == (3, ["bench:images/broken.jpg"])
    work = tmp_path / "work"
    shutil.copytree(photo_run, work)
    config = tmp_path / "decontam.toml"
    config.write_text(f'extends = "{photo_config}"\n[curate]\ndecontaminate = ["{index}"]\n')
    ran = _run(load(config), work)
    assert ran == ["curate"]

    before = pq.read_table(photo_run / "samples.parquet").to_pylist()
    after = pq.read_table(work / "samples.parquet").to_pylist()
    kept = {s["sha256"] for s in after}
    gone = {u.rsplit("/", 1)[1] for s in before if s["sha256"] not in kept for u in s["urls"]}
    assert gone == {"lion_02.jpg", "zebra_05.jpg", "tulip_07.jpg"}
    assert len(after) == len(before) - 3
    rejected = {
        r["item"].rsplit("/", 1)[1]: r["detail"]
        for r in pq.read_table(work / "rejected.parquet").to_pylist()
        if r["reason"] == "eval_copy"
    }
    assert rejected["lion_02.jpg"].startswith("bench:images/lion/a.jpg (distance ")
    assert rejected["zebra_05.jpg"].startswith("bench:test-0.tar/000.webp.jpg")
    assert rejected["tulip_07.jpg"].startswith("bench:images/tulip.png")
    stats = Workdir(work).load_manifest()["curate"].stats
    assert stats["eval_copies_dropped"] == {"bench": 3}

    # each dropped picture keeps a small copy of the evaluation image it matched, for the viewer
    urls = {r.item.rsplit("/", 1)[1]: r.item for r in _eval_copies(work)}
    sizes = {}
    for name in rejected:
        with Image.open(work / MATCHES / match_file(urls[name])) as im:
            sizes[name] = im.size
    assert sizes["lion_02.jpg"] == (320, 240)  # the 600x450 evaluation image, not the harvested 4:3 one
    assert sizes["zebra_05.jpg"] == (320, 246)  # 860x660: the frame is the evaluation image's
    client = TestClient(create_app(work))
    html = client.get("/rejections", params={"stage": "curate", "reason": "eval_copy"}).text
    pages = re.findall(r'<a href="/rejected/(\d+)"><code>', html)
    assert len(pages) == 3
    item = client.get(f"/rejected/{pages[0]}").text
    assert 'id="dropped"' in item and f'src="/eval-match/{pages[0]}.jpg"' in item
    shown = client.get(f"/eval-match/{pages[0]}.jpg")
    assert shown.status_code == 200 and shown.content.startswith(b"\xff\xd8")
    too_small = client.get("/rejections", params={"stage": "fetch", "reason": "too_small"}).text
    other = re.findall(r'href="/rejected/(\d+)"', too_small)[0]
    assert client.get(f"/eval-match/{other}.jpg").status_code == 404  # not an eval copy

    # with the evaluation set gone, a new curate run keeps no stale copy, and the page says why
    shutil.move(evalset, tmp_path / "moved")
    assert save_matches([index], _eval_copies(work), work / MATCHES) == 0
    assert not list((work / MATCHES).iterdir())
    assert "not kept in this work directory" in client.get(f"/rejected/{pages[0]}").text


def _eval_copies(work):
    return [
        Rejected(r["stage"], r["item"], r["reason"], r["detail"])
        for r in pq.read_table(work / "rejected.parquet").to_pylist()
        if r["reason"] == "eval_copy"
    ]


def test_a_kept_match_never_reads_outside_its_sets_folder(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    Image.new("RGB", (50, 40), "blue").save(tmp_path / "outside.jpg")
    Image.new("RGB", (50, 40), "red").save(root / "inside.jpg")
    assert _eval_thumbnail(root, "inside.jpg") is not None
    assert _eval_thumbnail(root, "../outside.jpg") is None
    assert _eval_thumbnail(root, "nosuch.tar/x.jpg") is None
    roots = {"a": root, "a:b": root}  # the longest set name that the detail starts with wins
    assert _matched("a:b:inside.jpg (distance 3)", roots) == ("a:b", "inside.jpg")
    assert _matched("a:inside.jpg (distance 0)", roots) == ("a", "inside.jpg")
    assert _matched("c:inside.jpg (distance 0)", roots) is None


def test_a_changed_index_makes_curate_stale(photo_run, photo_config, evalset, tmp_path):
    index = tmp_path / "eval.parquet"
    build_index([parse_source(str(evalset))], index)
    work = tmp_path / "work"
    shutil.copytree(photo_run, work)
    config = tmp_path / "decontam.toml"
    config.write_text(f'extends = "{photo_config}"\n[curate]\ndecontaminate = ["{index}"]\n')
    cfg = load(config)
    _run(cfg, work)
    curate = stage_by_name("curate")
    wd = Workdir(work)
    assert state_of(curate, cfg, wd, wd.load_manifest()).state == "done"
    (evalset / "images" / "lion" / "a.jpg").unlink()
    build_index([parse_source(str(evalset))], index)
    assert state_of(curate, cfg, wd, wd.load_manifest()).state == "stale"


def test_index_errors_are_clear(tmp_path):
    with pytest.raises(DecontamError, match="no such evaluation set"):
        parse_source(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DecontamError, match="no images found"):
        build_index([parse_source(str(tmp_path / "empty"))], tmp_path / "x.parquet")
    pq.write_table(pq.read_table(_some_parquet(tmp_path)), tmp_path / "other.parquet")
    with pytest.raises(DecontamError, match="not a kgclip decontamination index"):
        EvalIndex([tmp_path / "other.parquet"])
    with pytest.raises(DecontamError, match="no decontamination index"):
        EvalIndex([tmp_path / "nothing.parquet"])


def _some_parquet(tmp_path):
    import pyarrow as pa

    path = tmp_path / "some.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    return path


def test_cli_builds_an_index(evalset, tmp_path):
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(
        app, ["decontam", "index", f"cub={evalset}", "-o", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "indexed 3 evaluation images (33 hashes)" in result.output
    assert set(pq.read_table(out).column("eval_set").to_pylist()) == {"cub"}
    missing = CliRunner().invoke(app, ["decontam", "index", str(tmp_path / "nope"), "-o", str(out)])
    assert missing.exit_code == 2 and "no such evaluation set" in missing.output


def test_an_index_of_another_hash_version_is_refused(evalset, tmp_path, monkeypatch):
    from kgclip.curate import phash

    index = tmp_path / "old.parquet"
    build_index([parse_source(str(evalset))], index)
    monkeypatch.setattr(phash, "VERSION", phash.VERSION + 1)
    with pytest.raises(DecontamError, match="another perceptual hash"):
        EvalIndex([index])


def test_a_missing_index_is_reported_before_any_stage_runs(tmp_path):
    from kgclip.cli import UserError

    config = tmp_path / "c.toml"
    config.write_text(f'extends = "demo"\n[curate]\ndecontaminate = ["{tmp_path / "absent.parquet"}"]\n')
    with pytest.raises(UserError, match="no decontamination index at"):
        _run(load(config), tmp_path / "work")
    assert not (tmp_path / "work" / "entities.parquet").exists()


def test_indexing_lists_fifos_as_skipped_instead_of_hanging(tmp_path):
    root = tmp_path / "eval"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (64, 48), "red").save(root / "images" / "red.png")
    with fifos(root / "images" / "pipe.jpg", root / "pipe.tar"):
        report = build_index([("bench", root)], tmp_path / "eval.parquet", workers=1)
    assert report.images == 1
    assert report.unreadable == [
        "bench:images/pipe.jpg (a FIFO, not a regular file)",
        "bench:pipe.tar (a FIFO, not a regular file)",
    ]
