"""A careful HTTP client for downloading images from arbitrary web hosts.

`SafeFetcher.get(url)` never raises for a bad URL or a bad server: it returns a `FetchResult`
whose `reason` is a short code. The guard against server-side request forgery works like this:

1. only http and https URLs are accepted;
2. the host is resolved by us (the resolver is injectable) and *every* answer is classified with
   `ipaddress`; one blocked answer refuses the request, naming the category;
3. the checked addresses are *pinned* for that host. aiohttp's connector never resolves a
   name itself: its resolver (`_PinnedResolver`) answers only with the pinned addresses and refuses
   any host that was not pinned, so a second DNS answer can never be used (no DNS rebinding
   between check and connect). The connector tries the pinned addresses in turn until one
   connects (a host whose first address refuses is still reached). The URL, the Host header and
   the TLS server name (SNI, certificate check) all keep the original hostname;
4. at the connect hook (the connector's socket factory) the destination address is classified
   once more, so even an IP literal that reached the connector some other way cannot connect;
5. redirects are followed by hand, and every hop repeats steps 1-4.

Proxies from the environment are ignored (`trust_env=False`): a proxy would resolve names itself.

Time is accounted per URL in two separate budgets: `total_timeout` bounds what is done for the URL
(name lookups and the requests sent, over all hops and retries), `queue_timeout` bounds the wait
for the host's turn and a global slot. A URL queued behind a busy host therefore never times out
without a request sent, and `attempts` counts only requests sent.

The client is aiohttp rather than httpx (used elsewhere in kgclip for API calls): downloading
thousands of images is CPU-bound on the parsing side, and aiohttp's C HTTP parser and connection
pool used a fifth of httpx's CPU per request on the fetch benchmark (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import re
import socket
import ssl
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import certifi
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from kgclip.fetch.hostgate import HostGate, LocalHostGate, host_slot
from kgclip.retryafter import parse_retry_after
from kgclip.useragent import user_agent

log = logging.getLogger(__name__)

Resolver = Callable[[str], "list[str] | Awaitable[list[str]]"]
AddrInfo = tuple[int, int, int, str, tuple]
SocketFactory = Callable[[AddrInfo], socket.socket]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = typing.TypeVar("T")

ALLOWED_SCHEMES = ("http", "https")
_HOST_CHARS = re.compile(r"[a-z0-9._:\-]+")  # IDNA hosts arrive as punycode; IPv6 without brackets
REDIRECT_CODES = (301, 302, 303, 307, 308)

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated (RFC 3879) but still routed inside sites
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: the IPv4 address is the low 32 bits
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
    total_timeout: float = 60.0  # per URL: lookups and requests sent, all hops and retries; no waiting
    queue_timeout: float = 600.0  # per URL: waiting for the host's turn and a global slot, in all
    max_bytes: int = 50_000_000  # the fetch stage's default (FetchConfig.max_bytes), for one answer
    per_host_concurrency: int = 2
    per_host_rate_per_s: float = 2.0
    global_concurrency: int = 32
    max_retries: int = 3
    backoff_s: float = 1.0
    max_retry_after_s: float = 60.0
    honour_x_robots: bool = True
    user_agent: str = field(default_factory=lambda: fetcher_user_agent("unconfigured contact"))


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


def fetcher_user_agent(contact: str) -> str:
    return user_agent(contact, f"aiohttp/{aiohttp.__version__}")


# ---------------------------------------------------------------------------------------------------
# address classification


def classify_address(ip: str | IPAddress) -> str | None:
    """The reason an address is not public, or None for an ordinary global address."""
    addr = _unwrap(ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip))
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link_local"
    if addr.is_multicast:
        return "multicast"
    if addr.version == 6 and addr in _SITE_LOCAL:
        return "site_local"
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


def _unwrap(addr: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries to its destination, else the address itself.

    IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d, translated by a gateway) and 6to4
    (2002:AABB:CCDD::, relayed to a.b.c.d) reach the embedded IPv4 host, so they are judged by it:
    Python calls 2002:a9fe:a9fe:: global, yet it leads to the metadata address 169.254.169.254.
    The local-use NAT64 prefix 64:ff9b:1::/48 has no fixed layout; it stays reserved (in ::/8).
    """
    if isinstance(addr, ipaddress.IPv4Address):
        return addr
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour or addr


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
# the pinned connection layer


class UnpinnedHostError(OSError):
    """The connection layer was asked for a host or address that the guard did not check.

    An OSError, because that is what aiohttp's connector passes through from resolvers and
    socket factories (wrapped in its own connector errors)."""


