"""`kgclip view`: the pages over plain HTTP (Starlette's TestClient) on the demo harvest, with hostile
texts planted in it: everything escaped, no path outside the work directory, no write endpoint."""

import io
import re
import sqlite3
import tarfile

import pyarrow.parquet as pq
import pytest
from PIL import Image
from starlette.testclient import TestClient
from typer.testing import CliRunner

from kgclip.cli import app as cli_app
from kgclip.view import images
from kgclip.view.app import create_app
from kgclip.view.index import CACHE_DIR, index_path
from view_fixtures import ENTITY, JS_URL, KEY, PAYLOADS, SCRIPT, hostile_copy


@pytest.fixture(scope="module")
def workdir(demo_run, tmp_path_factory):
    return hostile_copy(demo_run, tmp_path_factory.mktemp("view") / "work")


@pytest.fixture(scope="module")
def client(workdir):
    return TestClient(create_app(workdir))


def member(workdir, name):
    with tarfile.open(workdir / "shards" / "shard-00000.tar") as tar:
        return tar.extractfile(name).read()


def test_overview_shows_the_card_numbers_stages_and_plots(client):
    html = client.get("/").text
    assert "<b>187</b> samples covering <b>157</b> entities" in html
    assert re.search(r"<td>curate</td><td class=\"\w+\">", html)
    assert "too_small" in html
    plots = re.findall(r'src="/card/([\w-]+\.png)"', html)
    assert {"images_per_entity.png", "coverage_per_type.png", "contact_sheet.png"} <= set(plots)
    response = client.get(f"/card/{plots[0]}")
    assert response.status_code == 200
    assert response.content.startswith(b"\x89PNG")


def test_entity_tree_counts_and_filter(client):
    html = client.get("/tree").text
    assert "living thing" in html
    assert '<a href="/entity/wn%3An01882714">koala</a> (1)' in html
    filtered = client.get("/tree", params={"q": "koala"}).text
    assert "koala" in filtered
    assert ">mushroom</a>" in html and ">mushroom</a>" not in filtered
    assert "No entity with pictures matches" in client.get("/tree", params={"q": "%_nothing"}).text


def test_entity_tree_lists_a_few_entities_per_type_and_links_to_all(client, monkeypatch):
    from kgclip.view import data

    monkeypatch.setattr(data, "TREE_PER_TYPE", 2)
    html = client.get("/tree").text
    animal = re.search(r"animal · (\d+) entities · (\d+) pictures</summary>\n<ul>(.*?)</ul>", html, re.S)
    assert animal and int(animal.group(1)) > 2
    assert animal.group(3).count('<a href="/entity/') == 2
    assert f'href="/tree?type=wn%3An00015388">all {animal.group(1)} entities of animal</a>' in animal.group(3)
    everything = client.get("/tree", params={"type": "wn:n00015388"}).text
    assert everything.count('<a href="/entity/') == int(animal.group(1))
    assert "plant ·" not in everything
    assert "No entity with pictures" in client.get("/tree", params={"type": "no-such-type"}).text


def test_entity_page(client):
    html = client.get(f"/entity/{ENTITY}").text
    assert '<h1 id="name">koala</h1>' in html
    assert "koala bear" in html  # aliases
    assert 'href="http://wordnetweb.princeton.edu/perl/webwn?s=koala"' in html
    assert "koala.n.01" in html
    assert f'href="/picture/{KEY}"' in html
    assert f'src="/image/{KEY}.jpg?thumb=160"' in html
    assert "<h3>entity (" in html  # queries by kind


def test_entity_grid_pages(client):
    bird = "wn:n01503061"  # 10 pictures in the demo
    first = client.get(f"/entity/{bird}").text
    assert len(re.findall(r'<a href="/picture/', first)) == 10
    assert "page 1 of 1" in first
    assert len(re.findall(r'<a href="/picture/', client.get(f"/entity/{bird}?page=1").text)) == 0


def test_picture_page_shows_every_text_and_sampled_captions(client):
    html = client.get(f"/picture/{KEY}").text
    assert '<img id="picture" src="/image/000000000.jpg"' in html
    assert "<li>A koala.</li>" in html
    assert "GPL-2" in html and "Tux Paint stamps" in html
    assert "147×200 (source 147×200)" in html
    assert '<span class="kind">entity</span> koala' in html
    assert len(re.findall(r"<td>epoch \d</td>", html)) == 5
    assert "chances: alt" in html


