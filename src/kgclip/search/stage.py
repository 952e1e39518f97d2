"""The search stage: each query to the configured backend, top k results into hits.parquet."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from kgclip.config import Config
from kgclip.pipeline import StageContext, StageResult
from kgclip.progress import console, meter
from kgclip.search.base import Found, SearchBackend
from kgclip.search.brave import BraveBackend
from kgclip.search.commons import CommonsBackend
from kgclip.search.corpus import (
    CorpusBackend,
    build_index,
    corpus_index_path,
    index_is_current,
    outdated,
)
from kgclip.search.gbif import GbifBackend
from kgclip.search.google_cse import GoogleCseBackend
from kgclip.search.inaturalist import INaturalistBackend
from kgclip.search.ledger import SearchLedger
from kgclip.search.openverse import OpenverseBackend
from kgclip.search.serpapi import SerpApiBackend
from kgclip.search.web import WebBackend
from kgclip.tables import ROWS_PER_GROUP, GroupWriter, Hit, Query, Rejected, read_records, write_records
from kgclip.workdir import Workdir, digest_of

LEDGER = "cache/search.sqlite"
HITS_PER_GROUP = ROWS_PER_GROUP  # hits held before they are written as a row group
WEB: dict[str, type[WebBackend]] = {
    b.name: b
    for b in (
        OpenverseBackend,
        BraveBackend,
        GoogleCseBackend,
        SerpApiBackend,
        CommonsBackend,
        INaturalistBackend,
        GbifBackend,
    )
}


def open_corpus(config: Config, workdir: Workdir) -> CorpusBackend:
    """The configured corpus, built from its source when missing or built by an older kgclip."""
    corpus = config.search.corpus
    assert corpus is not None
    index = corpus_index_path(config, workdir)
    why = None
    if corpus.source is not None:
        if not index.exists():
            why = "building the corpus index"
        elif not index_is_current(index):
            why = "rebuilding the corpus index (it is an older format)"
        elif (changed := outdated(index, corpus.source, corpus.importer)) is not None:
            why = f"rebuilding the corpus index ({changed})"
    if why is not None:
        assert corpus.source is not None
        console.print(f"search: {why} {index} from {corpus.source}")
        report = build_index(corpus.source, index, corpus.importer)
        console.print(
            f"search: indexed {report.items:,} items, skipped {sum(report.skipped.values()):,} "
            f"{dict(report.skipped)}"
        )
    return CorpusBackend(index, corpus.match, corpus.match_categories, wordnet_path(config))


def wordnet_path(config: Config) -> Path | None:
    """The WordNet database the entities came from (None: the default one), for `kinds` matching."""
    return config.entities.wordnet.path if config.entities.wordnet is not None else None


def open_backends(config: Config, workdir: Workdir, ledger: SearchLedger) -> dict[str, SearchBackend]:
    """Every backend the config uses; a web backend with a missing key fails here, before any work,
    and the backends opened before it are closed."""
    out: dict[str, SearchBackend] = {}
    try:
        for name in config.search.active:
            if name == "corpus":
                out[name] = open_corpus(config, workdir)
            else:
                section = getattr(config.search, name)
                assert section is not None  # guaranteed by SearchConfig validation
                out[name] = WEB[name](section, ledger.used_today(name))
    except BaseException:
        for backend in out.values():
            backend.close()
        raise
    return out


def backend_fingerprint(config: Config, workdir: Workdir) -> str:
    """The corpus id once an index exists (else what it will be built from), and the web backends.

    An index built from a `source` that has changed since (or from another source or importer)
    counts as unbuilt: the search stage is stale, and its next run rebuilds the index."""
    parts = []
    for name in config.search.active:
        if name != "corpus":
            parts.append(f"{name}:{getattr(config.search, name).base_url}")
            continue
        index = corpus_index_path(config, workdir)
        corpus = config.search.corpus
        assert corpus is not None
        if corpus.source is not None and index_is_current(index):
            changed = outdated(index, corpus.source, corpus.importer)
            if changed is not None:  # the next run rebuilds it
                parts.append(digest_of("outdated", changed))
                continue
        if index_is_current(index):
            backend = CorpusBackend(index, corpus.match, corpus.match_categories, wordnet_path(config))
            try:
                parts.append(backend.fingerprint())
            finally:
                backend.close()
        else:
            parts.append(digest_of("unbuilt", str(corpus.source)))
    return digest_of(*parts)


def routes(query: Query, config: Config) -> list[str]:
    return config.search.route.get(query.kind, config.search.active)  # type: ignore[call-overload]


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.search
    queries = list(read_records(ctx.path("queries.parquet"), Query))
    ledger = SearchLedger(ctx.path(LEDGER))
    try:
        backends = open_backends(ctx.config, ctx.workdir, ledger)
    except BaseException:
        ledger.close()
        raise
    try:
        keys = {
            (q.query_id, name): backends[name].request_key(q, cfg.top_k)
            for q in queries
            for name in routes(q, ctx.config)
        }
        by_id = {q.query_id: q for q in queries}
        pending = [(by_id[qid], name) for (qid, name), key in keys.items() if ledger.get(name, key) is None]
        here = pending
        if cfg.executor == "ray" and any(name == "corpus" for _, name in pending):
            from kgclip.search.ray_search import search_corpus_on_ray

            here = [(q, name) for q, name in pending if name != "corpus"]

            def record(answers: list) -> None:
                ledger.put_many("corpus", [(keys[(q.query_id, "corpus")], o) for q, o in answers])

            index = corpus_index_path(ctx.config, ctx.workdir)
            corpus_queries = [q for q, name in pending if name == "corpus"]
            corpus = ctx.config.search.corpus
            assert corpus is not None
            matching = (corpus.match, corpus.match_categories, wordnet_path(ctx.config))
            search_corpus_on_ray(index, matching, corpus_queries, cfg.top_k, ctx.config.ray, record)
        if here:
            for line in plan(backends, here, cfg.top_k):
                console.print(line)
            asyncio.run(_ask_all(backends, ledger, here, keys, cfg.top_k))
        # hits go to the table a row group at a time, in query order, as they are read back from
        # the ledger: only rejects (at most one per query and backend) and counts are kept
        rejects: list[Rejected] = []
        per_backend: Counter[str] = Counter()
        answered: set[str] = set()
        seen = UrlCount()
        out = GroupWriter(ctx.path("hits.parquet"), Hit.SCHEMA, HITS_PER_GROUP)
        with out:
            for hit in _collect(ledger, queries, keys, rejects):
                out.add_records((hit,))
                per_backend[hit.backend] += 1
                answered.add(hit.query_id)
                seen.add(hit.url)
        sent = {name: b.requests for name, b in backends.items() if isinstance(b, WebBackend)}
    finally:
        for backend in backends.values():
            backend.close()
        ledger.close()
    write_records(ctx.path("rejects/search.parquet"), rejects, Rejected)
    reasons = Counter(r.reason for r in rejects)
    hits = out.rows
    stats = {
        "queries": len(queries),
        "queries_asked": len(pending),
        "requests_sent": sum(sent.values()),
        "http_requests": sent,
        "from_ledger": len(keys) - len(pending),
        "queries_with_hits": len(answered),
        "hits": hits,
        "per_backend": dict(per_backend),
        "unique_urls": seen.count(),
        "rejects": dict(reasons),
        "retry_later": reasons.get("retry_later", 0),
    }
    summary = f"{hits:,} hits for {len(answered):,}/{len(queries):,} queries ({len(pending):,} asked"
    summary += f", {sum(sent.values()):,} HTTP requests sent)" if sent else ")"
    if stats["retry_later"]:
        summary += f"; {stats['retry_later']:,} requests left for a later run (quota or failures)"
    return StageResult(hits, stats, summary)


def plan(backends: dict[str, SearchBackend], pending: list[tuple[Query, str]], k: int) -> list[str]:
    """Before any request: what the queries will cost each web backend against its daily quota and
    rate, so a harvest that needs weeks of quota is seen as one before it starts."""
    lines = []
    for name, count in Counter(name for _, name in pending).items():
        backend = backends[name]
        if not isinstance(backend, WebBackend):
            continue
        each = backend.most_requests(k)
        most = count * each
        line = f"search: {name}: {count:,} queries need up to {most:,} requests ({each} each)"
        quota, used = backend.cfg.daily_quota, backend.limiter.used_today
        if quota:
            days = math.ceil((used + most) / quota)
            line += f"; daily quota {quota:,} ({used:,} used today): {days:,} day{'s' * (days != 1)}"
        else:
            line += "; no daily quota"
        line += f"; at {backend.cfg.rate_per_s:g}/s at least {_duration(most / backend.cfg.rate_per_s)}"
        if backend.cfg.max_requests is not None:
            line += f"; this run stops after {backend.cfg.max_requests:,} requests (--max-requests)"
        lines.append(line)
    return lines


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


async def _ask_all(
    backends: dict[str, SearchBackend],
    ledger: SearchLedger,
    pending: list[tuple[Query, str]],
    keys: dict[tuple[str, str], str],
    k: int,
) -> None:
    gates = {name: asyncio.Semaphore(b.max_concurrency) for name, b in backends.items()}
    counted = {name: getattr(b, "requests", 0) for name, b in backends.items()}

    def count_usage(name: str) -> None:
        """Requests sent since the last count, into today's usage: exact with concurrent queries,
        and kept for one that stops the stage too."""
        now = getattr(backends[name], "requests", 0)
        ledger.add_usage(name, now - counted[name])
        counted[name] = now

    with meter(f"search ({', '.join(backends)})", len(pending)) as m:

        async def ask(query: Query, name: str) -> None:
            async with gates[name]:
                try:
                    outcome = await backends[name].search(query, k)
                finally:
                    count_usage(name)
            ledger.put(name, keys[(query.query_id, name)], outcome)
            m.advance()

        try:
            await asyncio.gather(*(ask(q, name) for q, name in pending))
        finally:
            for backend in backends.values():
                closer = getattr(backend, "aclose", None)
                if closer is not None:
                    await closer()


def _collect(
    ledger: SearchLedger, queries: list[Query], keys: dict[tuple[str, str], str], rejects: list[Rejected]
) -> Iterator[Hit]:
    """Every answer's hits, in query and backend order, read from the ledger one answer at a time;
    a query and backend without hits goes to `rejects`."""
    by_id = {q.query_id: q for q in queries}
    for (qid, name), key in keys.items():
        q = by_id[qid]
        outcome = ledger.get(name, key)
        if outcome is None:
            rejects.append(Rejected("search", q.query_id, "retry_later", f"{name}: {q.text}"))
        elif outcome.failure is not None:
            rejects.append(Rejected("search", q.query_id, outcome.failure, f"{name}: {q.text}"))
        elif not outcome.results:
            rejects.append(Rejected("search", q.query_id, "no_results", f"{name}: {q.text}"))
        else:
            kept = _web_urls_only(name, q, outcome.results, rejects)
            yield from (
                Hit(
                    q.query_id,
                    name,
                    rank,
                    f.url,
                    f.page_url,
                    f.alt_text,
                    f.width,
                    f.height,
                    f.license,
                    f.attribution,
                    f.evidence,
                )
                for rank, f in enumerate(kept, start=1)
            )


class UrlCount:
    """How many distinct URLs were added, holding 8 bytes per URL (a 64-bit digest; two URLs
    would have to share one for the count to be off, about one chance in 10^7 at 10^6 URLs)
    instead of the URL itself."""

    def __init__(self, chunk: int = 65536) -> None:
        self._chunks: list[np.ndarray] = []
        self._open: list[int] = []
        self._chunk = chunk

    def add(self, url: str) -> None:
        digest = hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        self._open.append(int.from_bytes(digest, "little"))
        if len(self._open) >= self._chunk:
            self._seal()

    def _seal(self) -> None:
        if self._open:
            self._chunks.append(np.unique(np.array(self._open, dtype=np.uint64)))
            self._open = []

    def count(self) -> int:
        self._seal()
        if not self._chunks:
            return 0
        return int(np.unique(np.concatenate(self._chunks)).size)


def _web_urls_only(name: str, query: Query, results: list[Found], rejects: list[Rejected]) -> list[Found]:
    """A web backend's results with http(s) image URLs only; the others recorded as rejects.

    What a web service returns is other people's text (a GBIF media identifier is whatever a data
    publisher typed): a `file:` URL or a bare path must never reach fetch, which reads local files
    for the local corpus only. Applied when hits are collected, so answers stored in the ledger by
    an earlier version are filtered too.
    """
    if name == "corpus":
        return results
    kept = []
    for found in results:
        if urlsplit(found.url).scheme.lower() in ("http", "https"):
            kept.append(found)
        else:
            rejects.append(Rejected("search", query.query_id, "non_http_url", f"{name}: {found.url[:300]}"))
    return kept
