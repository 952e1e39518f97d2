"""From scanned candidates to selected Wikidata entities: roots evaluated independently (as one
SPARQL query per root would be), union with the first root owning an item, a popularity cap per
root, and a recorded reason for every member that was dropped."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kgclip.kg.wikidata.item import EXTERNAL_IDS, HINT_PROPS, Item
from kgclip.kg.wikidata.rules import Graph, RootRule, Selector
from kgclip.tables import Entity, Rejected

PARENT_PROPS = ("P171", "P279", "P31")


def wd(qid: int) -> str:
    return f"wd:Q{qid}"


@dataclass(frozen=True)
class Choice:
    item: Item
    root: RootRule


@dataclass
class Evaluation:
    """Per root, the members that survive the exclusions; per item, why a member was dropped."""

    members: dict[int, list[Item]]
    excluded: dict[int, tuple[str, str]]


def evaluate(candidates: Iterable[Item], graph: Graph, rules: list[RootRule]) -> Evaluation:
    """The dump path: membership and exclusions from the graph, each root on its own."""
    selectors = [Selector.build(graph, rule) for rule in rules]
    result = Evaluation({rule.qid: [] for rule in rules}, {})
    for item in candidates:
        for sel in selectors:
            if not sel.is_member(item):
                continue
            why = sel.exclusion(item)
            if why is None:
                result.members[sel.rule.qid].append(item)
            else:
                result.excluded.setdefault(item.qid, why)
    return result


def finalize(ev: Evaluation, rules: list[RootRule], cap: int | None) -> tuple[list[Choice], list[Rejected]]:
    """Union over roots (the first root owns an item), the popularity cap, and the rejects."""
    chosen: dict[int, Choice] = {}
    capped: dict[int, str] = {}
    obscure: dict[int, str] = {}
    for rule in rules:
        known = [i for i in ev.members[rule.qid] if i.sitelinks >= rule.min_sitelinks]
        for item in ev.members[rule.qid]:
            if item.sitelinks < rule.min_sitelinks:
                obscure.setdefault(
                    item.qid, f"{rule.name}: {item.sitelinks} < {rule.min_sitelinks} sitelinks"
                )
        ranked = sorted(known, key=lambda i: (-i.sitelinks, i.qid))
        keep = ranked if cap is None else ranked[:cap]
        for item in keep:
            chosen.setdefault(item.qid, Choice(item, rule))
        for item in ranked[len(keep) :]:
            capped.setdefault(item.qid, f"{rule.name}: not in the top {cap} by sitelinks")
    rejects = [Rejected("entities", wd(q), "popularity_cap", d) for q, d in capped.items() if q not in chosen]
    rejects += [
        Rejected("entities", wd(q), "few_sitelinks", d)
        for q, d in obscure.items()
        if q not in chosen and q not in capped
    ]
    rejects += [
        Rejected("entities", wd(q), reason, detail)
        for q, (reason, detail) in ev.excluded.items()
        if q not in chosen and q not in capped and q not in obscure
    ]
    return sorted(chosen.values(), key=lambda c: c.item.qid), sorted(rejects, key=lambda r: r.item)


def select(
    candidates: Iterable[Item], graph: Graph, rules: list[RootRule], cap: int | None
) -> tuple[list[Choice], list[Rejected]]:
    return finalize(evaluate(candidates, graph, rules), rules, cap)


def hint_values(choices: list[Choice]) -> set[int]:
    """The items named by the chosen items' hint properties: their labels are needed."""
    return {q for c in choices for p in HINT_PROPS for q in c.item.values(p)}


def to_entities(choices: list[Choice], labels: dict[int, str] | None = None) -> list[Entity]:
    """Entity rows; parents are parent taxa, then superclasses, then classes, selected ones first.
    `labels` names the values of hint properties (P462 colour: white, ...)."""
    labels = labels or {}
    selected = {c.item.qid for c in choices}
    parents_of = {c.item.qid: _parents(c.item, selected) for c in choices}
    children = {p for ps in parents_of.values() for p in ps}
    rows = []
    for c in choices:
        item = c.item
        rows.append(
            Entity(
                id=wd(item.qid),
                name=item.label or "",
                aliases=_aliases(item),
                description=item.description or "",
                root=wd(c.root.qid),
                parents=[wd(p) for p in parents_of[item.qid]],
                is_leaf=item.qid not in children,
                wikidata=f"Q{item.qid}",
                taxon_name=item.first("P225"),
                common_names=list(dict.fromkeys(item.common_names)),
                popularity=item.sitelinks,
                depth=_depth(item.qid, parents_of, selected),
                sources=["wikidata"],
                image=item.first("P18"),
                external_ids={name: item.first(p) for p, name in EXTERNAL_IDS.items() if item.first(p)},
                kg_hints=_hints(item, labels),
            )
        )
    return rows


def _hints(item: Item, labels: dict[int, str]) -> dict[str, list[str]]:
    hints = {p: sorted({labels[q] for q in item.values(p) if q in labels}) for p in HINT_PROPS}
    return {p: v for p, v in hints.items() if v}


def _parents(item: Item, selected: set[int]) -> list[int]:
    ordered = list(dict.fromkeys(q for p in PARENT_PROPS for q in item.values(p)))
    return [q for q in ordered if q in selected] + [q for q in ordered if q not in selected]


def _aliases(item: Item) -> list[str]:
    seen = {(item.label or "").lower()}
    out = []
    for alias in item.aliases:
        if alias.lower() not in seen:
            seen.add(alias.lower())
            out.append(alias)
    return out


def _depth(qid: int, parents_of: dict[int, list[int]], selected: set[int]) -> int:
    """Primary-parent steps until the chain leaves the selection (a root's child has depth 1)."""
    depth, seen = 1, {qid}
    current = qid
    while parents_of[current] and parents_of[current][0] in selected and parents_of[current][0] not in seen:
        current = parents_of[current][0]
        seen.add(current)
        depth += 1
    return depth
