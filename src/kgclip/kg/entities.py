"""The entities stage: every configured knowledge-graph source (WordNet, Wikidata) into one table.

Sources stay separate rows for now (as in the method, where WordNet and Wikidata only meet at
image level); each row's `sources` says where it came from.
"""

from __future__ import annotations

from kgclip.config import Config
from kgclip.kg.source import SourceResult
from kgclip.kg.wikidata.source import wikidata_entities, wikidata_fingerprint
from kgclip.kg.wordnet_select import wordnet_entities, wordnet_fingerprint
from kgclip.pipeline import StageContext, StageResult
from kgclip.tables import Entity, Rejected, write_records
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
    write_records(ctx.path("entities.parquet"), entities, Entity)
    write_records(ctx.path("rejects/entities.parquet"), rejects, Rejected)
    stats = {"selected": len(entities), **{name: p.stats for name, p in parts.items()}}
    summary = "; ".join(f"{name}: {p.summary}" for name, p in parts.items())
    return StageResult(len(entities), stats, summary)


def source_fingerprint(config: Config, workdir: Workdir) -> str:
    """The sources' own files (WordNet database, Wikidata dump): a changed one re-runs the stage."""
    cfg = config.entities
    parts = []
    if cfg.wordnet is not None:
        parts.append(wordnet_fingerprint(cfg.wordnet))
    if cfg.wikidata is not None:
        parts.append(wikidata_fingerprint(cfg.wikidata))
    return digest_of(*parts)
