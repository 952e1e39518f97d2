"""The safe HTTP client: SSRF guard with pinned DNS, limits, retries, redirects, X-Robots-Tag.

Everything here talks only to a threaded server on 127.0.0.1. Hostnames such as "a.test" or
"internal.test" go through an injected resolver, and tests that name other addresses use a fake
network backend that records connect attempts and sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from kgclip.fetch import http as http_mod
from kgclip.fetch.http import FetchPolicy, SafeFetcher, classify_address, x_robots_forbids
from kgclip.fetch.ray_run import ActorGate, GateActor

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

LOCAL = FetchPolicy(
    allow_loopback=True,
    backoff_s=0.01,
    per_host_rate_per_s=1000.0,
    connect_timeout=2.0,
    read_timeout=2.0,
    total_timeout=10.0,
    user_agent="kgclip/test (https://example.invalid; tests@example.invalid)",
)


@pytest.fixture(autouse=True)
def no_system_dns(monkeypatch):
    """No test may ask the real resolver: that would send a packet off this machine."""
    asked: list[str] = []

    async def refuse(host: str) -> list[str]:
        asked.append(host)
        raise OSError("system DNS is off in tests")

    monkeypatch.setattr(http_mod, "_system_resolve", refuse)
    yield
    assert asked == []


def policy(**kw) -> FetchPolicy:
    return FetchPolicy(**{**LOCAL.__dict__, **kw})


def run(coro):
    return asyncio.run(coro)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, length: bool = True) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        st = self.server.state  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        host = self.headers.get("Host", "").split(":")[0]
        with st["lock"]:
            st["hits"][path] = st["hits"].get(path, 0) + 1
            hits = st["hits"][path]
            st["agents"].append(self.headers.get("User-Agent", ""))
            st["hosts"].append(self.headers.get("Host", ""))
            st["arrivals"].append((host, path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._route(path, query, hits, host, st)

    def _route(self, path, query, hits, host, st) -> None:
        port = self.server.server_address[1]
        if path == "/img":
            self._send(200, PNG, {"Content-Type": "image/png"})
        elif path.startswith("/wait/"):  # answers after `s` seconds (one name per URL, to count hits)
            time.sleep(float(query["s"][0]))
            self._send(200, PNG, {"Content-Type": "image/png"})
        elif path.startswith("/r/"):
            n = int(path[3:])
            self._send(302, headers={"Location": "/img" if n == 0 else f"/r/{n - 1}"})
        elif path == "/to-internal":
            self._send(302, headers={"Location": f"http://internal.test:{port}/img"})
        elif path == "/to-metadata":
            self._send(301, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        elif path == "/to-file":
            self._send(302, headers={"Location": "file:///etc/passwd"})
        elif path == "/to-b":
            self._send(307, headers={"Location": f"http://b.test:{port}/img"})
        elif path == "/trickle":
            gap, n = float(query["gap"][0]), int(query["n"][0])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            for _ in range(n):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(gap)
        elif path == "/big":
            self._send(200, b"x" * 5000, {"Content-Type": "image/jpeg"})
        elif path == "/big-nolength":
            self.send_response(200)
            self.end_headers()  # HTTP/1.0, no Content-Length: the body runs until close
            for _ in range(50):
                self.wfile.write(b"y" * 1000)
        elif path == "/429":
            if hits == 1:
                self._send(429, b"slow down", {"Retry-After": "1"})
            else:
                self._send(200, PNG, {"Content-Type": "image/png"})
        elif path == "/429-long":
            self._send(429, b"", {"Retry-After": "3600"})
        elif path == "/500":
            self._send(500 if hits == 1 else 200, PNG)
        elif path == "/503":
            self._send(503, b"down")
        elif path == "/404":
            self._send(404, b"nope")
        elif path == "/cut":  # promises 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.close_connection = True
        elif path == "/garbage":  # not HTTP at all
            self.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            self.close_connection = True
        elif path == "/bad-gzip":
            self._send(200, b"this is not gzip", {"Content-Type": "image/png", "Content-Encoding": "gzip"})
        elif path == "/html":
            self._send(200, b"<html><body>soft 404</body></html>", {"Content-Type": "image/jpeg"})
        elif path == "/robots":
            self._send(200, PNG, {"Content-Type": "image/png", "X-Robots-Tag": query["v"][0]})
        elif path == "/slow":
            with st["lock"]:
                st["inflight"][host] = st["inflight"].get(host, 0) + 1
                st["total"] += 1
                st["max"][host] = max(st["max"].get(host, 0), st["inflight"][host])
                st["max_total"] = max(st["max_total"], st["total"])
            time.sleep(0.15)
            with st["lock"]:
                st["inflight"][host] -= 1
                st["total"] -= 1
            self._send(200, PNG)
        else:
            self._send(404)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.state = {  # type: ignore[attr-defined]
        "lock": threading.Lock(),
        "hits": {},
        "agents": [],
        "hosts": [],
        "arrivals": [],
        "inflight": {},
        "max": {},
        "total": 0,
        "max_total": 0,
    }
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv, base
    srv.shutdown()
    srv.server_close()


def table_resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    def resolve(host: str) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


def no_connect(addr_info):
    """A socket factory that fails the test if anything gets as far as opening a socket."""
    raise AssertionError(f"connect attempted to {addr_info[4]}")


async def fetch(url: str, pol: FetchPolicy = LOCAL, **kw):
    async with SafeFetcher(pol, **kw) as f:
        return await f.get(url), f


# -- basics -------------------------------------------------------------------------------------------


def test_image_ok(server):
    srv, base = server
    res, f = run(fetch(base + "/img"))
    assert res.status == "ok" and res.ok
    assert res.body == PNG
    assert res.content_type == "image/png"
    assert res.final_url == base + "/img"
    assert res.attempts == 1 and res.retryable is False
    assert srv.state["agents"] == [LOCAL.user_agent]
    assert f.connects == [("127.0.0.1", srv.server_address[1])]


def test_default_user_agent_is_descriptive():
    ua = FetchPolicy().user_agent
    assert ua.startswith("kgclip/") and "aiohttp/" in ua


def test_hostname_keeps_host_header_and_connects_to_pinned_ip(server):
    srv, _base = server
    port = srv.server_address[1]
    res, f = run(fetch(f"http://a.test:{port}/img", resolver=table_resolver({"a.test": ["127.0.0.1"]})))
    assert res.ok
    assert srv.state["hosts"] == [f"a.test:{port}"]
    assert f.connects == [("127.0.0.1", port)]


# -- SSRF guard ---------------------------------------------------------------------------------------

BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link_local"),
    ("fe80::1", "link_local"),
    ("fc00::1", "private"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("100.64.0.1", "shared"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.1", "documentation"),
    ("2001:db8::1", "documentation"),
    ("fec0::1", "site_local"),
    # IPv6 addresses that deliver to an embedded IPv4 host are judged by that host. Without the
    # unwrapping, Python calls 6to4 global (the metadata address would be reached) and NAT64
    # reserved (so these exact categories fail; see also test_wrapped_public_ipv4_is_allowed).
    ("2002:a9fe:a9fe::", "link_local"),  # 6to4 of 169.254.169.254, the metadata address
    ("2002:a9fe:a9fe:1:2:3:4:5", "link_local"),
    ("2002:7f00:1::", "loopback"),
    ("2002:a00:1::", "private"),
    ("2002:c0a8:101::1", "private"),
    ("64:ff9b::a9fe:a9fe", "link_local"),  # NAT64 (well-known prefix) of the metadata address
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::a00:1", "private"),
    ("64:ff9b::6440:1", "shared"),
    # local-use NAT64 has no fixed layout: refused whatever the low bits say
    ("64:ff9b:1::a9fe:a9fe", "reserved"),
    ("64:ff9b:1::5db8:d822", "reserved"),
]


@pytest.mark.parametrize(("ip", "category"), BLOCKED)
def test_blocked_via_resolver_never_connects(ip, category):
    res, f = run(
        fetch(
            "http://evil.test/x.png",
            FetchPolicy(),
            resolver=table_resolver({"evil.test": [ip]}),
            socket_factory=no_connect,
        )
    )
    assert (res.status, res.reason) == ("refused", f"blocked_address:{category}")
    assert res.retryable is False
    assert f.connects == []


@pytest.mark.parametrize(("ip", "category"), BLOCKED)
def test_blocked_literal_ip_never_connects(ip, category):
    host = f"[{ip}]" if ":" in ip else ip
    calls: list[str] = []
    res, f = run(
        fetch(
            f"http://{host}:8080/x.png",
            FetchPolicy(),
            resolver=table_resolver({}, calls),
            socket_factory=no_connect,
        )
    )
    assert (res.status, res.reason) == ("refused", f"blocked_address:{category}")
    assert calls == []  # a literal is judged as it is, not looked up
    assert f.connects == []


def test_one_blocked_answer_among_public_ones_refuses():
    res, f = run(
        fetch(
            "http://mixed.test/",
            FetchPolicy(),
            resolver=table_resolver({"mixed.test": ["93.184.216.34", "10.0.0.5"]}),
            socket_factory=no_connect,
        )
    )
    assert res.reason == "blocked_address:private"
    assert f.connects == []


def test_classify_public_addresses():
    assert classify_address("93.184.216.34") is None
    assert classify_address("2606:2800:220:1:248:1893:25c8:1946") is None
    assert classify_address("::ffff:93.184.216.34") is None


@pytest.mark.parametrize("ip", ["64:ff9b::5db8:d822", "2002:5db8:d822::", "2002:5db8:d822:1::1"])
def test_wrapped_public_ipv4_is_allowed(ip):
    """NAT64 and 6to4 of a public IPv4 (93.184.216.34) are public: judged by the host they reach."""
    assert classify_address(ip) is None


def test_allow_loopback_does_not_allow_wrapped_metadata():
    for ip in ("2002:a9fe:a9fe::", "64:ff9b::a9fe:a9fe"):
        res, f = run(
            fetch(
                "http://x.test/",
                FetchPolicy(allow_loopback=True, allow_private=True),
                resolver=table_resolver({"x.test": [ip]}),
                socket_factory=no_connect,
            )
        )
        assert res.reason == "blocked_address:link_local"
        assert f.connects == []


def test_allow_loopback_does_not_allow_private_or_link_local():
    for ip, reason in [
        ("10.0.0.5", "private"),
        ("169.254.169.254", "link_local"),
        ("0.0.0.0", "unspecified"),
    ]:
        res, f = run(
            fetch(
                "http://x.test/",
                FetchPolicy(allow_loopback=True),
                resolver=table_resolver({"x.test": [ip]}),
                socket_factory=no_connect,
            )
        )
        assert res.reason == f"blocked_address:{reason}"
        assert f.connects == []


def test_allow_private_does_not_allow_link_local_metadata():
    res, _f = run(
        fetch(
            "http://169.254.169.254/latest/",
            FetchPolicy(allow_private=True),
            socket_factory=no_connect,
        )
    )
    assert res.reason == "blocked_address:link_local"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "gopher://example.com/",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
    ],
)
def test_non_http_schemes_refused(url):
    res, f = run(fetch(url, FetchPolicy(), socket_factory=no_connect))
    assert (res.status, res.reason) == ("refused", "unsupported_scheme")
    assert f.connects == []


@pytest.mark.parametrize("url", ["http://", "http://exa mple.com/", "", "::::"])
def test_garbage_urls_do_not_raise(url):
    res, _ = run(fetch(url, FetchPolicy(), resolver=table_resolver({}), socket_factory=no_connect))
    assert res.status == "refused"
    assert res.reason in ("bad_url", "unsupported_scheme")


def test_dns_error_is_a_reason():
    res, f = run(fetch("http://nowhere.test/", FetchPolicy(), resolver=table_resolver({})))
    assert (res.status, res.reason, res.retryable) == ("failed", "dns_error", True)
    assert f.connects == []


def test_loopback_refused_by_default(server):
    _, base = server
    res, f = run(fetch(base + "/img", FetchPolicy()))
    assert res.reason == "blocked_address:loopback"
    assert f.connects == []


# -- DNS pinning --------------------------------------------------------------------------------------


def test_dns_answer_cannot_change_between_check_and_connect(server):
    """The connector never asks the resolver: it connects to the answer that was checked."""
    srv, _ = server
    port = srv.server_address[1]
    answers = iter([["127.0.0.1"], ["10.0.0.5"]])
    calls: list[str] = []

    def rebinding(host: str) -> list[str]:
        calls.append(host)
        return next(answers)

    async def go():
        async with SafeFetcher(LOCAL, resolver=rebinding) as f:
            first = await f.get(f"http://rebind.test:{port}/img")
            second = await f.get(f"http://rebind.test:{port}/img")
            return first, second, f

    first, second, f = run(go())
    assert first.ok and first.body == PNG
    assert calls == ["rebind.test", "rebind.test"]  # once per request, never at connect time
    assert f.connects == [("127.0.0.1", port)]  # connected to the checked answer only
    # the next request sees the rebound answer, checks it again and refuses
    assert second.reason == "blocked_address:private"
    assert srv.state["hits"] == {"/img": 1}


def test_every_checked_address_is_tried_in_turn(server):
    """`localhost` may answer ::1 first while the server listens on 127.0.0.1 only: the refused
    addresses are passed over (each still through the connect hook), and the request succeeds."""
    srv, _ = server
    port = srv.server_address[1]
    answers = {"localhost.test": ["::1", "127.0.0.2", "127.0.0.1"]}  # nothing listens on the first two
    res, f = run(fetch(f"http://localhost.test:{port}/img", resolver=table_resolver(answers)))
    assert res.ok and res.body == PNG and res.attempts == 1
    assert f.connects == [("::1", port), ("127.0.0.2", port), ("127.0.0.1", port)]
    assert srv.state["hosts"] == [f"localhost.test:{port}"]


def test_connection_layer_refuses_unpinned_hosts_and_blocked_addresses():
    resolver = http_mod._PinnedResolver()
    with pytest.raises(http_mod.UnpinnedHostError):
        run(resolver.resolve("never-checked.test", 80))
    resolver.pins["a.test"] = ["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]
    answers = run(resolver.resolve("A.test", 443))
    assert [(a["host"], a["family"], a["port"]) for a in answers] == [
        ("2606:2800:220:1:248:1893:25c8:1946", socket.AF_INET6, 443),
        ("93.184.216.34", socket.AF_INET, 443),
    ]
    sockets = http_mod._GuardedSockets(FetchPolicy(), no_connect)
    # even an address that got past the pin is classified again at the connect hook
    for ip in ("10.0.0.1", "127.0.0.1", "169.254.169.254", "::1"):
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with pytest.raises(http_mod.UnpinnedHostError):
            sockets((family, socket.SOCK_STREAM, 6, "", (ip, 80)))
    assert sockets.connects == []


# -- redirects ----------------------------------------------------------------------------------------


def test_redirect_chain(server):
    _srv, base = server
    res, _ = run(fetch(base + "/r/3"))
    assert res.ok and res.body == PNG
    assert res.final_url == base + "/img"
    assert res.attempts == 5


def test_too_many_redirects(server):
    _, base = server
    res, _ = run(fetch(base + "/r/5", policy(max_redirects=3)))
    assert (res.status, res.reason) == ("refused", "too_many_redirects")
    res, _ = run(fetch(base + "/r/5", policy(max_redirects=6)))
    assert res.ok


def test_redirect_to_blocked_host_refused_at_the_hop(server):
    srv, base = server
    port = srv.server_address[1]
    calls: list[str] = []
    res, f = run(
        fetch(
            base + "/to-internal",
            resolver=table_resolver({"internal.test": ["10.0.0.5"]}, calls),
        )
    )
    assert (res.status, res.reason) == ("refused", "blocked_address:private")
    assert res.final_url == f"http://internal.test:{port}/img"
    assert calls == ["internal.test"]
    assert f.connects == [("127.0.0.1", port)]  # only the first hop connected
    assert srv.state["hits"] == {"/to-internal": 1}


def test_redirect_to_metadata_and_file_refused(server):
    _srv, base = server
    res, f = run(fetch(base + "/to-metadata"))
    assert res.reason == "blocked_address:link_local"
    assert all(ip == "127.0.0.1" for ip, _ in f.connects)
    res, _ = run(fetch(base + "/to-file"))
    assert res.reason == "unsupported_scheme"


def test_redirect_to_other_host_is_resolved_and_pinned(server):
    srv, _ = server
    port = srv.server_address[1]
    resolver = table_resolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    res, f = run(fetch(f"http://a.test:{port}/to-b", resolver=resolver))
    assert res.ok and res.final_url == f"http://b.test:{port}/img"
    assert len(f.connects) == 2  # one connection per host
    assert srv.state["hosts"] == [f"a.test:{port}", f"b.test:{port}"]


# -- timeouts and size --------------------------------------------------------------------------------


def test_read_timeout(server):
    _, base = server
    res, _ = run(fetch(base + "/trickle?gap=0.5&n=4", policy(read_timeout=0.1, max_retries=0)))
    assert (res.status, res.reason, res.retryable) == ("failed", "timeout", True)


def test_total_timeout_stops_a_trickle(server):
    _, base = server
    t0 = time.monotonic()
    res, _ = run(fetch(base + "/trickle?gap=0.05&n=100", policy(read_timeout=1.0, total_timeout=0.6)))
    assert (res.status, res.reason) == ("failed", "timeout")
    assert time.monotonic() - t0 < 2.0
    assert res.attempts == 1


def test_too_many_bytes_with_content_length(server):
    _, base = server
    res, _ = run(fetch(base + "/big", policy(max_bytes=1000)))
    assert (res.status, res.reason, res.retryable) == ("refused", "too_many_bytes", False)
    assert res.body is None and res.attempts == 1


def test_too_many_bytes_without_content_length(server):
    _, base = server
    res, _ = run(fetch(base + "/big-nolength", policy(max_bytes=10_000)))
    assert (res.status, res.reason, res.retryable) == ("refused", "too_many_bytes", False)
    res, _ = run(fetch(base + "/big-nolength", policy(max_bytes=60_000)))
    assert res.ok and len(res.body) == 50_000


# -- retries ------------------------------------------------------------------------------------------


def test_429_retry_after_pauses_then_succeeds(server):
    srv, base = server
    t0 = time.monotonic()
    res, _ = run(fetch(base + "/429"))
    elapsed = time.monotonic() - t0
    assert res.ok and res.attempts == 2
    assert elapsed >= 0.95
    assert srv.state["hits"]["/429"] == 2


def test_429_retry_after_too_long_gives_up(server):
    _, base = server
    res, _ = run(fetch(base + "/429-long"))
    assert (res.status, res.reason, res.retryable) == ("failed", "http_429", True)
    assert res.retry_after and res.retry_after > 3000
    assert res.attempts == 1


def test_500_then_200(server):
    _, base = server
    res, _ = run(fetch(base + "/500"))
    assert res.ok and res.attempts == 2


def test_503_exhausts_retries(server):
    srv, base = server
    res, _ = run(fetch(base + "/503", policy(max_retries=2)))
    assert (res.status, res.reason, res.retryable) == ("failed", "http_503", True)
    assert res.attempts == 3 and srv.state["hits"]["/503"] == 3


def test_404_is_final(server):
    _srv, base = server
    res, _ = run(fetch(base + "/404"))
    assert (res.status, res.reason, res.retryable, res.attempts) == ("failed", "http_404", False, 1)
    assert res.http_status == 404


def test_body_cut_short_is_a_transient_failure(server):
    _srv, base = server
    res, _ = run(fetch(base + "/cut", policy(max_retries=1)))
    assert (res.status, res.reason, res.retryable, res.attempts) == ("failed", "connection_error", True, 2)


def test_a_server_that_does_not_speak_http_fails_cleanly(server):
    _srv, base = server
    res, _ = run(fetch(base + "/garbage", policy(max_retries=0)))
    assert (res.status, res.reason) == ("failed", "connection_error")


def test_undecodable_content_encoding_is_final(server):
    _srv, base = server
    res, _ = run(fetch(base + "/bad-gzip", policy(max_retries=2)))
    assert (res.status, res.reason, res.retryable, res.attempts) == ("failed", "decoding_error", False, 1)


def test_content_type_is_not_trusted(server):
    """The client hands over whatever arrived; the image pipeline judges the bytes (an HTML page
    served as image/jpeg becomes not_an_image there, see test_harvest_web.py)."""
    _srv, base = server
    res, _ = run(fetch(base + "/html"))
    assert res.ok and res.content_type == "image/jpeg" and res.body.startswith(b"<html>")


def test_connection_refused_is_retried_and_reported(server):
    srv, _ = server
    # a port nothing listens on (the server's, after it closes)
    port = srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    res, _ = run(fetch(f"http://127.0.0.1:{port}/img", policy(max_retries=1)))
    assert (res.status, res.reason, res.retryable) == ("failed", "connection_error", True)
    assert res.attempts == 2


# -- X-Robots-Tag -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("noai", True),
        ("NoImageAI", True),
        ("noindex, noai", True),
        ("kgclip: noai", True),
        ("otherbot: noai", False),
        ("otherbot: noimageai, nofollow", False),
        ("noindex", False),
        ("unavailable_after: 2030-01-01, noai", True),
    ],
)
def test_x_robots_tag(server, value, refused):
    _, base = server
    res, _ = run(fetch(f"{base}/robots?v={value}"))
    if refused:
        assert (res.status, res.reason) == ("refused", "x_robots_tag")
        assert res.body is None
    else:
        assert res.ok
    res, _ = run(fetch(f"{base}/robots?v={value}", policy(honour_x_robots=False)))
    assert res.ok


def test_x_robots_multiple_headers():
    assert x_robots_forbids(["otherbot: noai", "noimageai"])
    assert not x_robots_forbids(["otherbot: noai", "noindex"])


# -- limits -------------------------------------------------------------------------------------------


def test_per_host_and_global_concurrency(server):
    srv, _ = server
    port = srv.server_address[1]
    hosts = ["a.test", "b.test", "c.test"]
    resolver = table_resolver({h: ["127.0.0.1"] for h in hosts})

    async def go(pol):
        async with SafeFetcher(pol, resolver=resolver) as f:
            urls = [f"http://{h}:{port}/slow?i={i}" for h in hosts for i in range(5)]
            return await asyncio.gather(*(f.get(u) for u in urls))

    results = run(go(policy(per_host_concurrency=2, global_concurrency=32)))
    assert all(r.ok for r in results)
    assert max(srv.state["max"].values()) == 2
    assert srv.state["max_total"] > 2

    srv.state["max"].clear()
    srv.state["max_total"] = 0
    results = run(go(policy(per_host_concurrency=3, global_concurrency=2)))
    assert all(r.ok for r in results)
    assert srv.state["max_total"] <= 2


def test_per_host_rate(server):
    _, base = server

    async def go():
        async with SafeFetcher(policy(per_host_rate_per_s=10.0, per_host_concurrency=4)) as f:
            t0 = time.monotonic()
            results = await asyncio.gather(*(f.get(base + "/img") for _ in range(5)))
            return results, time.monotonic() - t0

    results, elapsed = run(go())
    assert all(r.ok for r in results)
    assert elapsed >= 0.35  # five starts at 10/s: the last waits about 0.4 s


# -- time budgets: requests sent vs waiting for a slot ------------------------------------------------


def fetch_all(urls: list[str], pol: FetchPolicy, **kw):
    async def go():
        async with SafeFetcher(pol, **kw) as f:
            return await asyncio.gather(*(f.get(u) for u in urls))

    return run(go())


def test_waiting_for_a_busy_host_does_not_count_against_the_request_timeout(server):
    """30 healthy URLs on one host, two at a time, 0.1 s each: the last waits ~1.4 s for its turn,
    far beyond the 0.5 s request timeout, and still succeeds with exactly one request sent."""
    srv, base = server
    urls = [f"{base}/wait/{i}?s=0.1" for i in range(30)]
    results = fetch_all(urls, policy(per_host_concurrency=2, total_timeout=0.5))
    assert [(r.status, r.reason, r.attempts) for r in results] == [("ok", "", 1)] * 30
    assert srv.state["hits"] == {f"/wait/{i}": 1 for i in range(30)}


def test_a_stalling_url_does_not_make_the_others_on_its_host_time_out(server):
    srv, base = server
    stall, slow = f"{base}/wait/stall?s=2", f"{base}/wait/slow?s=0.4"
    others = [f"{base}/wait/{i}?s=0.05" for i in range(8)]
    pol = policy(per_host_concurrency=2, total_timeout=0.5, max_retries=2)
    results = fetch_all([stall, slow, *others], pol)
    by_url = {r.url: r for r in results}
    # the stalled request used the whole budget, so it is not retried
    assert (by_url[stall].reason, by_url[stall].retryable, by_url[stall].attempts) == ("timeout", True, 1)
    assert all(by_url[u].ok and by_url[u].attempts == 1 for u in [slow, *others])
    assert sum(r.attempts for r in results) == sum(srv.state["hits"].values()) == 10  # counted at the server


def test_a_request_queued_for_a_busy_host_leaves_global_slots_to_idle_hosts(server):
    """Host slot first, then a global one: with two global slots and a.test busy, b.test's request is
    among the first two the server sees, not the last. (Which of a0 and b arrives first is a race.)"""
    srv, _ = server
    port = srv.server_address[1]
    urls = [f"http://a.test:{port}/wait/a{i}?s=0.3" for i in range(4)] + [f"http://b.test:{port}/wait/b?s=0"]
    resolver = table_resolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    results = fetch_all(urls, policy(per_host_concurrency=1, global_concurrency=2), resolver=resolver)
    assert all(r.ok for r in results)
    assert sorted(srv.state["arrivals"][:2]) == [("a.test", "/wait/a0"), ("b.test", "/wait/b")]


def test_the_callers_body_window_is_taken_only_when_the_hosts_turn_comes(server):
    """The fetch stage bounds bodies in memory with a window; URLs queued for a busy host must not
    fill it while an idle host's URL waits. With a window of 1, b.test is among the first two requests seen,
    and the window is held on return exactly for results with a body."""
    srv, _ = server
    port = srv.server_address[1]
    urls = [f"http://a.test:{port}/wait/a{i}?s=0.2" for i in range(4)] + [f"http://b.test:{port}/wait/b?s=0"]
    urls.append(f"http://b.test:{port}/missing")
    resolver = table_resolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})

    async def go():
        window = asyncio.Semaphore(1)
        async with SafeFetcher(policy(per_host_concurrency=1, global_concurrency=10), resolver=resolver) as f:

            async def one(url):
                got = await f.get(url, admit=window)
                if got.ok:
                    await asyncio.sleep(0.01)  # the decode
                    window.release()
                return got

            results = await asyncio.gather(*(one(u) for u in urls))
        return results, window._value

    results, left = run(go())
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert left == 1  # every unit came back, the failed URL's included
    # which of a0 and b comes first is a race
    assert sorted(srv.state["arrivals"][:2]) == [("a.test", "/wait/a0"), ("b.test", "/wait/b")]


def test_waiting_too_long_for_a_slot_is_a_queue_timeout_with_nothing_sent(server):
    srv, base = server
    busy, queued = f"{base}/wait/busy?s=1.0", f"{base}/wait/queued?s=0"
    results = fetch_all([busy, queued], policy(per_host_concurrency=1, queue_timeout=0.3))
    assert results[0].ok
    assert (results[1].status, results[1].reason, results[1].retryable) == ("failed", "queue_timeout", True)
    assert results[1].attempts == 0 and "/wait/queued" not in srv.state["hits"]


class InProcessActor:
    """A GateActor reached the way a Ray task reaches it (`actor.method.remote(...)`, awaited), in
    this process: the shared-gate path of fetch/ray_run.py without starting Ray."""

    def __init__(self, actor: GateActor) -> None:
        for name in ("acquire", "release", "pause"):
            setattr(self, name, type("Method", (), {"remote": staticmethod(getattr(actor, name))}))


def test_the_shared_lease_gate_takes_the_host_first_and_bounds_the_wait(server):
    srv, base = server
    actor = GateActor(concurrency=1, rate_per_s=1000.0, lease_s=60.0)
    gate = ActorGate(InProcessActor(actor))
    busy, queued = f"{base}/wait/busy?s=1.0", f"{base}/wait/queued?s=0"
    results = fetch_all([busy, queued], policy(per_host_concurrency=1, queue_timeout=0.3), gate=gate)
    assert results[0].ok and (results[1].reason, results[1].attempts) == ("queue_timeout", 0)
    assert srv.state["hits"] == {"/wait/busy": 1}
    assert actor._leases == {}  # the caller that gave up was never granted a slot it could not return
    after = fetch_all([f"{base}/wait/later?s=0"], policy(per_host_concurrency=1), gate=gate)
    assert after[0].ok
