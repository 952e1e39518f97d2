"""The attributes stage: visual attributes per entity, each with a search query (method.md §4).

`method = "kg"` (the offline default) reads them off the graph (text/kg_attributes.py);
`method = "llm"` asks one or more OpenAI-compatible models and merges their answers, best model
first: for each (category, attribute) the first model's query wins.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from kgclip.config import AttributesConfig, Config, LLMConfig
from kgclip.kg.wordnet import WordNet, find_database, open_wordnet
from kgclip.kg.wordnet_select import database_fingerprint
from kgclip.pipeline import StageContext, StageResult
from kgclip.progress import meter
from kgclip.tables import Attribute, Entity, read_records, write_records
from kgclip.text.categories import for_harvest, harvest_wordnet, harvest_wordnet_fingerprint
from kgclip.text.filter import kept_ids
from kgclip.text.kg_attributes import hint_attributes, kg_attributes, load_vocabulary
from kgclip.text.llm import LLM, InvalidAnswer, LLMCache, Usage
from kgclip.text.prompting import entity_line, prompt


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attribute: str = Field(min_length=1, max_length=64)
    query: str = Field(min_length=1, max_length=128)


def answer_schema(categories: list[str], most: int) -> type[BaseModel]:
    """A model with one list per category (aliases keep names like "Body parts" as JSON keys).
    Keys for other categories are ignored rather than failing the whole answer."""
    fields: dict[str, Any] = {
        f"c{i}": (list[Instance], Field(default_factory=list, max_length=most, alias=name))
        for i, name in enumerate(categories)
    }
    return create_model("Attributes", __config__=ConfigDict(extra="ignore", populate_by_name=True), **fields)


def top_entities(entities: list[Entity], kept: set[str], top_n: int) -> list[Entity]:
    """The `top_n` most popular kept entities of each root (all when top_n is 0)."""
    by_root: dict[str, list[Entity]] = defaultdict(list)
    for e in entities:
        if e.id in kept:
            by_root[e.root].append(e)
    chosen = []
    for rows in by_root.values():
        rows.sort(key=lambda e: (-e.popularity, e.id))
        chosen.extend(rows if top_n == 0 else rows[:top_n])
    return sorted(chosen, key=lambda e: e.id)


def names_of(entity: Entity) -> list[str]:
    return [
        entity.name,
        *entity.aliases,
        *entity.common_names,
        *([entity.taxon_name] if entity.taxon_name else []),
    ]


def mentions_entity(query: str, entity: Entity) -> bool:
    text = query.lower()
    return any(name.lower() in text for name in names_of(entity) if name)


def prompt_data() -> dict[str, dict[str, str]]:
    return tomllib.loads(prompt("attribute_examples.toml"))


def hint_lines(entity: Entity, names: dict[str, str]) -> str:
    """`property: value1, value2` per Wikidata hint, or `None`, as the method's prompt had them."""
    lines = [f"{names.get(p, p)}: {', '.join(v)}" for p, v in sorted(entity.kg_hints.items())]
    return "\n".join(lines) or "None"


async def ask_model(
    cfg: LLMConfig,
    entities: list[Entity],
    acfg: AttributesConfig,
    set_of: Callable[[Entity], str],
    cache: LLMCache,
) -> tuple[list[Attribute], Usage, int]:
    llm = LLM(cfg, cache)
    template = prompt("attributes.txt")
    data = prompt_data()
    examples, hint_names = data["examples"], data["hint_names"]
    out: list[Attribute] = []
    unmentioned = 0
    try:
        with meter(f"attributes ({llm.label})", len(entities)) as m:

            async def one(entity: Entity) -> list[Attribute]:
                nonlocal unmentioned
                categories = acfg.categories[set_of(entity)]
                listing = "\n".join(f"- {c}: {examples.get(c, '')}".rstrip(": ") for c in categories)
                others = [n for n in names_of(entity)[1:] if n]
                line = entity_line(entity) + (
                    ", also known as " + ", ".join(f'"{n}"' for n in others) if others else ""
                )
                text = template.format(
                    entity=line,
                    categories=listing,
                    max_per_category=acfg.max_per_category,
                    hints=hint_lines(entity, hint_names),
                )
                schema = answer_schema(categories, acfg.max_per_category)
                try:
                    answer = await llm.structured([{"role": "user", "content": text}], schema)
                except InvalidAnswer:
                    m.advance()
                    return []
                m.advance()
                rows = []
                for i, category in enumerate(categories):
                    for inst in getattr(answer.value, f"c{i}"):
                        if not mentions_entity(inst.query, entity):
                            unmentioned += 1
                            continue
                        rows.append(
                            Attribute(
                                entity.id, category, inst.attribute.strip(), inst.query.strip(), llm.label
                            )
                        )
                return rows

            for rows in await asyncio.gather(*(one(e) for e in entities)):
                out.extend(rows)
    finally:
        await llm.close()
    return out, llm.usage, unmentioned


