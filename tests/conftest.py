"""Shared fixtures: one real offline demo harvest per test session, copied for tests that change it."""

import csv
import functools
import io
import ipaddress
import random
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageOps, PngImagePlugin

from kgclip.cli import _run
from kgclip.config import load


@pytest.fixture(autouse=True)
def no_system_dns(monkeypatch):
    """No test may ask the machine's resolver or open a socket to anything but loopback: either
    would send a packet off this machine. Tests reach their loopback servers by IP, or through an
    injected resolver; the fetcher's connect hook opens sockets only towards 127.0.0.0/8 and ::1."""
    from kgclip.fetch import http

    async def refuse(host: str) -> list[str]:
        raise AssertionError(f"a test tried to resolve {host!r} through the system resolver")

    open_socket = http._open_socket

    def loopback_only(addr_info):
        ip = ipaddress.ip_address(addr_info[4][0])
        if not ip.is_loopback:
            raise AssertionError(f"a test tried to connect to {ip}")
        return open_socket(addr_info)

    monkeypatch.setattr(http, "_system_resolve", refuse)
    monkeypatch.setattr(http, "_open_socket", loopback_only)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The bundled demo harvested once (WordNet living things x Tux Paint); treat as read-only."""
    workdir = tmp_path_factory.mktemp("demo") / "work"
    _run(load("demo"), workdir)
    return workdir


@pytest.fixture
def demo_copy(demo_run, tmp_path) -> Path:
    """A private copy of the demo work directory, for tests that modify it."""
    dst = tmp_path / "work"
    shutil.copytree(demo_run, dst)
    return dst


PHOTO_NAMES = [
    "koala",
    "red fox",
    "lion",
    "zebra",
    "robin",
    "bald eagle",
    "Atlantic salmon",
    "white oak",
    "tulip",
    "giant panda",
    "honeybee",
    "sunflower",
]
PER_NAME = 12


def _photo(i: int) -> Image.Image:
    """A large picture of its own: shapes placed by `i`, so no two look alike to a perceptual hash."""
    rng = random.Random(i)
    image = Image.linear_gradient("L").resize((2400, 1800)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = rng.randrange(2400), rng.randrange(1800)
        w, h = rng.randrange(300, 1200), rng.randrange(300, 1200)
        draw.ellipse(
            (x - w // 2, y - h // 2, x + w // 2, y + h // 2), fill=tuple(rng.choices(range(256), k=3))
        )
    return image


@pytest.fixture(scope="session")
def photo_corpus(tmp_path_factory) -> Path:
    """A folder corpus of large photos named after living things, with duplicates and bad files.

    Large JPEGs make fetch take seconds (so a kill can land inside it); the extras exercise
    duplicate merging and every kind of rejection end to end.
    """
    src = tmp_path_factory.mktemp("photos") / "src"
    src.mkdir()

    def add(name: str, caption: str, data: bytes) -> None:
        (src / name).write_bytes(data)
        (src / name).with_suffix(".txt").write_text(caption)

    for n, name in enumerate(PHOTO_NAMES):
        for i in range(PER_NAME):
            buf = io.BytesIO()
            _photo(n * PER_NAME + i).save(buf, "JPEG", quality=85)
            add(f"{name.replace(' ', '_')}_{i:02d}.jpg", f"A photo of a {name}, number {i}.", buf.getvalue())
    # the same picture twice, under two captions: one sample with both alt texts
    add("koala_copy.jpg", "Koala sleeping in a eucalyptus tree.", (src / "koala_00.jpg").read_bytes())
    # a near copy: another host's smaller, recompressed, framed version; merged, the larger one kept
    near = io.BytesIO()
    framed = ImageOps.expand(_photo(PER_NAME + 1).resize((1200, 900)), border=40, fill="grey")
    framed.save(near, "JPEG", quality=60)
    add("fox_reposted.jpg", "A red fox, reposted.", near.getvalue())
    # the same pixels as PNG with and without a text chunk: one sample
    small = _photo(999).resize((800, 600))
    plain, tagged = io.BytesIO(), io.BytesIO()
    small.save(plain, "PNG")
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "re-saved by another host")
    small.save(tagged, "PNG", pnginfo=info)
    add("zebra_plain.png", "A zebra on the plain.", plain.getvalue())
    add("zebra_tagged.png", "Zebra, re-uploaded.", tagged.getvalue())
    # bad files, each caption findable by a query (the lion is each caption's subject)
    buf = io.BytesIO()
    _photo(7).save(buf, "JPEG")
    add("lion_truncated.jpg", "A lion, cut short.", buf.getvalue()[: len(buf.getvalue()) // 2])
    add("lion_empty.jpg", "A lion, empty file.", b"")
    add("lion_page.jpg", "A lion, on a web page.", b"<!doctype html><html><body>Not found</body></html>")
    tiny = io.BytesIO()
    Image.new("RGB", (10, 8), "orange").save(tiny, "PNG")
    add("lion_tiny.png", "A lion, as a tiny icon.", tiny.getvalue())
    bomb = io.BytesIO()
    Image.new("1", (6000, 6000)).save(bomb, "PNG")
    add("lion_bomb.png", "A lion, on an enormous poster.", bomb.getvalue())
    return src


@pytest.fixture(scope="session")
def photo_config(photo_corpus, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "photos.toml"
    path.write_text(
        'extends = "demo"\nname = "photos"\n'
        f'[search]\ntop_k = 20\n[search.corpus]\nsource = "{photo_corpus}"\nimporter = "folder"\n'
        "[fetch]\nworkers = 1\nbatch_size = 8\nmax_pixels = 20000000\n"
    )
    return path


@pytest.fixture(scope="session")
def photo_run(photo_config, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("photo-run") / "work"
    _run(load(photo_config), workdir)
    return workdir


class _QuietFiles(SimpleHTTPRequestHandler):
    """Serves files; records the most requests it ever had open at once, after an optional delay."""

    delay = 0.0
    lock = threading.Lock()
    open_now = 0
    most_open = 0

    def log_message(self, *args: object) -> None:
        return

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.open_now += 1
            cls.most_open = max(cls.most_open, cls.open_now)
        try:
            time.sleep(cls.delay)
            super().do_GET()
        finally:
            with cls.lock:
                cls.open_now -= 1


@pytest.fixture(scope="session")
def photo_host(photo_corpus):
    yield from _serve(photo_corpus)


@pytest.fixture
def slow_photo_host(photo_host):
    """The same host, answering each request after 50 ms, with its concurrency record reset."""
    _QuietFiles.delay, _QuietFiles.most_open = 0.05, 0
    yield _QuietFiles
    _QuietFiles.delay = 0.0


def _serve(photo_corpus):
    """The photo corpus served over loopback HTTP, as an image host would (types from extensions,
    so the HTML page named .jpg arrives as image/jpeg)."""
    handler = functools.partial(_QuietFiles, directory=str(photo_corpus))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def web_photo_config(photo_corpus, photo_host, tmp_path_factory) -> Path:
    """The photo harvest with every hit an http URL on the loopback host."""
    folder = tmp_path_factory.mktemp("web-cfg")
    with open(folder / "corpus.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        for image in sorted(p for p in photo_corpus.iterdir() if p.suffix != ".txt"):
            caption = image.with_suffix(".txt").read_text().strip()
            writer.writerow([f"{photo_host}/{image.name}", caption])
    path = folder / "web-photos.toml"
    path.write_text(
        'extends = "demo"\nname = "web-photos"\n'
        f'[search]\ntop_k = 20\n[search.corpus]\nsource = "{folder / "corpus.csv"}"\nimporter = "table"\n'
        "[fetch]\nworkers = 1\nbatch_size = 8\nmax_pixels = 20000000\nallow_loopback = true\n"
        'contact = "tests@example.org"\nper_host_concurrency = 4\nper_host_rate_per_s = 1000\n'
    )
    return path


@pytest.fixture(scope="session")
def web_photo_run(web_photo_config, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("web-photo-run") / "work"
    _run(load(web_photo_config), workdir)
    return workdir
