"""The filter stage: the method's true/false LLM judgement of whether an entity really is a kind of
animal, plant, ... (Wikidata's class tree lets leather, colour variants and famous horses in).

`method = "none"` keeps everything; every verdict is recorded either way, so downstream stages
read one table, and every dropped entity is in rejects/filter.parquet with the model's name.
With `method = "llm"`, only the `top_n` most popular entities of each root are judged, as the
method capped its filter at the top 28,000 per kingdom; the others are dropped with the verdict
method `top_n`, so types, attributes and queries cover the judged entities only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from kgclip.config import FilterConfig
from kgclip.pipeline import StageContext, StageResult
from kgclip.progress import meter
from kgclip.tables import Entity, FilterVerdict, Rejected, read_records, write_records
from kgclip.text.categories import for_harvest
from kgclip.text.llm import LLM, InvalidAnswer, LLMCache, Usage
from kgclip.text.prompting import entity_line, prompt

REJECT_REASON = {"top_n": "beyond_top_n"}  # else `filtered`: the model said no


def within_top_n(entities: list[Entity], top_n: int) -> tuple[list[Entity], list[Entity]]:
    """The `top_n` most popular entities of each root (all when top_n is 0), and the others.

    Ties in popularity are broken by id, so the cut is the same on every run."""
    if top_n == 0:
        return list(entities), []
    by_root: dict[str, list[Entity]] = defaultdict(list)
    for e in entities:
        by_root[e.root].append(e)
    chosen: set[str] = set()
    for rows in by_root.values():
        rows.sort(key=lambda e: (-e.popularity, e.id))
        chosen.update(e.id for e in rows[:top_n])
    return [e for e in entities if e.id in chosen], [e for e in entities if e.id not in chosen]


def kept_ids(ctx: StageContext) -> set[str]:
    """What downstream stages use: the entities the filter kept."""
    return {v.entity_id for v in read_records(ctx.path("filter.parquet"), FilterVerdict) if v.keep}


async def judge(
    entities: list[Entity],
    cfg: FilterConfig,
    cache: LLMCache,
    set_of: Callable[[Entity], str],
    names: dict[str, str],
) -> tuple[list[FilterVerdict], Usage]:
    assert cfg.llm is not None  # guaranteed by FilterConfig validation
    llm = LLM(cfg.llm, cache)
    templates = {kind: prompt(f"filter_{kind}.txt") for kind in ("animal", "plant", "generic")}
    try:
        with meter("filter (llm)", len(entities)) as m:

            async def one(entity: Entity) -> FilterVerdict:
                kind = set_of(entity)
                text = templates.get(kind, templates["generic"]).format(
                    entity=entity_line(entity), root=names.get(entity.root, "thing")
                )
                try:
                    answer = await llm.choose([{"role": "user", "content": text}], ["true", "false"])
                except InvalidAnswer as exc:
                    return FilterVerdict(
                        entity.id, True, llm.label, f"kept: no valid answer ({(exc.answer or '')[:60]})"
                    )
                finally:
                    m.advance()
                keep = answer.value == "true"
                reason = f"{'is' if keep else 'not'} a kind of {kind}"
                return FilterVerdict(entity.id, keep, llm.label, reason)

            verdicts = list(await asyncio.gather(*(one(e) for e in entities)))
    finally:
        await llm.close()
    return verdicts, llm.usage


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.filter
    entities = list(read_records(ctx.path("entities.parquet"), Entity))
    stats: dict[str, object] = {"method": cfg.method}
    if cfg.method == "none":
        verdicts = [FilterVerdict(e.id, True, "none", "no filter configured") for e in entities]
    else:
        judged, beyond = within_top_n(entities, cfg.top_n)
        set_of = for_harvest(ctx.config, entities)
        names = {e.id: e.name for e in entities}
        cache = LLMCache(ctx.path("cache/llm.sqlite"))
        try:
            verdicts, usage = asyncio.run(judge(judged, cfg, cache, set_of, names))
        finally:
            cache.close()
        reason = f"not among the {cfg.top_n:,} most popular entities of its root (filter.top_n)"
        verdicts += [FilterVerdict(e.id, False, "top_n", reason) for e in beyond]
        stats |= {"llm": usage.as_dict(), "judged": len(judged), "beyond_top_n": len(beyond)}
    verdicts.sort(key=lambda v: v.entity_id)
    rejects = [
        Rejected("filter", v.entity_id, REJECT_REASON.get(v.method, "filtered"), f"{v.method}: {v.reason}")
        for v in verdicts
        if not v.keep
    ]
    write_records(ctx.path("filter.parquet"), verdicts, FilterVerdict)
    write_records(ctx.path("rejects/filter.parquet"), rejects, Rejected)
    kept = len(verdicts) - len(rejects)
    stats |= {"kept": kept, "dropped": len(rejects)}
    return StageResult(len(verdicts), stats, f"{kept:,} kept, {len(rejects):,} dropped ({cfg.method})")
