"""Which category set (animal, plant, generic) an entity uses, from its place in the hierarchy.

One mechanism for every stage that needs it (attributes, the filter), configured by
`attributes.category_roots`: the first set whose root ids are among the entity's ancestors.
"""

from __future__ import annotations

from collections.abc import Callable

from kgclip.config import Config
from kgclip.kg.wordnet import HYPERNYM, INSTANCE_HYPERNYM, WordNet, find_database, open_wordnet
from kgclip.kg.wordnet_select import database_fingerprint
from kgclip.tables import Entity


def harvest_wordnet(config: Config) -> WordNet | None:
    """The harvest's WordNet when it has a WordNet source, else None (a Wikidata-only harvest)."""
    src = config.entities.wordnet
    return open_wordnet(src.path) if src is not None else None


def harvest_wordnet_fingerprint(config: Config, workdir: object) -> str | None:
    """The harvest's WordNet is read from outside the workdir: its files are an input."""
    src = config.entities.wordnet
    return None if src is None else database_fingerprint(find_database(src.path))


def for_harvest(config: Config, entities: list[Entity]) -> Callable[[Entity], str]:
    return category_sets(entities, config.attributes.category_roots, harvest_wordnet(config))


def category_sets(
    entities: list[Entity], roots: dict[str, list[str]], wordnet: WordNet | None = None
) -> Callable[[Entity], str]:
    """Ancestors are found through all parents in the entities table, so a merged WordNet/Wikidata
    row reaches either tree; with `wordnet`, a synset whose chain leaves the selection (a harvest
    rooted at dog.n.01) is followed further up WordNet itself. Anything else is "generic"."""
    by_id = {e.id: e for e in entities}
    marks = {root_id: name for name, ids in roots.items() for root_id in ids}
    memo: dict[str, str] = {}

    def through_table(entity: Entity) -> str | None:
        seen, frontier = {entity.id}, [entity.id]
        while frontier:
            nxt = []
            for eid in frontier:
                if eid in marks:
                    return marks[eid]
                row = by_id.get(eid)
                for parent in (*row.parents, row.root) if row else ():
                    if parent not in seen:
                        seen.add(parent)
                        nxt.append(parent)
            frontier = nxt
        return None

    def through_wordnet(entity: Entity) -> str | None:
        if wordnet is None or not entity.wordnet:
            return None
        seen, frontier = set(), [wordnet.synset(entity.wordnet).offset]
        while frontier:
            nxt = []
            for offset in frontier:
                mark = marks.get(f"wn:n{offset:08d}")
                if mark is not None:
                    return mark
                for up in wordnet.by_offset(offset).related(HYPERNYM, INSTANCE_HYPERNYM):
                    if up not in seen:
                        seen.add(up)
                        nxt.append(up)
            frontier = nxt
        return None

    def find(entity: Entity) -> str:
        if entity.id not in memo:
            memo[entity.id] = through_table(entity) or through_wordnet(entity) or "generic"
        return memo[entity.id]

    return find
