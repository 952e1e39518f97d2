"""A careful HTTP client for downloading images from arbitrary web hosts.

`SafeFetcher.get(url)` never raises for a bad URL or a bad server: it returns a `FetchResult`
whose `reason` is a short code. The guard against server-side request forgery works like this:

1. only http and https URLs are accepted;
2. the host is resolved by us (the resolver is injectable) and *every* answer is classified with
   `ipaddress`; one blocked answer refuses the request, naming the category;
3. the first checked address is *pinned* for that host, and the httpcore network backend that
   opens sockets (`_PinnedBackend.connect_tcp`) connects to the pinned IP instead of the hostname.
   The backend never resolves names itself and refuses any host that was not pinned, so a second
   DNS answer can never be used (no DNS rebinding between check and connect). The URL, the Host
   header and the TLS server name (SNI, certificate check) all keep the original hostname;
4. redirects are followed by hand, and every hop repeats steps 1-3.

Proxies from the environment are ignored (`trust_env=False`): a proxy would resolve names itself.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import ipaddress
import logging
import re
import socket
import ssl
import time
import typing
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import certifi
import httpcore
import httpx

from kgclip.fetch.hostgate import HostGate, LocalHostGate, host_slot
from kgclip.useragent import user_agent as _make_user_agent

log = logging.getLogger(__name__)

Resolver = Callable[[str], "list[str] | Awaitable[list[str]]"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = ("http", "https")
_HOST_CHARS = re.compile(r"[a-z0-9._:\-]+")  # IDNA hosts arrive as punycode; IPv6 without brackets
REDIRECT_CODES = (301, 302, 303, 307, 308)

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_DOCUMENTATION = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


@dataclass(frozen=True)
class FetchPolicy:
    allow_loopback: bool = False  # tests and local mirrors only
    allow_private: bool = False  # RFC 1918, fc00::/7 and 100.64/10 (never link-local or metadata)
    allow_networks: tuple[str, ...] = ()  # explicit CIDRs let through whatever their category
    max_redirects: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    per_host_concurrency: int = 2
    per_host_rate_per_s: float = 2.0
    global_concurrency: int = 32
    max_retries: int = 3
    backoff_s: float = 1.0
    max_retry_after_s: float = 60.0
    honour_x_robots: bool = True
    user_agent: str = field(default_factory=lambda: _make_user_agent("unconfigured contact"))


@dataclass
class FetchResult:
    url: str
    status: str  # "ok" | "refused" | "failed"
    reason: str = ""
    retryable: bool = False
    body: bytes | None = None
    final_url: str | None = None
    content_type: str | None = None
    http_status: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------------------------------
# address classification


def classify_address(ip: str | IPAddress) -> str | None:
    """The reason an address is not public, or None for an ordinary global address."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        elif addr in ipaddress.ip_network("64:ff9b::/96"):  # NAT64: judge the embedded IPv4
            addr = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        elif addr.sixtofour is not None:
            addr = addr.sixtofour
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link_local"
    if addr.is_multicast:
        return "multicast"
    if addr.version == 4 and addr in _SHARED:
        return "shared"
    if any(addr in net for net in _DOCUMENTATION if net.version == addr.version):
        return "documentation"
    if addr.is_reserved:
        return "reserved"
    if addr.is_private:
        return "private"
    if not addr.is_global:
        return "reserved"
    return None


def _blocked_category(ip: str, policy: FetchPolicy) -> str | None:
    """The category if the policy refuses this address, else None."""
    category = classify_address(ip)
    if category is None:
        return None
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    for net in policy.allow_networks:
        network = ipaddress.ip_network(net, strict=False)
        if network.version == addr.version and addr in network:
            return None
    if category == "loopback" and policy.allow_loopback:
        return None
    if category in ("private", "shared") and policy.allow_private:
        return None
    return category


async def _system_resolve(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0]).split("%", 1)[0]
        if ip not in out:
            out.append(ip)
    return out


# ---------------------------------------------------------------------------------------------------
# the pinned network backend


