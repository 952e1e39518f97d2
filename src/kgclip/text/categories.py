"""Which category set (animal, plant, generic) an entity uses, from its place in the hierarchy."""

from __future__ import annotations

from collections.abc import Callable

from kgclip.tables import Entity


def category_sets(entities: list[Entity], roots: dict[str, list[str]]) -> Callable[[Entity], str]:
    """A function giving each entity the first set whose root ids are among its ancestors (all
    parents, not just the primary one, so a merged WordNet/Wikidata row finds either); else generic."""
    by_id = {e.id: e for e in entities}
    marks = {root_id: name for name, ids in roots.items() for root_id in ids}
    memo: dict[str, str] = {}

    def find(entity: Entity) -> str:
        if entity.id in memo:
            return memo[entity.id]
        seen = {entity.id}
        frontier = [entity.id]
        answer = "generic"
        while frontier and answer == "generic":
            nxt = []
            for eid in frontier:
                if eid in marks:
                    answer = marks[eid]
                    break
                row = by_id.get(eid)
                for parent in (*(row.parents if row else ()), *((row.root,) if row else ())):
                    if parent not in seen:
                        seen.add(parent)
                        nxt.append(parent)
            frontier = nxt
        memo[entity.id] = answer
        return answer

    return find