def test_picture_page_tells_the_merged_copies_apart(workdir, tmp_path):
    """A near duplicate merged into the koala picture (planted: the demo merges none) is listed with its
    source size and its distance from the kept picture; a URL without a fetch record says so."""
    import shutil

    import pyarrow as pa

    copy = tmp_path / "work"
    shutil.copytree(workdir, copy)
    fetched = pq.read_table(copy / "fetched.parquet")
    kept_url = pq.read_table(copy / "samples.parquet").to_pylist()[0]["urls"][0]
    kept = next(r for r in fetched.to_pylist() if r["url"] == kept_url)
    near = kept | {
        "url": "https://example.org/near.jpg",
        "pixel_sha256": "0" * 64,
        "phash": kept["phash"] ^ 0b1011,
        "orig_width": 294,
        "orig_height": 400,
        "source_bytes": 12345,
    }
    pq.write_table(
        pa.concat_tables([fetched, pa.Table.from_pylist([near], schema=fetched.schema)]),
        copy / "fetched.parquet",
    )
    samples = pq.read_table(copy / "samples.parquet")
    urls = samples.column("urls").to_pylist()
    urls[0] = [*urls[0], near["url"]]
    i = samples.schema.get_field_index("urls")
    samples = samples.set_column(
        i, samples.schema.field(i), pa.array(urls, type=samples.schema.field(i).type)
    )
    pq.write_table(samples, copy / "samples.parquet")
    html = TestClient(create_app(copy)).get(f"/picture/{KEY}").text
    cells = re.findall(r'<td>([^<]*)</td><td class="copy">([^<]*)</td>', html)
    assert cells == [
        ("147×200, 45,239 bytes", "this picture"),
        ("294×400, 12,345 bytes", "a near duplicate, 3 bits apart"),
    ]
    assert '<td colspan="2" class="muted">no fetch record</td>' in html  # the planted javascript: URL


@pytest.mark.parametrize("path", [f"/picture/{KEY}", f"/entity/{ENTITY}", "/search?q=koala"])
def test_hostile_texts_are_escaped(client, path):
    html = client.get(path).text
    for payload in PAYLOADS:
        assert payload not in html
    assert "<script" not in html.lower()
    assert "onerror=" not in html.lower().replace("onerror=&#34;", "")
    if path.startswith("/picture"):
        assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=&#34;window.__xss = 2&#34;&gt;" in html
        assert f'href="{JS_URL}"' not in html and "javascript:" in html  # shown as text, not a link


def test_pages_forbid_scripts(client):
    for path in ("/", f"/picture/{KEY}", "/picture/nosuchkey", "/tree", "/search?q=koala"):
        response = client.get(path)
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "script" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"


