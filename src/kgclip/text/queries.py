"""The queries stage: image-search query strings from entities (and, later, attributes).

A query string must point at one entity. A string that also names something else, outside
the selection ("hobby": a pastime) or inside it ("coney": a rabbit and a hyrax), is qualified,
dropped or kept as `queries.ambiguity` says per kind (text/ambiguity.py). Strings still shared
after that (kept homonyms, entities without a synset) go, as in the method, to the
alphabetically first synset name, which puts the `.n.01` sense first; the other claimants keep
their remaining names.
"""

from __future__ import annotations

import hashlib
import re
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
from kgclip.text.ambiguity import NONE, UNAMBIGUOUS, Homonyms
from kgclip.text.categories import harvest_wordnet
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
    """What query builders read: the kept entities, their types and their attributes, and the
    homonym judge (None: strings are not checked, as for a harvest without WordNet)."""

    entities: list[Entity]
    types: dict[str, NaturalType]
    attributes: list[Attribute] = field(default_factory=list)
    homonyms: Homonyms | None = None


@dataclass(frozen=True)
class Reading:
    """A query string after the ambiguity policy: the Query columns that record the decision."""

    text: str
    original_text: str | None = None
    ambiguity: str = NONE
    decision: str = "unambiguous"
    senses: list[str] = field(default_factory=list)

    def query(self, kind: str, entity_id: str | None, attribute: str | None, params: QueryParams) -> Query:
        return Query(
            query_id(kind, self.text, params),
            kind,
            self.text,
            entity_id,
            attribute,
            params,
            self.original_text,
            self.ambiguity,
            self.decision,
            list(self.senses),
        )


def qualified(text: str, name: str, qualifier: str) -> str:
    """The qualifier right after the name it tells apart: "hobby falcon", "hobby falcon in flight"."""
    match = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, flags=re.IGNORECASE)
    if match is None:
        return f"{text} {qualifier}"
    return f"{text[: match.end()]} {qualifier}{text[match.end() :]}"


def read_as(
    kind: str, text: str, name: str, entity: Entity, inp: Inputs, cfg: QueriesConfig
) -> Reading | Rejected:
    """Apply the kind's ambiguity policy to `text`, in which `name` names `entity`."""
    verdict = inp.homonyms.verdict(entity, name) if inp.homonyms is not None else UNAMBIGUOUS
    if verdict.ambiguity == NONE:
        return Reading(text)
    if verdict.headword:  # "seahorse" names the fish; the walrus has it as an alias
        return Reading(text, None, verdict.ambiguity, "headword", verdict.senses)
    policy = getattr(cfg.ambiguity, kind)
    # Selected synsets with the same headword and nothing to tell them apart (two echidnas) are
    # near kin: the method's rule (the first synset name takes the string) does less harm than
    # losing the name. A string that is only another synset's alias is lost instead.
    if policy == "keep" or (policy == "qualify" and verdict.kin and verdict.qualifier is None):
        return Reading(text, None, verdict.ambiguity, "kept", verdict.senses)
    if policy == "qualify" and verdict.qualifier is not None:
        text_q = qualified(text, name, verdict.qualifier)
        return Reading(text_q, text, verdict.ambiguity, "qualified", verdict.senses)
    why = "no term in the graph tells it apart; " if policy == "qualify" else ""
    detail = f"{text!r} ({verdict.ambiguity}): {why}also " + " | ".join(verdict.senses)
    return Rejected("queries", entity.id, "ambiguous", detail)


def entity_queries(inp: Inputs, cfg: QueriesConfig) -> tuple[list[Query], list[Rejected]]:
    chosen = [e for e in inp.entities if cfg.entities == "all" or e.is_leaf]
    claims: dict[str, list[tuple[str, Entity, Reading]]] = defaultdict(list)
    rejects: list[Rejected] = []
    for entity in sorted(chosen, key=lambda e: e.id):
        for text in _strings(entity, cfg):
            reading = read_as("entity", text, text, entity, inp, cfg)
            if isinstance(reading, Rejected):
                rejects.append(reading)
            else:
                claims[reading.text.lower()].append((_homonym_key(entity), entity, reading))
    queries: list[Query] = []
    for claimants in claims.values():
        claimants.sort(key=lambda c: c[0])
        _, winner, reading = claimants[0]
        for key, loser, _ in claimants[1:]:
            rejects.append(
                Rejected(
                    "queries", loser.id, "homonym", f"{reading.text!r} goes to {claimants[0][0]}, not {key}"
                )
            )
        params = _entity_params(reading.text, inp.types.get(winner.id), cfg)
        queries.append(reading.query("entity", winner.id, None, params))
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
        reading = _attribute_reading(attr.query, entity, inp, cfg)
        if isinstance(reading, Rejected):
            rejects.append(reading)
            continue
        text = reading.text
        names = [
            entity.name,
            *entity.aliases,
            *entity.common_names,
            *([entity.taxon_name] if entity.taxon_name else []),
        ]
        or_terms = list(dict.fromkeys(n.lower() for n in names if n and n.lower() not in text.lower()))
        params = QueryParams(or_terms, list(cfg.exclude_terms), cfg.photo_only)
        queries.append(reading.query("entity_attribute", entity.id, attr.attribute, params))
    return queries, rejects