class _PinnedResolver(AbstractResolver):
    """The connector's only name lookup: the addresses the guard checked, or a refusal.

    All checked addresses are answered, in the order the lookup gave them, because the connector
    tries them in turn: `localhost` must still work when ::1 refuses and 127.0.0.1 answers."""

    def __init__(self) -> None:
        self.pins: dict[str, list[str]] = {}

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list[ResolveResult]:
        addresses = self.pins.get(host.lower())
        if not addresses:
            raise UnpinnedHostError(f"{host} was not checked")
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(hostname=host, host=ip, port=port, family=_family(ip), proto=0, flags=flags)
            for ip in addresses
        ]

    async def close(self) -> None:
        return None


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class _GuardedSockets:
    """The connector's socket factory: the last check before a connect, and its record."""

    def __init__(self, policy: FetchPolicy, inner: SocketFactory | None) -> None:
        self._policy = policy
        self._inner = inner
        self.connects: list[tuple[str, int]] = []

    def __call__(self, addr_info: AddrInfo) -> socket.socket:
        sockaddr = addr_info[4]
        ip, port = str(sockaddr[0]), int(sockaddr[1])
        category = _blocked_category(ip, self._policy)
        if category is not None:
            raise UnpinnedHostError(f"{ip} ({category})")
        self.connects.append((ip, port))
        return (self._inner or _open_socket)(addr_info)


def _open_socket(addr_info: AddrInfo) -> socket.socket:
    family, type_, proto, _canon, _sockaddr = addr_info
    return socket.socket(family=family, type=type_, proto=proto)


# ---------------------------------------------------------------------------------------------------
# results of nested helpers