def merge_models(per_model: list[list[Attribute]]) -> list[Attribute]:
    """Best model first: the first query for each (entity, category, lower-cased attribute) wins."""
    seen: set[tuple[str, str, str]] = set()
    merged = []
    for rows in per_model:
        for row in rows:
            key = (row.entity_id, row.category, row.attribute.lower())
            if key not in seen:
                seen.add(key)
                merged.append(row)
    return merged


def kg_method(
    entities: list[Entity], config: Config, wn: WordNet, set_of: Callable[[Entity], str]
) -> list[Attribute]:
    """WordNet meronyms and glosses, then Wikidata statements, at most max_per_category each."""
    most = config.attributes.max_per_category
    vocab = dataclasses.replace(load_vocabulary(), max_per_category=most)
    rows = kg_attributes(entities, wn, vocab, set_of) + hint_attributes(entities, vocab, set_of)
    seen: set[tuple[str, str, str]] = set()
    per_category: Counter[tuple[str, str]] = Counter()
    kept = []
    for row in rows:
        key = (row.entity_id, row.category, row.attribute.lower())
        if key in seen or per_category[key[:2]] >= most:
            continue
        seen.add(key)
        per_category[key[:2]] += 1
        kept.append(row)
    return kept


def wordnet_fingerprint(config: Config, workdir: object) -> str | None:
    """KG attributes read WordNet's meronyms even for a harvest without a WordNet source."""
    if config.attributes.method != "kg":
        return harvest_wordnet_fingerprint(config, workdir)
    src = config.entities.wordnet
    return database_fingerprint(find_database(src.path if src is not None else None))


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.attributes
    entities = list(read_records(ctx.path("entities.parquet"), Entity))
    chosen = top_entities(entities, kept_ids(ctx), cfg.top_n)
    set_of = for_harvest(ctx.config, entities)
    stats: dict[str, Any] = {"method": cfg.method, "entities": len(chosen)}
    if cfg.method == "kg":
        # meronyms need WordNet even for Wikidata-only entities (its error names the packages)
        wn = harvest_wordnet(ctx.config) or open_wordnet()
        rows = kg_method(chosen, ctx.config, wn, set_of)
    else:
        cache = LLMCache(ctx.path("cache/llm.sqlite"))
        per_model = []
        try:
            for model in cfg.llm:
                got, usage, unmentioned = asyncio.run(ask_model(model, chosen, cfg, set_of, cache))
                per_model.append(got)
                stats[f"llm:{model.model}"] = {
                    **usage.as_dict(),
                    "attributes": len(got),
                    "dropped_no_mention": unmentioned,
                }
        finally:
            cache.close()
        rows = merge_models(per_model)
    rows.sort(key=lambda a: (a.entity_id, a.category, a.attribute.lower()))
    write_records(ctx.path("attributes.parquet"), rows, Attribute)
    stats |= {
        "attributes": len(rows),
        "entities_with_attributes": len({a.entity_id for a in rows}),
        "per_category": dict(Counter(a.category for a in rows)),
        "per_method": dict(Counter(a.method for a in rows)),
    }
    return StageResult(
        len(rows), stats, f"{len(rows):,} attributes for {stats['entities_with_attributes']:,} entities"
    )
