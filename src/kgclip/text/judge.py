"""The optional LLM query judge: does a query string, read as a search engine reads it, name
something in the roots? ("chess" -> no, a search returns the board game; "hobby falcon" -> yes.)

This is what the authors did for LivingThings-10M with their living_yes / living_no query lists
(method.md §6). It runs inside the queries stage after the KG rules, so it judges the final,
possibly qualified strings; the KG rules stay the offline default and the judge is off unless
`[queries.judge] enabled = true`. Each distinct text is one cached request (cache/llm.sqlite), so
a rerun or another config with the same strings sends nothing. A text judged in the domain marks
its queries `decision = "judged_yes"` (original_text and senses stay as the KG rules set them);
one judged not in the domain drops its queries to rejects/queries.parquet (`judged_not_in_domain`,
with the model's reason and the senses); a text without a valid answer keeps its queries as they
were, and the stage stats count and name it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from kgclip.config import QueryJudgeConfig
from kgclip.pipeline import StageContext
from kgclip.progress import meter
from kgclip.tables import Entity, Query, Rejected
from kgclip.text.llm import LLM, InvalidAnswer, LLMCache, Usage
from kgclip.text.prompting import entity_line, prompt

REASON_CHARS = 160  # a reason is a few words; a rambling one is cut, not refused
EXAMPLES = 20  # texts without a verdict named in the stats
JUDGED_YES = "judged_yes"  # Query.decision of a query the model judged in the domain


class Verdict(BaseModel):
    """The model's answer: strict JSON, extra keys ignored so a chatty model is not refused."""

    model_config = ConfigDict(extra="ignore")
    in_domain: bool
    reason: str


@dataclass(frozen=True)
class Judgement:
    """The verdict on one text; `in_domain` is None when the model gave no valid answer."""

    text: str
    in_domain: bool | None
    reason: str


@dataclass
class Judged:
    """What the queries stage gets back: the queries kept (judged yes, unjudged kinds, no valid
    answer), the rejected ones with the model's reason, and the counts for the stage stats."""

    kept: list[Query]
    rejected: list[Rejected]
    judgements: dict[str, Judgement] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def domain_of(entities: list[Entity], override: str | None) -> str:
    """The roots in words: `label (description)` of each root entity, else its id."""
    if override:
        return override
    by_id = {e.id: e for e in entities}
    roots = sorted({e.root for e in entities})
    return "; ".join(entity_line(by_id[r]) if r in by_id else r for r in roots)


async def judge_texts(
    texts: list[str], cfg: QueryJudgeConfig, domain: str, cache: LLMCache
) -> tuple[dict[str, Judgement], Usage, str]:
    """One request per distinct text (identical prompts are answered from the cache)."""
    assert cfg.llm is not None  # guaranteed by QueryJudgeConfig validation
    llm = LLM(cfg.llm, cache)
    template = prompt("query_judge.txt")
    with meter(f"query judge ({llm.label})", len(texts)) as m:

        async def one(text: str) -> Judgement:
            message = template.format(domain=domain, query=json.dumps(text, ensure_ascii=False))
            try:
                answer = await llm.structured([{"role": "user", "content": message}], Verdict)
            except InvalidAnswer as exc:
                return Judgement(text, None, f"no valid answer: {(exc.answer or '')[:60]!r}")
            finally:
                m.advance()
            return Judgement(text, answer.value.in_domain, answer.value.reason.strip()[:REASON_CHARS])

        try:
            found = await asyncio.gather(*(one(t) for t in texts))
        finally:
            await llm.close()
    return {j.text: j for j in found}, llm.usage, llm.label


def apply(
    queries: list[Query], judgements: dict[str, Judgement], kinds: list[str], label: str
) -> tuple[list[Query], list[Rejected]]:
    """Drop the judged kinds' queries whose text was judged not in the domain and mark those
    judged in it (`decision = "judged_yes"`); the others pass as they are. Order is kept."""
    kept, rejected = [], []
    for q in queries:
        verdict = judgements.get(q.text) if q.kind in kinds else None
        if verdict is None or verdict.in_domain is None:
            kept.append(q)
        elif verdict.in_domain:
            kept.append(dataclasses.replace(q, decision=JUDGED_YES))
        else:
            rejected.append(
                Rejected("queries", q.query_id, "judged_not_in_domain", reject_detail(q, verdict, label))
            )
    return kept, rejected


def reject_detail(q: Query, verdict: Judgement, label: str) -> str:
    """`'text' for entity: the model's reason [llm:model]`, then the other senses the KG rules found."""
    target = f" for {q.entity_id}" if q.entity_id else ""
    senses = "; also " + " | ".join(q.senses) if q.senses else ""
    return f"{q.text!r}{target}: {verdict.reason} [{label}]{senses}"


def judge_queries(queries: list[Query], cfg: QueryJudgeConfig, domain: str, cache: LLMCache) -> Judged:
    """Judge the texts of the configured kinds and split the queries by the verdicts."""
    texts = list(dict.fromkeys(q.text for q in queries if q.kind in cfg.kinds))
    judgements, usage, label = asyncio.run(judge_texts(texts, cfg, domain, cache))
    kept, rejected = apply(queries, judgements, list(cfg.kinds), label)
    verdicts = Counter(
        "no_answer" if j.in_domain is None else ("in_domain" if j.in_domain else "not_in_domain")
        for j in judgements.values()
    )
    stats = {
        "model": label,
        "kinds": list(cfg.kinds),
        "texts": len(texts),
        "verdicts": dict(verdicts),
        "queries_dropped": len(rejected),
        "no_answer_texts": [j.text for j in judgements.values() if j.in_domain is None][:EXAMPLES],
        "llm": usage.as_dict(),
    }
    return Judged(kept, rejected, judgements, stats)


def judge_stage(ctx: StageContext, queries: list[Query], entities: list[Entity]) -> Judged:
    """The queries stage's call: the domain from the root entities (of all `entities` selected),
    the workdir's LLM cache."""
    cfg = ctx.config.queries.judge
    domain = domain_of(entities, cfg.domain)
    cache = LLMCache(ctx.path("cache/llm.sqlite"))
    try:
        return judge_queries(queries, cfg, domain, cache)
    finally:
        cache.close()
