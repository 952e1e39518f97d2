"""The queries stage: image-search query strings from entities (and, later, attributes).

A query string must point at one entity. When several entities share a name ("crane" the
bird, "crane" the plant genus), the method gives it to the alphabetically first synset name,
which puts the `.n.01` sense first; the other claimants keep their remaining names.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from kgclip.config import QueriesConfig
from kgclip.pipeline import StageContext, StageResult
from kgclip.tables import (
    Attribute,
    Entity,
    NaturalType,
    Query,
    QueryParams,
    Rejected,
    read_records,
    write_records,
)
from kgclip.text.filter import kept_ids
from kgclip.text.judge import judge_stage


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


@dataclass(frozen=True)
class Inputs:
    """What query builders read: the kept entities, their types and their attributes."""

    entities: list[Entity]
    types: dict[str, NaturalType]
    attributes: list[Attribute] = field(default_factory=list)


def entity_queries(inp: Inputs, cfg: QueriesConfig) -> tuple[list[Query], list[Rejected]]:
    chosen = [e for e in inp.entities if cfg.entities == "all" or e.is_leaf]
    claims: dict[str, list[tuple[str, Entity, str]]] = defaultdict(list)
    for entity in sorted(chosen, key=lambda e: e.id):
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
        params = _entity_params(text, inp.types.get(winner.id), cfg)
        queries.append(Query(query_id("entity", text, params), "entity", text, winner.id, None, params))
    return queries, rejects


def _entity_params(text: str, ntype: NaturalType | None, cfg: QueriesConfig) -> QueryParams:
    or_terms = []
    if cfg.type_or_term and ntype is not None and ntype.type_name.lower() != text.lower():
        or_terms.append(ntype.type_name.lower())
    return QueryParams(or_terms, list(cfg.exclude_terms), cfg.photo_only)


def entity_attribute_queries(inp: Inputs, cfg: QueriesConfig) -> tuple[list[Query], list[Rejected]]:
    """The attribute's own query ("koala grey ears"); or-terms are the entity's other names that
    the query does not already contain, as the method sent to Google."""
    by_id = {e.id: e for e in inp.entities}
    per_entity: dict[str, int] = defaultdict(int)
    queries, rejects = [], []
    for attr in inp.attributes:
        entity = by_id.get(attr.entity_id)
        if entity is None:
            continue
        if (
            cfg.max_attribute_queries_per_entity
            and per_entity[entity.id] >= cfg.max_attribute_queries_per_entity
        ):
            rejects.append(Rejected("queries", entity.id, "budget_per_entity", attr.query))
            continue
        per_entity[entity.id] += 1
        text = attr.query
        names = [
            entity.name,
            *entity.aliases,
            *entity.common_names,
            *([entity.taxon_name] if entity.taxon_name else []),
        ]
        or_terms = list(dict.fromkeys(n.lower() for n in names if n and n.lower() not in text.lower()))
        params = QueryParams(or_terms, list(cfg.exclude_terms), cfg.photo_only)
        queries.append(
            Query(
                query_id("entity_attribute", text, params),
                "entity_attribute",
                text,
                entity.id,
                attr.attribute,
                params,
            )
        )
    return queries, rejects


PART_CATEGORIES = {"Body parts", "Plant parts", "Parts"}


def type_attribute_text(attribute: str, category: str, type_name: str) -> str | None:
    """`"{attribute} {type}"` as the method wrote it ("striped cat", "aquatic animal"), but
    `"{type} {part}"` for parts ("bird wing", not "wing bird"); None when the attribute is the
    type itself ("flower" of a flower)."""
    a, t = attribute.lower(), type_name.lower()
    if a == t or t in a.split() or a in t.split() or a.rstrip("s") == t:
        return None
    return f"{type_name} {a}" if category in PART_CATEGORIES else f"{a} {type_name}"


def type_attribute_queries(inp: Inputs, cfg: QueriesConfig) -> tuple[list[Query], list[Rejected]]:
    """Type-attribute queries counted over all entities, the most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    attribute_of: dict[str, str] = {}
    for attr in inp.attributes:
        ntype = inp.types.get(attr.entity_id)
        text = type_attribute_text(attr.attribute, attr.category, ntype.type_name) if ntype else None
        if text is not None:
            counts[(text, ntype.type_name)] += 1  # type: ignore[union-attr]
            attribute_of.setdefault(text, attr.attribute.lower())
    params = QueryParams([], list(cfg.exclude_terms), cfg.photo_only)
    queries = [
        Query(
            query_id("type_attribute", text, params), "type_attribute", text, None, attribute_of[text], params
        )
        for (text, _), _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return queries, []


Builder = Callable[[Inputs, QueriesConfig], tuple[list[Query], list[Rejected]]]
BUILDERS: dict[str, Builder] = {
    "entity": entity_queries,
    "entity_attribute": entity_attribute_queries,
    "type_attribute": type_attribute_queries,
}


def build(inp: Inputs, cfg: QueriesConfig) -> tuple[list[Query], list[Rejected]]:
    queries: dict[str, Query] = {}
    rejects: list[Rejected] = []
    for kind in cfg.kinds:
        made, dropped = BUILDERS[kind](inp, cfg)
        rejects.extend(dropped)
        cap = cfg.max_per_kind.get(kind)
        if cap is not None and len(made) > cap:
            rejects.extend(Rejected("queries", q.query_id, "budget_per_kind", q.text) for q in made[cap:])
            made = made[:cap]
        for q in made:
            queries.setdefault(q.query_id, q)
    # Builders return their kind's priority order (type-attribute queries most frequent first),
    # which a budget cap and a reader of the table both rely on.
    return list(queries.values()), sorted(rejects, key=lambda r: (r.item, r.detail))


def run(ctx: StageContext) -> StageResult:
    kept = kept_ids(ctx)
    entities = [e for e in read_records(ctx.path("entities.parquet"), Entity) if e.id in kept]
    types = {t.entity_id: t for t in read_records(ctx.path("types.parquet"), NaturalType)}
    attributes = list(read_records(ctx.path("attributes.parquet"), Attribute))
    queries, rejects = build(Inputs(entities, types, attributes), ctx.config.queries)
    judge_stats = {}
    if ctx.config.queries.judge.enabled:
        judged = judge_stage(ctx, queries)
        queries, judge_stats = judged.kept, {"judge": judged.stats}
        rejects = sorted(rejects + judged.rejected, key=lambda r: (r.item, r.detail))
    write_records(ctx.path("queries.parquet"), queries, Query)
    write_records(ctx.path("rejects/queries.parquet"), rejects, Rejected)
    per_kind = Counter(q.kind for q in queries)
    stats = {
        "queries": len(queries),
        "per_kind": dict(per_kind),
        "entities_with_queries": len({q.entity_id for q in queries if q.entity_id}),
        "rejects": dict(Counter(r.reason for r in rejects)),
        **judge_stats,
    }
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(per_kind.items()))
    summary = f"{len(queries):,} queries ({kinds}) for {stats['entities_with_queries']:,} entities"
    return StageResult(len(queries), stats, summary)
