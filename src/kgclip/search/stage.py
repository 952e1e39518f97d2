"""The search stage: each query to the configured backend, top k results into hits.parquet."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from kgclip.config import Config
from kgclip.pipeline import StageContext, StageResult
from kgclip.progress import console, meter
from kgclip.search.base import SearchBackend
from kgclip.search.corpus import CorpusBackend, build_index
from kgclip.search.ledger import SearchLedger
from kgclip.tables import Hit, Query, Rejected, read_records, write_records
from kgclip.workdir import Workdir, digest_of

LEDGER = "cache/search.sqlite"


def corpus_index_path(config: Config, workdir: Workdir) -> Path:
    corpus = config.search.corpus
    assert corpus is not None  # guaranteed by SearchConfig validation
    if corpus.index is None:
        return workdir.path("corpus.sqlite")
    return corpus.index if corpus.index.is_absolute() else workdir.path(str(corpus.index))


def open_backend(config: Config, workdir: Workdir) -> SearchBackend:
    corpus = config.search.corpus
    assert corpus is not None
    index = corpus_index_path(config, workdir)
    if not index.exists() and corpus.source is not None:
        console.print(f"search: building corpus index {index} from {corpus.source}")
        report = build_index(corpus.source, index, corpus.importer)
        console.print(
            f"search: indexed {report.items:,} items, skipped {sum(report.skipped.values()):,} "
            f"{dict(report.skipped)}"
        )
    return CorpusBackend(index)


def backend_fingerprint(config: Config, workdir: Workdir) -> str:
    """The corpus id once an index exists, else what it will be built from."""
    index = corpus_index_path(config, workdir)
    if index.exists():
        backend = CorpusBackend(index)
        try:
            return backend.fingerprint()
        finally:
            backend.close()
    corpus = config.search.corpus
    return digest_of("unbuilt", str(corpus.source if corpus else None))


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.search
    queries = list(read_records(ctx.path("queries.parquet"), Query))
    backend = open_backend(ctx.config, ctx.workdir)
    ledger = SearchLedger(ctx.path(LEDGER))
    try:
        keys = {q.query_id: backend.request_key(q, cfg.top_k) for q in queries}
        pending = [q for q in queries if ledger.get(backend.name, keys[q.query_id]) is None]
        if pending:
            asyncio.run(_ask_all(backend, ledger, pending, keys, cfg.top_k))
        hits, rejects = _collect(backend.name, ledger, queries, keys)
    finally:
        backend.close()
        ledger.close()
    write_records(ctx.path("hits.parquet"), hits, Hit)
    write_records(ctx.path("rejects/search.parquet"), rejects, Rejected)
    reasons = Counter(r.reason for r in rejects)
    answered = len(queries) - sum(reasons.values())
    stats = {
        "queries": len(queries),
        "requests_sent": len(pending),
        "from_ledger": len(queries) - len(pending),
        "queries_with_hits": answered,
        "hits": len(hits),
        "unique_urls": len({h.url for h in hits}),
        "rejects": dict(reasons),
    }
    summary = f"{len(hits):,} hits for {answered:,}/{len(queries):,} queries ({len(pending):,} sent)"
    return StageResult(len(hits), stats, summary)


async def _ask_all(
    backend: SearchBackend, ledger: SearchLedger, pending: list[Query], keys: dict[str, str], k: int
) -> None:
    gate = asyncio.Semaphore(backend.max_concurrency)
    with meter(f"search ({backend.name})", len(pending)) as m:

        async def ask(query: Query) -> None:
            async with gate:
                outcome = await backend.search(query, k)
            ledger.put(backend.name, keys[query.query_id], outcome)
            m.advance()

        await asyncio.gather(*(ask(q) for q in pending))


def _collect(
    backend: str, ledger: SearchLedger, queries: list[Query], keys: dict[str, str]
) -> tuple[list[Hit], list[Rejected]]:
    hits: list[Hit] = []
    rejects: list[Rejected] = []
    for q in queries:
        outcome = ledger.get(backend, keys[q.query_id])
        if outcome is None:
            rejects.append(Rejected("search", q.query_id, "retry_later", q.text))
        elif outcome.failure is not None:
            rejects.append(Rejected("search", q.query_id, outcome.failure, q.text))
        elif not outcome.results:
            rejects.append(Rejected("search", q.query_id, "no_results", q.text))
        else:
            hits.extend(
                Hit(
                    q.query_id,
                    backend,
                    rank,
                    f.url,
                    f.page_url,
                    f.alt_text,
                    f.width,
                    f.height,
                    f.license,
                    f.attribution,
                )
                for rank, f in enumerate(outcome.results, start=1)
            )
    return hits, rejects
