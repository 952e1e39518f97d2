"""Wikidata as an entities source: scan the dump, select below the roots, build entity rows."""

from __future__ import annotations

from collections import Counter

from kgclip.config import WikidataSource
from kgclip.kg.source import SourceResult
from kgclip.kg.wikidata.dump import DumpError, scan
from kgclip.kg.wikidata.item import qid_number
from kgclip.kg.wikidata.rules import RootRule
from kgclip.kg.wikidata.select import select, to_entities
from kgclip.workdir import digest_of


def root_rules(src: WikidataSource) -> list[RootRule]:
    return [
        RootRule(
            qid=qid_number(r.qid),
            name=r.name,
            exclude_classes=tuple(qid_number(q) for q in r.exclude_classes),
            exclude_with=tuple(r.exclude_with),
            product_classes=tuple(qid_number(q) for q in r.product_classes),
        )
        for r in src.roots
    ]


def wikidata_entities(src: WikidataSource) -> SourceResult:
    result = scan(src.dump, src.require_image, src.workers)
    choices, rejects = select(result.candidates, result.graph, root_rules(src), src.cap_per_root)
    entities = to_entities(choices)
    per_root = Counter(c.root.name for c in choices)
    stats = {
        "source": src.source,
        "lines": result.lines,
        "parsed": result.parsed,
        "candidates": len(result.candidates),
        "selected": len(entities),
        "leaves": sum(e.is_leaf for e in entities),
        "roots": dict(per_root),
        "rejected": dict(Counter(r.reason for r in rejects)),
    }
    summary = f"{len(entities):,} entities ({', '.join(f'{k} {v:,}' for k, v in per_root.items())})"
    return SourceResult(entities, rejects, stats, summary)


def wikidata_fingerprint(src: WikidataSource) -> str:
    if not src.dump.is_file():
        raise DumpError(f"{src.dump}: no such dump file")
    st = src.dump.stat()
    return digest_of(str(src.dump.resolve()), str(st.st_size), str(st.st_mtime_ns))