def test_image_is_the_shard_member_with_caching_headers(client, workdir):
    response = client.get(f"/image/{KEY}.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == member(workdir, f"{KEY}.jpg")
    assert "immutable" in response.headers["cache-control"]
    etag = response.headers["etag"]
    again = client.get(f"/image/{KEY}.jpg", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


def test_thumbnails_are_made_once_and_cached(client, workdir):
    response = client.get(f"/image/{KEY}.jpg", params={"thumb": "160"})
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as im:
        assert max(im.size) == 160
    cached = list((workdir / CACHE_DIR / "thumbs").rglob("*-160.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == response.content
    assert client.get(f"/image/{KEY}.jpg", params={"thumb": "9999"}).status_code == 404
    assert client.get(f"/image/{KEY}.jpg", params={"thumb": "-1"}).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/image/..%2F..%2F..%2Fetc%2Fpasswd.jpg",
        "/image/../../etc/passwd",
        "/card/..%2F..%2F..%2Fetc%2Fpasswd",
        "/card/..%2Fmanifest.json",
        "/card/manifest.json",
        "/entity/..%2F..%2Fetc%2Fpasswd",
        "/picture/..%2Fsamples.parquet",
        "/image/nosuchkey.jpg",
        "/../../etc/passwd",
    ],
)
def test_paths_outside_are_refused(client, path):
    response = client.get(path)
    assert response.status_code == 404
    for leaked in ("root:", "PAR1", "kgclip_version"):
        assert leaked not in response.text


def test_no_write_endpoints(client):
    for path in ("/", f"/picture/{KEY}", f"/image/{KEY}.jpg", "/search"):
        assert client.post(path).status_code == 405
        assert client.delete(path).status_code == 405


def test_member_outside_the_shards_is_refused(workdir, tmp_path):
    with pytest.raises(images.NotServed):
        images.shard_path(workdir, "train", "../samples.parquet")
    with pytest.raises(images.NotServed):
        images.shard_path(workdir, "train", "/etc/passwd")
    with pytest.raises(images.NotServed):
        images.shard_path(workdir, "train", "no-such-shard.tar")
    size = (workdir / "shards" / "shard-00000.tar").stat().st_size
    with pytest.raises(images.NotServed):
        images.read_member(workdir, "train", "shard-00000.tar", size - 10, 100)
    with pytest.raises(images.NotServed):
        images.read_member(workdir, "train", "shard-00000.tar", None, None)
    head = images.read_member(workdir, "train", "shard-00000.tar", 512, 4)
    assert head == member(workdir, f"{KEY}.jpg")[:4]


def test_a_tampered_index_row_cannot_leave_the_shards(client, workdir, tmp_path):  # client: indexed
    import shutil

    copy = tmp_path / "work"
    shutil.copytree(workdir, copy)
    db = sqlite3.connect(index_path(copy))
    db.execute(
        "UPDATE samples SET shard = '../config.json', jpg_offset = 0, jpg_size = 50 WHERE key = '000000000'"
    )
    db.execute("UPDATE samples SET jpg_offset = 1000000000 WHERE key = '000000001'")
    db.commit()
    db.close()
    client = TestClient(create_app(copy))
    assert client.get(f"/image/{KEY}.jpg").status_code == 404
    assert client.get("/image/000000001.jpg").status_code == 404
    assert client.get("/image/000000002.jpg").status_code == 200


def test_index_is_built_once_and_rebuilt_when_samples_change(client, workdir, tmp_path):  # client: indexed
    import shutil

    copy = tmp_path / "work"
    shutil.copytree(workdir, copy)
    path = index_path(copy)
    stamp = path.stat().st_mtime_ns
    create_app(copy)
    assert path.stat().st_mtime_ns == stamp
    table = pq.read_table(copy / "samples.parquet")
    pq.write_table(table.slice(1), copy / "samples.parquet")
    client = TestClient(create_app(copy))
    assert index_path(copy) != path and not path.exists()
    assert client.get(f"/picture/{KEY}").status_code == 404
    assert client.get("/picture/000000001").status_code == 200


def test_search(client):
    html = client.get("/search", params={"q": "koala"}).text
    assert 'href="/entity/wn%3An01882714">koala · koala bear · kangaroo bear' in html
    assert "&lt;/script&gt; · A koala. · &lt;img src=x" in html  # caption, then the other alt texts
    assert "[" not in re.search(r'id="pictures">(.*?)</div>', html, re.S).group(1)
    assert f'href="/picture/{KEY}"' in html
    for hostile in ('"', 'koala" OR *', "NEAR(a b", "*", "'; DROP TABLE samples; --"):
        assert client.get("/search", params={"q": hostile}).status_code == 200


def pictures_found(client, **params):
    html = client.get("/search", params=params).text
    return re.findall(r'<a href="/picture/(\d+)">', html)


def test_search_filters(client):
    assert 'value="GPL-2"' in client.get("/search").text  # the licence choices
    assert len(pictures_found(client, licence="GPL-2")) == 48  # a page of them, without text
    assert pictures_found(client, q="koala", licence="no-such-licence") == []
    assert pictures_found(client, q="koala", backend="corpus") == [KEY]
    assert pictures_found(client, q="koala", backend="web") == []
    assert pictures_found(client, q="koala", backend="%") == []
    assert pictures_found(client, q="koala", kind="entity") == [KEY]
    assert pictures_found(client, q="koala", kind="type_attribute") == []
    assert pictures_found(client, q="koala", root="wn:n00004258") == [KEY]
    assert pictures_found(client, q="koala", type="wn:n00015388") == [KEY]  # animal
    assert pictures_found(client, q="koala", type="wn:n00017222") == []  # plant
    plants = pictures_found(client, type="wn:n00017222")
    assert plants and KEY not in plants
    entities = client.get("/search", params={"q": "koala", "type": "wn:n00017222"}).text
    assert 'href="/entity/wn%3An01882714"' not in entities


def test_rejections_by_reason_with_detail(client):
    html = client.get("/rejections").text
    assert "too_small" in html and "no_results" in html
    items = client.get("/rejections", params={"stage": "fetch", "reason": "too_small"}).text
    assert "walnut_shelled.png" in items
    assert "shorter side &lt; min_side 32" in items


def test_a_picture_curate_dropped_is_shown_from_its_part(client, workdir):
    html = client.get("/rejections", params={"stage": "curate", "reason": "eval_copy"}).text
    assert "crow.png" in html
    assert "cub:&lt;script&gt;window.__xss = 1&lt;/script&gt; (distance 3)" in html
    src = re.search(r'<img loading="lazy" src="(/rejected/(\d+)\.jpg)\?thumb=160"', html)
    assert src
    full = client.get(src.group(1))
    assert full.status_code == 200 and full.headers["cache-control"].endswith("immutable")
    with Image.open(io.BytesIO(full.content)) as im:
        crow = next(
            r
            for r in pq.read_table(workdir / "fetched.parquet").to_pylist()
            if r["url"].endswith("/crow.png")
        )
        assert im.format == "JPEG" and im.size == (crow["width"], crow["height"])
    assert client.get(src.group(1), params={"thumb": "160"}).status_code == 200
    # a rejection without fetched pixels (fetch's too_small) has no picture
    small = client.get("/rejections", params={"stage": "fetch", "reason": "too_small"}).text
    assert 'src="/rejected/' not in small and 'href="/rejected/1"' in small
    assert 'id="dropped"' not in client.get("/rejected/1").text
    # the dropped picture's own page: its picture, the hostile detail as text, and why the matched
    # evaluation image is not shown (this work directory was curated without a decontamination index)
    page = client.get(f"/rejected/{src.group(2)}").text
    assert f'<img id="dropped" src="/rejected/{src.group(2)}.jpg?thumb=320"' in page
    assert "cub:&lt;script&gt;window.__xss = 1&lt;/script&gt; (distance 3)" in page and SCRIPT not in page
    assert "The evaluation image is not kept in this work directory" in page
    assert client.get(f"/eval-match/{src.group(2)}.jpg").status_code == 404
    assert client.get("/rejected/999999").status_code == 404
    assert client.get("/rejected/1.jpg").status_code == 404
    assert client.get("/rejected/999999.jpg").status_code == 404
    assert client.get("/rejected/..%2F..%2Fetc%2Fpasswd.jpg").status_code == 404


def test_thumbnail_and_full_image_have_their_own_etags(client):
    full = client.get(f"/image/{KEY}.jpg").headers["etag"]
    thumb = client.get(f"/image/{KEY}.jpg", params={"thumb": "160"}).headers["etag"]
    assert full != thumb
    assert client.get(f"/image/{KEY}.jpg", headers={"If-None-Match": thumb}).status_code == 200


def test_not_a_workdir_is_refused(tmp_path):
    (tmp_path / "samples.parquet").write_bytes(b"")
    with pytest.raises(Exception, match="not a kgclip work directory"):
        create_app(tmp_path)


runner = CliRunner()


def test_cli_view_binds_loopback_and_prints_the_url(workdir, monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    result = runner.invoke(cli_app, ["view", str(workdir), "--port", "8123"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8123/" in result.output
    assert calls == [{"host": "127.0.0.1", "port": 8123, "log_level": "warning"}]


def test_cli_view_without_a_harvest_exits_2(tmp_path):
    (tmp_path / ".kgclip-workdir").write_text("")
    result = runner.invoke(cli_app, ["view", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "no samples.parquet" in result.output


def test_member_offsets_match_tarfile(workdir, tmp_path):
    from kgclip.tario import add_member
    from kgclip.view.index import _tarfile_offsets, member_offsets

    tars = [*(workdir / "shards").glob("*.tar"), *(workdir / "parts").glob("*.tar")]
    odd = tmp_path / "odd.tar"  # a long name (a GNU or PAX header) and a folder: tarfile's way
    with tarfile.open(odd, "w") as tar:
        add_member(tar, "a" * 150 + ".jpg", b"x" * 700)
        tar.addfile(tarfile.TarInfo("folder/"))
        add_member(tar, "b.jpg", b"y")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w", format=tarfile.USTAR_FORMAT) as tar:
        add_member(tar, "sub/" * 30 + "c.jpg", b"z" * 513)  # a ustar prefix
        add_member(tar, "d.json", b"{}")
    for path in [*tars, odd, plain]:
        expected = _tarfile_offsets(path)
        assert member_offsets(path) == expected and expected
    assert member_offsets(plain)["d.json"][1] == 2


def test_runs_page_shows_results_and_confused_pairs(workdir, tmp_path):
    import shutil

    import orjson

    copy = tmp_path / "work"
    shutil.copytree(workdir, copy)
    client = TestClient(create_app(copy))
    assert "No training runs" in client.get("/runs").text
    result = {
        "dataset": "gcompris",
        "task": "zeroshot_classification",
        "model": "m",
        "metrics": {"acc1": 0.25, "acc5": 0.5, "mean_per_class_recall": 0.2},
        "kgclip": {
            "names": "lemma",
            "prompts": "none",
            "images": 84,
            "classes": 4,
            "chance": {"acc1": 0.25, "acc5": 1.0},
            "class_names": ["koala", SCRIPT, "unicorn", "Koala bear"],
            "class_images": [4, 2, 2, 0],
            "per_class_recall": [0.0, 1.0, 0.5, None],
            "confused": [["koala", SCRIPT, 3], [SCRIPT, "KOALA", 1]],
            "confused_examples": [
                {"mistakes": [{"key": "k1", "file": "0123456789abcdef.jpg"}], "taken_for": []},
                {"mistakes": [{"key": "k2", "file": "../../etc/passwd"}], "taken_for": []},
            ],
        },
    }
    (copy / "runs" / "r1" / "eval" / "examples").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buf, "JPEG")
    (copy / "runs" / "r1" / "eval" / "examples" / "0123456789abcdef.jpg").write_bytes(buf.getvalue())
    (copy / "runs" / "r1" / "eval" / "gcompris_lemma_none_m_en_zeroshot_classification.json").write_bytes(
        orjson.dumps(result)
    )
    (copy / "runs" / "r1" / "eval" / "broken.json").write_text("{")
    nan = result | {"dataset": "tiny", "metrics": {"acc1": 0.5, "acc5": "NaN"}}
    bare_nan = orjson.dumps(nan).decode().replace('"NaN"', "NaN")
    (copy / "runs" / "r1" / "eval" / "tiny.json").write_text(bare_nan)
    (copy / "runs" / "r2").mkdir()
    assert 'href="/runs/r1"' in client.get("/runs").text
    html = client.get("/runs/r1").text
    assert "acc1 25.00% (25.00%)" in html
    assert "0%: 1 · 1–25%: 0 · 25–50%: 1 · 50–75%: 0 · 75–99%: 0 · 100%: 1" in html
    # class names link to the entity of that name (any case), else to a search
    assert '<a href="/entity/wn%3An01882714">koala</a>' in html
    assert '<a href="/entity/wn%3An01882714">KOALA</a>' in html
    assert re.search(r'href="/search\?q=unicorn" class="muted"[^>]*>unicorn</a>', html)
    # per-class recall, lowest first, classes without images last, with the entity's training pictures
    cells = r"<tr><td><a [^>]*>([^<]*)</a></td><td>(\d*)</td><td>([^<]*)</td><td>(\d*)</td></tr>"
    rows = re.findall(cells, html.split('<section class="result">')[1])  # gcompris's; tiny's follows
    script = "&lt;script&gt;window.__xss = 1&lt;/script&gt;"
    assert [r[0] for r in rows] == ["koala", "unicorn", script, "Koala bear"]
    assert rows[0] == ("koala", "4", "0.0%", "1") and rows[3][1:] == ("0", "no images", "")
    # the mistakes' example images come from the run's examples folder; a file name that is not one
    # the evaluation writes is neither shown nor served
    assert 'src="/runs/r1/examples/0123456789abcdef.jpg"' in html and "passwd" not in html
    example = client.get("/runs/r1/examples/0123456789abcdef.jpg")
    assert example.status_code == 200 and example.headers["content-type"] == "image/jpeg"
    for bad in (
        "/runs/r1/examples/..%2F..%2Fconfig.json",
        "/runs/r1/examples/ffffffffffffffff.jpg",
        "/runs/r2/examples/0123456789abcdef.jpg",
        "/runs/nosuch/examples/0123456789abcdef.jpg",
    ):
        assert client.get(bad).status_code == 404, bad
    # and the class it was taken for shows our training pictures of it (koala has one)
    (koala_key,) = re.findall(r'href="/picture/([^"]+)"', client.get("/entity/wn%3An01882714").text)
    training = re.search(r'<td class="training">(.*?)</td>', html.split("KOALA")[1]).group(1)
    assert f'href="/picture/{koala_key}"' in training
    first = re.search(r'<td class="training">(.*?)</td>', html.split('<table class="confused">')[1]).group(1)
    assert "no entity of this name" in first  # the script-named class taken for: no such entity
    assert "<td>broken.json</td><td>unreadable: " in html
    assert "<td>tiny</td>" in html and "acc5 nan%" in html
    assert "&lt;script&gt;" in html and SCRIPT not in html
    assert "no evaluation results yet" in client.get("/runs/r2").text
    for bad in ("/runs/nosuch", "/runs/r1%2F..%2F..", "/runs/..%2F..%2Fetc"):
        assert client.get(bad).status_code == 404
