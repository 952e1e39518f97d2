"""The entities stage: every configured knowledge-graph source (WordNet, Wikidata) into one table.

With both sources, synsets and items that denote the same thing are merged into one row
(kg/merge.py); every Wikidata item's verdict, linked or why not, goes to entity_links.parquet.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kgclip.config import Config
from kgclip.kg.merge import MergeResult, load_bridge, merge
from kgclip.kg.source import SourceResult
from kgclip.kg.wikidata.source import wikidata_entities, wikidata_fingerprint
from kgclip.kg.wordnet_select import wordnet_entities, wordnet_fingerprint
from kgclip.localfiles import read_regular
from kgclip.pipeline import StageContext, StageResult
from kgclip.tables import Entity, EntityLink, Rejected, write_records
from kgclip.workdir import Workdir, digest_of


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.entities
    parts: dict[str, SourceResult] = {}
    if cfg.wordnet is not None:
        parts["wordnet"] = wordnet_entities(cfg.wordnet)
    if cfg.wikidata is not None:
        parts["wikidata"] = wikidata_entities(cfg.wikidata, ctx.path("cache"))
    entities = sorted((e for p in parts.values() for e in p.entities), key=lambda e: e.id)
    rejects = sorted((r for p in parts.values() for r in p.rejects), key=lambda r: r.item)
    stats: dict[str, object] = {name: p.stats for name, p in parts.items()}
    summaries = [f"{name}: {p.summary}" for name, p in parts.items()]
    links: list[EntityLink] = []
    if cfg.merge.link and "wordnet" in parts and "wikidata" in parts:
        bridge = load_bridge(cfg.merge.bridge) if cfg.merge.bridge else None
        merged = merge(parts["wordnet"].entities, parts["wikidata"].entities, bridge)
        entities, links = merged.entities, _link_rows(merged)
        stats["merge"] = merged.stats
        summaries.append(f"merge: {merged.summary}")
    write_records(ctx.path("entities.parquet"), entities, Entity)
    write_records(ctx.path("rejects/entities.parquet"), rejects, Rejected)
    write_records(ctx.path("entity_links.parquet"), links, EntityLink)
    stats["selected"] = len(entities)
    return StageResult(len(entities), stats, "; ".join(summaries))


def _link_rows(merged: MergeResult) -> list[EntityLink]:
    rows = [
        EntityLink(k.wikidata_id, "linked", k.wordnet_id, k.method, k.score, [], "") for k in merged.links
    ]
    rows += [
        EntityLink(u.wikidata_id, u.reason, None, None, None, list(u.candidates), u.detail)
        for u in merged.unlinked
    ]
    return sorted(rows, key=lambda r: r.wikidata_id)


def source_fingerprint(config: Config, workdir: Workdir) -> str:
    """The sources' own files (WordNet database, Wikidata dump, the WordNet bridge): a changed one
    re-runs the stage. The bridge is small and decides links, so its content counts, not its mtime."""
    cfg = config.entities
    parts = []
    if cfg.wordnet is not None:
        parts.append(wordnet_fingerprint(cfg.wordnet))
    if cfg.wikidata is not None:
        parts.append(wikidata_fingerprint(cfg.wikidata))
    if cfg.merge.link and cfg.merge.bridge and cfg.wordnet is not None and cfg.wikidata is not None:
        parts.append(f"bridge:{_content_digest(Path(cfg.merge.bridge))}")
    return digest_of(*parts)


def _content_digest(path: Path) -> str:
    try:
        return hashlib.sha256(read_regular(path)).hexdigest()[:16]
    except OSError as exc:  # load_bridge reports it when the stage runs
        return f"unreadable:{exc.errno}"