def _attribute_reading(text: str, entity: Entity, inp: Inputs, cfg: QueriesConfig) -> Reading | Rejected:
    """The policy applied to the longest of the entity's names in an attribute query, if any is there."""
    lowered = f" {' '.join(text.lower().split())} "
    inside = [n for n in (entity.name, *entity.aliases) if f" {n.lower()} " in lowered]
    if not inside:
        return Reading(text)
    return read_as("entity_attribute", text, max(inside, key=len), entity, inp, cfg)


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
    type_of: dict[str, NaturalType] = {}
    for attr in inp.attributes:
        ntype = inp.types.get(attr.entity_id)
        text = type_attribute_text(attr.attribute, attr.category, ntype.type_name) if ntype else None
        if text is not None:
            counts[(text, ntype.type_name)] += 1  # type: ignore[union-attr]
            attribute_of.setdefault(text, attr.attribute.lower())
            type_of.setdefault(text, ntype)  # type: ignore[arg-type]
    params = QueryParams([], list(cfg.exclude_terms), cfg.photo_only)
    queries: list[Query] = []
    rejects: list[Rejected] = []
    for (text, _), _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        reading = _type_reading(text, type_of[text], inp, cfg)
        if isinstance(reading, Rejected):
            rejects.append(reading)
        else:
            queries.append(reading.query("type_attribute", None, attribute_of[text], params))
    return queries, rejects


def _type_reading(text: str, ntype: NaturalType, inp: Inputs, cfg: QueriesConfig) -> Reading | Rejected:
    """The policy applied to the type's name, when the type is an entity the judge knows."""
    type_entity = inp.homonyms.by_id.get(ntype.type_id) if inp.homonyms is not None else None
    if type_entity is None:
        return Reading(text)
    return read_as("type_attribute", text, ntype.type_name, type_entity, inp, cfg)


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
            kept = queries.setdefault(q.query_id, q)
            if kept is not q:  # the same kind, text and parameters: one query, and the drop recorded
                item = q.entity_id or q.query_id
                rejects.append(Rejected("queries", item, "duplicate", _duplicate(q, kept)))
    # Builders return their kind's priority order (type-attribute queries most frequent first),
    # which a budget cap and a reader of the table both rely on.
    return list(queries.values()), sorted(rejects, key=lambda r: (r.item, r.detail))


def _duplicate(dropped: Query, kept: Query) -> str:
    what = f"{dropped.text!r}" + (f" (attribute {dropped.attribute!r})" if dropped.attribute else "")
    owner = f" of {kept.entity_id}" if kept.entity_id else ""
    return f"{what} is already query {kept.query_id}{owner}"


def ambiguity_stats(queries: list[Query], rejects: list[Rejected]) -> dict[str, dict[str, int]]:
    """Per kind, how many queries were found ambiguous and what was done: qualified, kept, dropped."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for q in queries:
        if q.ambiguity != NONE:
            out[q.kind][q.ambiguity] += 1
            out[q.kind][q.decision] += 1
    dropped = Counter(r.item for r in rejects if r.reason == "ambiguous")
    if dropped:
        out["dropped"]["queries"] = sum(dropped.values())
    return {kind: dict(sorted(c.items())) for kind, c in sorted(out.items())}


def run(ctx: StageContext) -> StageResult:
    kept = kept_ids(ctx)
    selected = list(read_records(ctx.path("entities.parquet"), Entity))
    entities = [e for e in selected if e.id in kept]
    types = {t.entity_id: t for t in read_records(ctx.path("types.parquet"), NaturalType)}
    attributes = list(read_records(ctx.path("attributes.parquet"), Attribute))
    wn = harvest_wordnet(ctx.config)
    homonyms = Homonyms(wn, selected, types, ctx.config.queries.ambiguity) if wn is not None else None
    queries, rejects = build(Inputs(entities, types, attributes, homonyms), ctx.config.queries)
    judge_stats = {}
    if ctx.config.queries.judge.enabled:
        judged = judge_stage(ctx, queries, selected)
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
        "ambiguity": ambiguity_stats(queries, rejects),
        **judge_stats,
    }
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(per_kind.items()))
    summary = f"{len(queries):,} queries ({kinds}) for {stats['entities_with_queries']:,} entities"
    return StageResult(len(queries), stats, summary)
