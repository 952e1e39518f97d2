"""Wikidata as an entities source: scan the dump, select below the roots, build entity rows."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from kgclip.config import WikidataSource
from kgclip.kg.source import SourceResult
from kgclip.kg.wikidata.dump import DumpError, scan
from kgclip.kg.wikidata.dump import labels as dump_labels
from kgclip.kg.wikidata.item import qid_number
from kgclip.kg.wikidata.rules import RootRule
from kgclip.kg.wikidata.select import evaluate, finalize, hint_values, to_entities
from kgclip.kg.wikidata.sparql import Endpoint, SparqlCache, SparqlClient
from kgclip.kg.wikidata.sparql_source import sparql_evaluate, sparql_labels
from kgclip.tables import Entity, Rejected, read_records, write_records
from kgclip.workdir import atomic_write_bytes, digest_of


def root_rules(src: WikidataSource) -> list[RootRule]:
    return [
        RootRule(
            qid=qid_number(r.qid),
            name=r.name,
            exclude_classes=tuple(qid_number(q) for q in r.exclude_classes),
            exclude_with=tuple(r.exclude_with),
            product_classes=tuple(qid_number(q) for q in r.product_classes),
            via=tuple(r.via),
            include_root=r.include_root,
            min_sitelinks=r.min_sitelinks,
        )
        for r in src.roots
    ]


def wikidata_entities(src: WikidataSource, cache_dir: Path) -> SourceResult:
    """Entities from the dump or an endpoint. A dump scan takes hours on the real file, so its
    result is kept under `cache_dir` keyed by the dump's identity and these settings: re-running
    the entities stage for a WordNet change does not read the dump again."""
    if src.source != "dump":
        return _select(src, cache_dir)
    key = digest_of(wikidata_fingerprint(src), src.model_dump_json())
    paths = [
        cache_dir / "wikidata" / f"{key}-{part}"
        for part in ("entities.parquet", "rejects.parquet", "stats.json")
    ]
    if all(p.exists() for p in paths):
        stats = orjson.loads(paths[2].read_bytes())
        entities = list(read_records(paths[0], Entity))
        rejects = list(read_records(paths[1], Rejected))
        return SourceResult(entities, rejects, {**stats, "from_cache": True}, _summary(stats))
    result = _select(src, cache_dir)
    write_records(paths[0], result.entities, Entity)
    write_records(paths[1], result.rejects, Rejected)
    atomic_write_bytes(paths[2], orjson.dumps(result.stats))
    if (cache_dir / "wikidata-scan").exists():
        shutil.rmtree(cache_dir / "wikidata-scan")  # the resumable scan's state is spent
    return result


def _select(src: WikidataSource, cache_dir: Path) -> SourceResult:
    rules = root_rules(src)
    cap = src.cap_per_root or None
    stats: dict[str, object] = {"source": src.source}
    if src.source == "dump":
        assert src.dump is not None  # guaranteed by WikidataSource validation
        state = cache_dir / "wikidata-scan" / digest_of(wikidata_fingerprint(src), str(src.require_image))
        result = scan(src.dump, src.require_image, src.workers, state_dir=state)
        try:
            evaluation = evaluate(result.candidates, result.graph, rules)
        finally:
            result.candidates.close()
        choices, rejects = finalize(evaluation, rules, cap)
        value_labels = dump_labels(src.dump, hint_values(choices), src.workers)
        stats |= {"lines": result.lines, "parsed": result.parsed, "candidates": len(result.candidates)}
    else:
        with _client(src, cache_dir) as client:
            evaluation = sparql_evaluate(client, rules, src.require_image, src.batch_size)
            choices, rejects = finalize(evaluation, rules, cap)
            value_labels = sparql_labels(client, hint_values(choices), src.batch_size)
        stats |= {
            "endpoint": client.endpoint.url,
            "dialect": client.endpoint.dialect,
            "queries_sent": client.sent,
        }
    entities = to_entities(choices, value_labels)
    per_root = Counter(c.root.name for c in choices)
    stats |= {
        "selected": len(entities),
        "leaves": sum(e.is_leaf for e in entities),
        "roots": dict(per_root),
        "rejected": dict(Counter(r.reason for r in rejects)),
        "hint_values_labelled": len(value_labels),
    }
    return SourceResult(entities, rejects, stats, _summary(stats))


@contextmanager
def _client(src: WikidataSource, cache_dir: Path) -> Iterator[SparqlClient]:
    cache = SparqlCache(cache_dir / "sparql.sqlite")
    client = SparqlClient(
        Endpoint.resolve(src.endpoint, src.dialect), src.contact or "", cache, timeout=src.timeout_s
    )
    try:
        yield client
    finally:
        client.close()
        cache.close()


def _summary(stats: dict) -> str:
    roots = ", ".join(f"{name} {n:,}" for name, n in stats["roots"].items())
    return f"{stats['selected']:,} entities ({roots}), {sum(stats['rejected'].values()):,} members dropped"


def wikidata_fingerprint(src: WikidataSource) -> str:
    """The dump file's identity; for an endpoint, its URL (answers are cached per query)."""
    if src.source == "sparql" or src.dump is None:
        return digest_of("sparql", src.endpoint, str(src.dialect))
    if not src.dump.is_file():
        raise DumpError(f"{src.dump}: no such dump file")
    st = src.dump.stat()
    return digest_of(str(src.dump.resolve()), str(st.st_size), str(st.st_mtime_ns))