class _Outcome(Exception):
    """Carries a final result out of nested helpers."""

    def __init__(self, status: str, reason: str, retryable: bool = False, **extra: typing.Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retryable, self.extra = status, reason, retryable, extra


@dataclass
class _Progress:
    """One URL's accounts: requests sent, the last URL tried, and what is left of each time budget."""

    final_url: str
    request_left: float  # for lookups and requests (FetchPolicy.total_timeout)
    queue_left: float  # for waiting for slots (FetchPolicy.queue_timeout)
    attempts: int = 0
    admit: asyncio.Semaphore | None = None  # the caller's window, taken once with the first turn
    admitted: bool = False


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
        socket_factory: SocketFactory | None = None,
        gate: HostGate | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._gate = gate or LocalHostGate(self.policy.per_host_concurrency, self.policy.per_host_rate_per_s)
        self._resolver = resolver
        self._pinned = _PinnedResolver()
        self._sockets = _GuardedSockets(self.policy, socket_factory)
        self._session: aiohttp.ClientSession | None = None
        self._global: asyncio.Semaphore | None = None

    async def __aenter__(self) -> SafeFetcher:
        p = self.policy
        connector = aiohttp.TCPConnector(
            limit=p.global_concurrency,
            limit_per_host=p.per_host_concurrency,
            resolver=self._pinned,
            use_dns_cache=False,
            socket_factory=self._sockets,
            ssl=ssl.create_default_context(cafile=certifi.where()),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=p.connect_timeout, sock_read=p.read_timeout
            ),
            headers={"User-Agent": p.user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),  # no state carried from one image host to another
            trust_env=False,
        )
        self._global = asyncio.Semaphore(p.global_concurrency)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def connects(self) -> list[tuple[str, int]]:
        """Every TCP connect actually attempted, as (IP, port), recorded at the connect hook."""
        return self._sockets.connects

    async def get(self, url: str, admit: asyncio.Semaphore | None = None) -> FetchResult:
        """Download one URL. `admit` is the caller's bound on bodies in memory: a unit of it is
        taken only once the host's turn has come (so URLs queued for a busy host hold none of it
        while other hosts could go), and on return it is still held exactly when the result is ok
        with a body, for the caller to release once the body is dealt with."""
        if self._session is None:
            raise RuntimeError("use SafeFetcher as an async context manager")
        started = time.monotonic()
        progress = _Progress(url, self.policy.total_timeout, self.policy.queue_timeout, admit=admit)
        try:
            result = await self._fetch(url, progress)
        except BaseException:
            if progress.admitted and admit is not None:
                admit.release()
            raise
        if progress.admitted and admit is not None and not (result.ok and result.body is not None):
            admit.release()
        result.attempts = progress.attempts
        result.seconds = time.monotonic() - started
        return result

    async def _fetch(self, url: str, progress: _Progress) -> FetchResult:
        try:
            return await self._follow(url, progress)
        except _Outcome as o:
            return FetchResult(url, o.status, o.reason, o.retryable, final_url=progress.final_url, **o.extra)
        except Exception as exc:  # a bug or an exotic server must not break a whole stage
            log.exception("unexpected error fetching %s", url)
            return FetchResult(
                url, "failed", f"error:{type(exc).__name__}", True, final_url=progress.final_url
            )

    # -- steps ------------------------------------------------------------------------------------

    async def _follow(self, url: str, progress: _Progress) -> FetchResult:
        current = url
        for _hop in range(self.policy.max_redirects + 1):
            progress.final_url = current
            parsed, host = self._check_url(current)
            await self._timed(progress, self._pin(host))
            if progress.request_left <= 0:  # a redirect used it up: send nothing more
                raise _Outcome("failed", "timeout", True)
            location = await self._hop(parsed, host, progress)
            if isinstance(location, FetchResult):
                location.url = url
                return location
            try:
                current = str(parsed.join(yarl.URL(location)))
            except (ValueError, TypeError) as exc:
                raise _Outcome("refused", "bad_redirect") from exc
        raise _Outcome("refused", "too_many_redirects")

    def _check_url(self, url: str) -> tuple[yarl.URL, str]:
        """The parsed URL is the one handed to aiohttp, so the host checked is the host used."""
        try:
            parsed = yarl.URL(url)
        except (ValueError, TypeError) as exc:
            raise _Outcome("refused", "bad_url") from exc
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise _Outcome("refused", "unsupported_scheme")
        host = (parsed.raw_host or "").lower()
        if not host or not _HOST_CHARS.fullmatch(host) or parsed.explicit_port == 0:
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
        self._pinned.pins[host] = [ip.split("%", 1)[0] for ip in addresses]

    async def _hop(self, url: yarl.URL, host: str, progress: _Progress) -> str | FetchResult:
        """One request (with retries) to one URL: a redirect target, or a final result."""
        p = self.policy
        attempt = 0
        while True:
            attempt += 1
            async with self._turn(host, progress):
                progress.attempts += 1
                try:
                    outcome = await self._timed(progress, self._request(url, host))
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
            if attempt > p.max_retries or progress.request_left <= 0:
                raise outcome
            delay = p.backoff_s * (2 ** (attempt - 1))
            await asyncio.sleep(delay)  # a Retry-After pause is waited for in the gate

    @contextlib.asynccontextmanager
    async def _turn(self, host: str, progress: _Progress) -> AsyncIterator[None]:
        """Hold a slot of the host, then a global slot, charging the wait to the queue budget.

        The host comes first: a request queued behind a busy host must not sit on a global slot
        that a request to an idle host could use. Waiting longer than the budget ends the URL as
        a retryable `queue_timeout`, with nothing sent for that try.
        """
        assert self._global is not None
        async with contextlib.AsyncExitStack() as held:
            started = time.monotonic()
            try:
                await held.enter_async_context(host_slot(self._gate, host, max(progress.queue_left, 0.0)))
                async with asyncio.timeout(progress.queue_left - (time.monotonic() - started)):
                    await held.enter_async_context(self._global)
                    if progress.admit is not None and not progress.admitted:
                        await progress.admit.acquire()
                        progress.admitted = True
            except TimeoutError as exc:
                raise _Outcome("failed", "queue_timeout", True) from exc
            finally:
                progress.queue_left -= time.monotonic() - started
            yield

    async def _timed(self, progress: _Progress, work: Awaitable[T]) -> T:
        """Await work done for this URL within what is left of its request budget.

        Only this time is charged, so however long a URL queued, its requests get the whole
        budget; running out of it ends the URL as `timeout`, without further retries.
        """
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(progress.request_left, 0.0)):
                return await work
        except TimeoutError as exc:
            progress.request_left = 0.0  # used up, to the clock's last tick: no retry follows
            raise _Outcome("failed", "timeout", True) from exc
        finally:
            progress.request_left -= time.monotonic() - started

    async def _request(self, url: yarl.URL, host: str) -> str | FetchResult:
        assert self._session is not None
        p = self.policy
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                code = resp.status
                if code in REDIRECT_CODES:
                    location = resp.headers.get("Location")
                    if not location:
                        raise _Outcome("failed", f"http_{code}", http_status=code)
                    return location
                if code == 429 or code >= 500:
                    ra = parse_retry_after(resp.headers.get("Retry-After")) if code in (429, 503) else None
                    raise _Outcome("failed", f"http_{code}", True, http_status=code, retry_after=ra)
                if not 200 <= code < 300:
                    raise _Outcome("failed", f"http_{code}", False, http_status=code)
                if p.honour_x_robots and x_robots_forbids(resp.headers.getall("X-Robots-Tag", [])):
                    raise _Outcome("refused", "x_robots_tag", http_status=code)
                length = resp.headers.get("Content-Length")
                if length and length.strip().isdigit() and int(length) > p.max_bytes:
                    raise _Outcome("refused", "too_many_bytes", http_status=code)
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_chunked(1 << 16):
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
                    content_type=resp.headers.get("Content-Type"),
                    http_status=code,
                )
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, UnpinnedHostError):
                raise _Outcome("refused", "blocked_address:unpinned") from exc
            raise _Outcome("failed", "connection_error", True) from exc
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise _Outcome("failed", "timeout", True) from exc
        except aiohttp.InvalidURL as exc:
            raise _Outcome("refused", "bad_url") from exc
        except aiohttp.ClientPayloadError as exc:
            if "not completed" in str(exc):  # the connection ended early: worth another try
                raise _Outcome("failed", "connection_error", True) from exc
            raise _Outcome("failed", "decoding_error") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _Outcome("failed", "connection_error", True) from exc
