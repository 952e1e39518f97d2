"""The `llm` natural-type method: the model chooses among the entity's own KG superclasses.

The answer is constrained to the candidate lines (guided choice where the server supports it);
an answer outside them gets one corrective retry, then the KG rule decides and the fallback is
recorded in `method` (`kg:nearest-popular (llm fallback)`), so nothing is silently invented.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random

from kgclip.pipeline import StageContext
from kgclip.progress import meter
from kgclip.tables import Entity, NaturalType
from kgclip.text.kg_types import kg_type, natural_type, too_general_ids
from kgclip.text.llm import LLM, InvalidAnswer, LLMCache, Usage
from kgclip.text.prompting import entity_line, prompt


def candidates(entity: Entity, by_id: dict[str, Entity], excluded: set[str]) -> list[Entity]:
    """Every ancestor inside the selection (through all parents), the root included, minus the
    too-general ones: the method's `?ent (P31/P279*)|P279+ ?typ` restricted to the root's tree."""
    seen = {entity.id}
    frontier = list(entity.parents)
    found = []
    while frontier:
        nxt = []
        for pid in frontier:
            if pid in seen or pid not in by_id:
                continue
            seen.add(pid)
            if pid not in excluded:
                found.append(by_id[pid])
            nxt.extend(by_id[pid].parents)
        frontier = nxt
    return found


def choice_line(c: Entity) -> str:
    return f"{c.name} {c.id}"


def llm_types(entities: list[Entity], kept: set[str], ctx: StageContext) -> tuple[list[NaturalType], dict]:
    cfg = ctx.config.types
    assert cfg.llm is not None  # guaranteed by TypesConfig validation
    by_id = {e.id: e for e in entities}
    excluded = too_general_ids(entities, cfg.kg.too_general)
    cache = LLMCache(ctx.path("cache/llm.sqlite"))
    try:
        types, usage, fallbacks = asyncio.run(_ask(entities, kept, by_id, excluded, ctx, cache))
    finally:
        cache.close()
    return types, {"llm": usage.as_dict(), "llm_fallbacks": fallbacks}


async def _ask(
    entities: list[Entity],
    kept: set[str],
    by_id: dict[str, Entity],
    excluded: set[str],
    ctx: StageContext,
    cache: LLMCache,
) -> tuple[list[NaturalType], Usage, dict[str, int]]:
    cfg = ctx.config.types
    assert cfg.llm is not None
    llm = LLM(cfg.llm, cache)
    template = prompt("types.txt")
    fallbacks = {"no_candidates": 0, "invalid_answer": 0}
    try:
        with meter(f"types ({llm.label})", len(kept)) as m:

            async def one(entity: Entity) -> NaturalType:
                options = candidates(entity, by_id, excluded)
                m.advance()
                if not options:
                    fallbacks["no_candidates"] += 1
                    return kg_type(entity, by_id, cfg.kg, excluded)
                shuffled = sorted(options, key=lambda c: (-c.popularity, c.id))
                random.Random(f"{ctx.config.seed}:{entity.id}").shuffle(shuffled)
                listing = "\n".join(f"{c.name} ({c.description}) {c.id}" for c in shuffled)
                text = template.format(entity=entity_line(entity), candidates=listing)
                lines = {choice_line(c): c for c in shuffled}
                try:
                    answer = await llm.choose([{"role": "user", "content": text}], list(lines))
                except InvalidAnswer:
                    fallbacks["invalid_answer"] += 1
                    fallback = kg_type(entity, by_id, cfg.kg, excluded)
                    return dataclasses.replace(fallback, method=f"{fallback.method} (llm fallback)")
                return natural_type(entity, lines[answer.value], llm.label)

            types = await asyncio.gather(*(one(e) for e in entities if e.id in kept))
    finally:
        await llm.close()
    return list(types), llm.usage, fallbacks
