"""The natural-types stage: for each kept entity, the superclass a person would name.

Methods sit side by side in `METHODS`: `kg` (the offline default, kg_types.py) and `llm`
(llm_types.py), each taking the same entity rows and returning the same records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from kgclip.pipeline import StageContext, StageResult
from kgclip.progress import console
from kgclip.tables import Entity, NaturalType, read_records, write_records
from kgclip.text.filter import kept_ids
from kgclip.text.kg_types import NEAREST_POPULAR, ROOT, TOP_ANCESTOR, TypesError, kg_types
from kgclip.text.llm_types import llm_types

__all__ = ["METHODS", "NEAREST_POPULAR", "ROOT", "TOP_ANCESTOR", "TypesError", "kg_types", "run"]

TypeMethod = Callable[[list[Entity], set[str], StageContext], tuple[list[NaturalType], dict]]


def kg_method(entities: list[Entity], kept: set[str], ctx: StageContext) -> tuple[list[NaturalType], dict]:
    """Types of the kept entities; ancestors are walked through all of them."""
    return [t for t in kg_types(entities, ctx.config) if t.entity_id in kept], {}


METHODS: dict[str, TypeMethod] = {"kg": kg_method, "llm": llm_types}


def stats_of(types: list[NaturalType]) -> dict:
    counts = Counter(t.type_id for t in types)
    names = {t.type_id: t.type_name for t in types}
    return {
        "methods": dict(Counter(t.method for t in types).most_common()),
        "distinct_types": len(counts),
        "top_types": [{"id": tid, "name": names[tid], "entities": n} for tid, n in counts.most_common(10)],
    }


def unmatched_refs(entities: list[Entity], refs: list[str]) -> list[str]:
    """`too_general` entries that name no entity: a typo, or a synset outside these roots."""
    known = {key for e in entities for key in (e.id, e.wordnet, e.wordnet_name) if key}
    return [r for r in refs if r not in known]


def run(ctx: StageContext) -> StageResult:
    entities = list(read_records(ctx.path("entities.parquet"), Entity))
    made, extra = METHODS[ctx.config.types.method](entities, kept_ids(ctx), ctx)
    types = sorted(made, key=lambda t: t.entity_id)
    write_records(ctx.path("types.parquet"), types, NaturalType)
    stats = stats_of(types) | extra
    unmatched = unmatched_refs(entities, ctx.config.types.kg.too_general)
    if unmatched:
        stats["too_general_unmatched"] = unmatched
        names = ", ".join(unmatched)
        console.print(f"types: warning: types.kg.too_general names no entity of this harvest: {names}")
    top = ", ".join(f"{t['name']} {t['entities']:,}" for t in stats["top_types"][:3])
    return StageResult(len(types), stats, f"{stats['distinct_types']:,} distinct types (top: {top})")
