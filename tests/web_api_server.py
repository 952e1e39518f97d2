"""A loopback JSON API for testing web search backends: routes, scripted faults, a rate limit.

`JsonApi(handler)` serves GET requests on 127.0.0.1; `handler(path, params, headers)` returns the
JSON body. `api.faults` holds replies sent first, one per request: (status, headers, body bytes,
content type). `allowed_per_s` makes the server answer 429 (with Retry-After) to requests that
come faster than the rate it allows: a token bucket holding 2, as API gateways enforce "N per
second" (so one request arriving a millisecond early is not a violation, a sustained excess is).
`port` serves on a given loopback port (0: any free one), e.g. one a test found closed before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

Handler = Callable[[str, dict[str, str], dict[str, str]], Any]


@dataclass
class Seen:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float
    status: int = 200
    query: str = ""  # the raw query string, for repeated parameters


@dataclass
class JsonApi:
    handler: Handler
    allowed_per_s: float | None = None
    faults: list[tuple[int, dict[str, str], bytes, str]] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens = 1.0
        self._last = time.monotonic()
        api = self

        class Handle(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                url = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                seen = Seen(
                    url.path,
                    params,
                    {k.lower(): v for k, v in self.headers.items()},
                    time.monotonic(),
                    query=url.query,
                )
                status, headers, body, ctype = api._answer(seen)
                seen.status = status
                with api._lock:
                    api.requests.append(seen)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handle)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _answer(self, seen: Seen) -> tuple[int, dict[str, str], bytes, str]:
        with self._lock:
            if self.faults:
                return self.faults.pop(0)
            if self.allowed_per_s is not None:
                now = time.monotonic()
                self._tokens = min(2.0, self._tokens + (now - self._last) * self.allowed_per_s)
                self._last = now
                if self._tokens < 1.0:
                    wait = (1.0 - self._tokens) / self.allowed_per_s
                    return 429, {"Retry-After": f"{wait:.3f}"}, b'{"detail": "throttled"}', "application/json"
                self._tokens -= 1.0
        return 200, {}, orjson.dumps(self.handler(seen.path, seen.params, seen.headers)), "application/json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> JsonApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