class UnpinnedHostError(Exception):
    """The connection layer was asked for a host that the guard did not check."""


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the SSRF guard checked and pinned."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, policy: FetchPolicy) -> None:
        self._inner = inner
        self._policy = policy
        self.pins: dict[str, str] = {}
        self.connects: list[tuple[str, str, int]] = []  # (hostname, pinned ip, port)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        ip = self.pins.get(host.lower())
        if ip is None:
            raise UnpinnedHostError(host)
        category = _blocked_category(ip, self._policy)  # checked again at the moment of connecting
        if category is not None:
            raise UnpinnedHostError(f"{host} -> {ip} ({category})")
        self.connects.append((host, ip, port))
        return await self._inner.connect_tcp(
            ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):  # type: ignore[override]
        raise UnpinnedHostError(f"unix socket {path}")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (exception mapping, streaming), with our backend in its pool."""

    def __init__(self, backend: _PinnedBackend, limits: httpx.Limits, tls: ssl.SSLContext) -> None:
        super().__init__(verify=tls, trust_env=False, limits=limits)
        old = self._pool
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=old._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=backend,
        )


# ---------------------------------------------------------------------------------------------------
# connection pools


class _HostClients:
    """One small connection pool per host, the least recently used idle ones closed beyond `keep`.

    httpcore scans every pooled connection for every queued request, and a full shared pool closes
    another host's idle keep-alive connection to open a new one. With many hosts one big pool
    therefore spent most of the fetch stage's CPU in that scan and reconnected on almost every
    request (benchmarks/fetch_vs_img2dataset.py); per-host pools keep both small.
    """

    def __init__(self, make: Callable[[], httpx.AsyncClient], keep: int) -> None:
        self._make = make
        self._keep = keep
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._busy: Counter[str] = Counter()

    @asynccontextmanager
    async def using(self, host: str) -> AsyncIterator[httpx.AsyncClient]:
        client = self._clients.pop(host, None) or self._make()
        self._clients[host] = client  # most recently used last
        self._busy[host] += 1
        try:
            yield client
        finally:
            self._busy[host] -= 1
            if not self._busy[host]:
                del self._busy[host]
            await self._evict()

    async def _evict(self) -> None:
        while len(self._clients) > self._keep:
            idle = next((h for h in self._clients if h not in self._busy), None)
            if idle is None:
                return
            await self._clients.pop(idle).aclose()

    async def aclose(self) -> None:
        while self._clients:
            await self._clients.popitem()[1].aclose()


# ---------------------------------------------------------------------------------------------------
# results of nested helpers


class _Outcome(Exception):
    """Carries a final result out of nested helpers."""

    def __init__(self, status: str, reason: str, retryable: bool = False, **extra: typing.Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retryable, self.extra = status, reason, retryable, extra


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def x_robots_forbids(values: list[str], agent: str = "kgclip") -> bool:
    """True if an X-Robots-Tag header says noai/noimageai for everyone or for `agent`."""
    for value in values:
        scope: str | None = None
        for part in value.split(","):
            part = part.strip().lower()
            if ":" in part:
                head, _, rest = part.partition(":")
                head = head.strip()
                # "unavailable_after: <date>" is a directive, not a user-agent prefix
                if head not in ("unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"):
                    scope, part = head, rest.strip()
            if part in ("noai", "noimageai") and (scope is None or scope == agent.lower()):
                return True
    return False


# ---------------------------------------------------------------------------------------------------
# the fetcher


class SafeFetcher:
    """Async context manager; `await fetcher.get(url)` returns a FetchResult and never raises."""

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        *,
        resolver: Resolver | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        gate: HostGate | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._gate = gate or LocalHostGate(self.policy.per_host_concurrency, self.policy.per_host_rate_per_s)
        self._resolver = resolver
        self.backend = _PinnedBackend(network_backend or httpcore.AnyIOBackend(), self.policy)
        self._clients: _HostClients | None = None
        self._global: asyncio.Semaphore | None = None

    async def __aenter__(self) -> SafeFetcher:
        p = self.policy
        per_host = httpx.Limits(
            max_connections=p.per_host_concurrency, max_keepalive_connections=p.per_host_concurrency
        )
        timeout = httpx.Timeout(
            connect=p.connect_timeout, read=p.read_timeout, write=p.read_timeout, pool=p.total_timeout
        )

        # httpx's default context, made once: loading the CA bundle costs ~20 ms per client.
        tls = ssl.create_default_context(cafile=certifi.where())

        def client() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                transport=_PinnedTransport(self.backend, per_host, tls),
                timeout=timeout,
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": p.user_agent},
            )

        self._clients = _HostClients(client, keep=2 * p.global_concurrency)
        self._global = asyncio.Semaphore(p.global_concurrency)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._clients is not None:
            await self._clients.aclose()
            self._clients = None

    @property
    def connects(self) -> list[tuple[str, str, int]]:
        """Every TCP connect actually attempted: (hostname, pinned IP, port)."""
        return self.backend.connects

    async def get(self, url: str) -> FetchResult:
        if self._clients is None:
            raise RuntimeError("use SafeFetcher as an async context manager")
        started = time.monotonic()
        state = {"attempts": 0, "final_url": url}
        try:
            async with asyncio.timeout(self.policy.total_timeout):
                result = await self._follow(url, state)
        except _Outcome as o:
            result = FetchResult(
                url, o.status, o.reason, o.retryable, final_url=state["final_url"], **o.extra
            )
        except TimeoutError:
            result = FetchResult(url, "failed", "timeout", True, final_url=state["final_url"])
        except Exception as exc:  # a bug or an exotic server must not break a whole stage
            log.exception("unexpected error fetching %s", url)
            result = FetchResult(
                url, "failed", f"error:{type(exc).__name__}", True, final_url=state["final_url"]
            )
        result.attempts = int(state["attempts"])
        result.seconds = time.monotonic() - started
        return result

    # -- steps ------------------------------------------------------------------------------------

    async def _follow(self, url: str, state: dict) -> FetchResult:
        current = url
        for _hop in range(self.policy.max_redirects + 1):
            state["final_url"] = current
            parsed, host = self._check_url(current)
            await self._pin(host)
            location = await self._hop(parsed, host, state)
            if isinstance(location, FetchResult):
                location.url = url
                return location
            try:
                current = str(parsed.join(location))
            except (httpx.InvalidURL, ValueError) as exc:
                raise _Outcome("refused", "bad_redirect") from exc
        raise _Outcome("refused", "too_many_redirects")

    def _check_url(self, url: str) -> tuple[httpx.URL, str]:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise _Outcome("refused", "bad_url") from exc
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise _Outcome("refused", "unsupported_scheme")
        host = parsed.raw_host.decode("ascii", "replace").lower()
        if not host or not _HOST_CHARS.fullmatch(host):
            raise _Outcome("refused", "bad_url")
        return parsed, host

    async def _resolve(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]  # a literal address is checked as it is
        except ValueError:
            pass
        try:
            if self._resolver is None:
                return await _system_resolve(host)
            answer = self._resolver(host)
            if inspect.isawaitable(answer):
                answer = await answer
            return [str(a) for a in answer]
        except (OSError, UnicodeError, ValueError) as exc:
            raise _Outcome("failed", "dns_error", True) from exc

    async def _pin(self, host: str) -> None:
        addresses = await self._resolve(host)
        if not addresses:
            raise _Outcome("failed", "dns_error", True)
        for ip in addresses:
            try:
                category = _blocked_category(ip, self.policy)
            except ValueError as exc:
                raise _Outcome("failed", "dns_error", True) from exc
            if category is not None:
                raise _Outcome("refused", f"blocked_address:{category}")
        self.backend.pins[host] = addresses[0].split("%", 1)[0]

    async def _hop(self, url: httpx.URL, host: str, state: dict) -> str | FetchResult:
        """One request (with retries) to one URL: a redirect target, or a final result."""
        p = self.policy
        assert self._global is not None
        attempt = 0
        while True:
            attempt += 1
            state["attempts"] += 1
            retry_after: float | None = None
            async with self._global, host_slot(self._gate, host):
                try:
                    outcome = await self._request(url, host)
                except _Outcome as o:
                    if not o.retryable or o.reason in ("too_many_bytes", "x_robots_tag"):
                        raise
                    outcome = o
            if not isinstance(outcome, _Outcome):
                return outcome
            retry_after = outcome.extra.get("retry_after")
            if retry_after is not None:
                if retry_after > p.max_retry_after_s:
                    raise outcome
                await self._gate.pause(host, retry_after)
            if attempt > p.max_retries:
                raise outcome
            delay = p.backoff_s * (2 ** (attempt - 1))
            await asyncio.sleep(delay)  # a Retry-After pause is waited for in the gate

    async def _request(self, url: httpx.URL, host: str) -> str | FetchResult:
        assert self._clients is not None
        p = self.policy
        try:
            async with self._clients.using(host) as client, client.stream("GET", url) as resp:
                code = resp.status_code
                if code in REDIRECT_CODES:
                    location = resp.headers.get("location")
                    if not location:
                        raise _Outcome("failed", f"http_{code}", http_status=code)
                    return location
                if code == 429 or code >= 500:
                    ra = _parse_retry_after(resp.headers.get("retry-after")) if code in (429, 503) else None
                    raise _Outcome("failed", f"http_{code}", True, http_status=code, retry_after=ra)
                if not 200 <= code < 300:
                    raise _Outcome("failed", f"http_{code}", False, http_status=code)
                if p.honour_x_robots and x_robots_forbids(resp.headers.get_list("x-robots-tag")):
                    raise _Outcome("refused", "x_robots_tag", http_status=code)
                length = resp.headers.get("content-length")
                if length and length.strip().isdigit() and int(length) > p.max_bytes:
                    raise _Outcome("refused", "too_many_bytes", http_status=code)
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.aiter_bytes():
                    total += len(chunk)
                    if total > p.max_bytes:
                        raise _Outcome("refused", "too_many_bytes", http_status=code)
                    chunks.append(chunk)
                return FetchResult(
                    str(url),
                    "ok",
                    "",
                    body=b"".join(chunks),
                    final_url=str(url),
                    content_type=resp.headers.get("content-type"),
                    http_status=code,
                )
        except UnpinnedHostError as exc:
            raise _Outcome("refused", "blocked_address:unpinned") from exc
        except httpx.TimeoutException as exc:
            raise _Outcome("failed", "timeout", True) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise _Outcome("refused", "bad_url") from exc
        except httpx.DecodingError as exc:
            raise _Outcome("failed", "decoding_error") from exc
        except httpx.TransportError as exc:
            raise _Outcome("failed", "connection_error", True) from exc
