"""The queries stage: image-search query strings from entities (and, later, attributes).

A query string must point at one entity. When several entities share a name ("crane" the
bird, "crane" the plant genus), the method gives it to the alphabetically first synset name,
which puts the `.n.01` sense first; the other claimants keep their remaining names.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable

import orjson

from kgclip.config import QueriesConfig
from kgclip.pipeline import StageContext, StageResult
from kgclip.tables import Entity, NaturalType, Query, QueryParams, Rejected, read_records, write_records


def query_id(kind: str, text: str, params: QueryParams) -> str:
    """Stable across runs and machines: the same text, kind and parameters give the same id."""
    payload = orjson.dumps(
        [kind, text, sorted(params.or_terms), sorted(params.exclude_terms), params.photo_only]
    )
    return hashlib.blake2b(payload, digest_size=10).hexdigest()


def _strings(entity: Entity, cfg: QueriesConfig) -> list[str]:
    names = [entity.name, *(entity.aliases if cfg.use_aliases else [])]
    seen: set[str] = set()
    out = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return out[: cfg.max_per_entity] if cfg.max_per_entity else out


def _homonym_key(entity: Entity) -> str:
    return entity.wordnet_name or entity.id


def entity_queries(
    entities: list[Entity], types: dict[str, NaturalType], cfg: QueriesConfig
) -> tuple[list[Query], list[Rejected]]:
    chosen = [e for e in entities if cfg.entities == "all" or e.is_leaf]
    claims: dict[str, list[tuple[str, Entity, str]]] = defaultdict(list)
    for entity in chosen:
        for text in _strings(entity, cfg):
            claims[text.lower()].append((_homonym_key(entity), entity, text))
    queries: list[Query] = []
    rejects: list[Rejected] = []
    for claimants in claims.values():
        claimants.sort(key=lambda c: c[0])
        _, winner, text = claimants[0]
        for key, loser, _ in claimants[1:]:
            rejects.append(
                Rejected("queries", loser.id, "homonym", f"{text!r} goes to {claimants[0][0]}, not {key}")
            )
        params = _entity_params(text, types.get(winner.id), cfg)
        queries.append(Query(query_id("entity", text, params), "entity", text, winner.id, None, params))
    return queries, rejects


def _entity_params(text: str, ntype: NaturalType | None, cfg: QueriesConfig) -> QueryParams:
    or_terms = []
    if cfg.type_or_term and ntype is not None and ntype.type_name.lower() != text.lower():
        or_terms.append(ntype.type_name.lower())
    return QueryParams(or_terms, list(cfg.exclude_terms), cfg.photo_only)


Builder = Callable[[list[Entity], dict[str, NaturalType], QueriesConfig], tuple[list[Query], list[Rejected]]]
BUILDERS: dict[str, Builder] = {"entity": entity_queries}


def build(
    entities: list[Entity], types: Iterable[NaturalType], cfg: QueriesConfig
) -> tuple[list[Query], list[Rejected]]:
    by_entity = {t.entity_id: t for t in types}
    queries: dict[str, Query] = {}
    rejects: list[Rejected] = []
    for kind in cfg.kinds:
        made, dropped = BUILDERS[kind](entities, by_entity, cfg)
        rejects.extend(dropped)
        for q in made:
            queries.setdefault(q.query_id, q)
    ordered = sorted(queries.values(), key=lambda q: (q.kind, q.entity_id or "", q.text))
    return ordered, sorted(rejects, key=lambda r: (r.item, r.detail))


def run(ctx: StageContext) -> StageResult:
    entities = list(read_records(ctx.path("entities.parquet"), Entity))
    types = read_records(ctx.path("types.parquet"), NaturalType)
    queries, rejects = build(entities, types, ctx.config.queries)
    write_records(ctx.path("queries.parquet"), queries, Query)
    write_records(ctx.path("rejects/queries.parquet"), rejects, Rejected)
    per_kind: dict[str, int] = defaultdict(int)
    for q in queries:
        per_kind[q.kind] += 1
    stats = {
        "queries": len(queries),
        "per_kind": dict(per_kind),
        "entities_with_queries": len({q.entity_id for q in queries if q.entity_id}),
        "homonym_claims_dropped": len(rejects),
    }
    summary = (
        f"{len(queries):,} queries for {stats['entities_with_queries']:,} entities; "
        f"{len(rejects):,} claims on shared names went to another entity"
    )
    return StageResult(len(queries), stats, summary)
