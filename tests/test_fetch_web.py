"""The fetch stage over HTTP: loopback images through the safe client, refusals, retries next run."""

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from PIL import Image

from kgclip.config import parse
from kgclip.fetch import stage as fetch_stage
from kgclip.pipeline import StageContext
from kgclip.tables import Fetched, Hit, read_records, write_records
from kgclip.workdir import Workdir


def jpeg(colour: str, **params: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (900, 600), colour).save(buf, "JPEG", **params)
    return buf.getvalue()


def many_scans() -> bytes:
    """A progressive JPEG whose last scan is repeated 3,000 times (decoded by libjpeg, copy by copy)."""
    data = jpeg("green", progressive=True)
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * 3000 + data[end:]


class Images:
    """A loopback image host: /ok/<n>.jpg, /slow/<n>.jpg (0.1 s), /scans.jpg (3,000 scans),
    /missing.jpg (404), /flaky.jpg (503 until healed), /noai.jpg (X-Robots-Tag: noai)."""

    def __init__(self) -> None:
        self.flaky_heals = False
        self.agents: list[str] = []
        images = self

        class Handle(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                images.agents.append(self.headers.get("User-Agent", ""))
                if self.path.startswith("/ok/"):
                    self._send(200, jpeg("green" if "1" in self.path else "blue"), "image/jpeg")
                elif self.path.startswith("/slow/"):
                    time.sleep(0.1)
                    self._send(200, jpeg("red"), "image/jpeg")
                elif self.path == "/scans.jpg":
                    self._send(200, many_scans(), "image/jpeg")
                elif self.path == "/flaky.jpg" and images.flaky_heals:
                    self._send(200, jpeg("red"), "image/jpeg")
                elif self.path == "/flaky.jpg":
                    self._send(503, b"busy", "text/plain")
                elif self.path == "/noai.jpg":
                    self._send(200, jpeg("red"), "image/jpeg", {"X-Robots-Tag": "noai"})
                else:
                    self._send(404, b"no", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def host():
    images = Images()
    yield images
    images.server.shutdown()
    images.server.server_close()


def context(tmp_path, urls, **fetch):
    settings = {"workers": 1, "max_retries": 0, "contact": "tests@example.org", **fetch}
    config = parse({"name": "t", "search": {"corpus": {"source": "/x"}}, "fetch": settings})
    ctx = StageContext(config, Workdir(tmp_path / "wd"))
    write_records(
        ctx.path("hits.parquet"),
        [Hit("q", "web", i, u, None, "", None, None, None, None) for i, u in enumerate(urls)],
        Hit,
    )
    return ctx


def test_images_arrive_over_http_with_our_user_agent(tmp_path, host):
    urls = [f"{host.base}/ok/1.jpg", f"{host.base}/ok/2.jpg", f"{host.base}/missing.jpg"]
    result = fetch_stage.run(context(tmp_path, urls, allow_loopback=True))
    rows = {r.url: r for r in read_records(tmp_path / "wd" / "fetched.parquet", Fetched)}
    assert rows[urls[0]].status == "ok" and (rows[urls[0]].width, rows[urls[0]].height) == (768, 512)
    assert rows[urls[2]].status == "rejected" and rows[urls[2]].reason == "http_404"
    assert result.stats["ok"] == 2 and result.stats["retry_later"] == 0
    assert all(agent.startswith("kgclip/") and "tests@example.org" in agent for agent in host.agents)


def test_loopback_is_refused_unless_allowed(tmp_path, host):
    fetch_stage.run(context(tmp_path, [f"{host.base}/ok/1.jpg"]))
    row = next(read_records(tmp_path / "wd" / "fetched.parquet", Fetched))
    assert (row.status, row.reason, row.detail) == ("rejected", "blocked_address", "blocked_address:loopback")
    assert host.agents == []  # refused before any connection


def _outcomes(tmp_path) -> dict[str, tuple[str, str | None]]:
    rows = read_records(tmp_path / "wd" / "fetched.parquet", Fetched)
    return {r.url.rsplit("/", 1)[1]: (r.status, r.detail) for r in rows}


def test_turning_allow_loopback_on_and_off_judges_its_outcomes_again(tmp_path, host):
    urls = [f"{host.base}/ok/1.jpg", f"{host.base}/ok/2.jpg"]
    fetch_stage.run(context(tmp_path, urls))
    assert _outcomes(tmp_path) == dict.fromkeys(["1.jpg", "2.jpg"], ("rejected", "blocked_address:loopback"))
    allowed = fetch_stage.run(context(tmp_path, urls, allow_loopback=True))
    assert allowed.stats["rejudged"] == {"allow_loopback=true": 2} and allowed.stats["fetched_now"] == 2
    assert {status for status, _ in _outcomes(tmp_path).values()} == {"ok"}
    assert fetch_stage.run(context(tmp_path, urls, allow_loopback=True)).stats["fetched_now"] == 0
    refused = fetch_stage.run(context(tmp_path, urls))
    assert refused.stats["rejudged"] == {"allow_loopback=false": 2} and refused.stats["ok"] == 0
    assert _outcomes(tmp_path) == dict.fromkeys(["1.jpg", "2.jpg"], ("rejected", "blocked_address:loopback"))
    index = orjson.loads((tmp_path / "wd" / "parts" / "index.json").read_bytes())
    assert index == {"parts": {}}  # no part holds a stored image any more


def test_turning_x_robots_off_and_on_judges_its_outcomes_again(tmp_path, host):
    urls = [f"{host.base}/noai.jpg", f"{host.base}/ok/1.jpg"]
    fetch_stage.run(context(tmp_path, urls, allow_loopback=True))
    assert _outcomes(tmp_path)["noai.jpg"] == ("rejected", "x_robots_tag")
    ignored = fetch_stage.run(context(tmp_path, urls, allow_loopback=True, honour_x_robots=False))
    assert ignored.stats["rejudged"] == {"honour_x_robots=false": 1} and ignored.stats["fetched_now"] == 1
    assert _outcomes(tmp_path)["noai.jpg"][0] == "ok"
    honoured = fetch_stage.run(context(tmp_path, urls, allow_loopback=True))
    assert honoured.stats["rejudged"] == {"honour_x_robots=true": 2}  # every web image stored meanwhile
    assert _outcomes(tmp_path) == {"noai.jpg": ("rejected", "x_robots_tag"), "1.jpg": ("ok", None)}


def test_transient_failures_are_retried_on_the_next_run_only(tmp_path, host):
    urls = [f"{host.base}/ok/1.jpg", f"{host.base}/flaky.jpg"]
    ctx = context(tmp_path, urls, allow_loopback=True)
    first = fetch_stage.run(ctx)
    assert first.stats["retry_later"] == 1
    flaky = {r.url: r for r in read_records(ctx.path("fetched.parquet"), Fetched)}[urls[1]]
    assert (flaky.status, flaky.reason) == ("failed", "http_503")
    host.flaky_heals = True
    host.agents.clear()
    again = fetch_stage.run(ctx)
    assert again.stats["fetched_now"] == 1 and again.stats["retry_later"] == 0 and len(host.agents) == 1
    assert {r.status for r in read_records(ctx.path("fetched.parquet"), Fetched)} == {"ok"}


def test_urls_queued_behind_their_host_are_not_timed_out(tmp_path, host):
    """Twelve URLs on one host, one at a time, 0.1 s each, with a 0.5 s timeout: the wait for the
    host's turn is not request time, so every URL is stored after exactly one request."""
    urls = [f"{host.base}/slow/{i}.jpg" for i in range(12)]
    one_at_a_time = {"per_host_concurrency": 1, "per_host_rate_per_s": 100}
    ctx = context(tmp_path, urls, allow_loopback=True, timeout_s=0.5, **one_at_a_time)
    result = fetch_stage.run(ctx)
    rows = list(read_records(ctx.path("fetched.parquet"), Fetched))
    assert result.stats["ok"] == 12 and result.stats["retry_later"] == 0
    assert [r.attempts for r in rows] == [1] * 12 and len(host.agents) == 12


def test_a_jpeg_with_thousands_of_scans_is_rejected_with_its_reason(tmp_path, host):
    urls = [f"{host.base}/scans.jpg", f"{host.base}/ok/1.jpg"]
    ctx = context(tmp_path, urls, allow_loopback=True)
    fetch_stage.run(ctx)
    rows = {r.url: r for r in read_records(ctx.path("fetched.parquet"), Fetched)}
    assert (rows[urls[0]].status, rows[urls[0]].reason) == ("rejected", "too_many_scans")
    assert rows[urls[0]].decode_s < 0.5 and rows[urls[1]].status == "ok"
