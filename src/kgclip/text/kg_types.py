"""The `kg` natural-type rule: the nearest ancestor people name often enough (docs/stages/types.md).

A type becomes an or-term of entity queries and the noun of type-attribute queries, so it must
be neither the root ("living thing") nor too specific ("hunting dog").
"""

from __future__ import annotations

from kgclip.config import Config, KGTypeRule
from kgclip.tables import Entity, NaturalType

NEAREST_POPULAR = "kg:nearest-popular"
TOP_ANCESTOR = "kg:top-ancestor"
ROOT = "kg:root"


class TypesError(RuntimeError):
    """Entity rows that break the contract the types stage relies on."""


def natural_type(entity: Entity, type_entity: Entity, method: str) -> NaturalType:
    return NaturalType(
        entity_id=entity.id,
        type_id=type_entity.id,
        type_name=type_entity.name,
        type_aliases=list(type_entity.aliases),
        type_description=type_entity.description,
        method=method,
    )


def too_general_ids(entities: list[Entity], refs: list[str]) -> set[str]:
    """Entity ids named in `too_general` by nltk name, wnid or entity id."""
    wanted = set(refs)
    return {e.id for e in entities if wanted & {e.id, e.wordnet or "", e.wordnet_name or ""}}


def ancestors(entity: Entity, by_id: dict[str, Entity]) -> list[Entity]:
    """The primary-parent chain upwards (nearest first), as far as it stays inside the entities."""
    chain: list[Entity] = []
    seen = {entity.id}
    current = entity
    while current.parents and current.parents[0] in by_id and current.parents[0] not in seen:
        current = by_id[current.parents[0]]
        seen.add(current.id)
        chain.append(current)
    return chain


def kg_type(entity: Entity, by_id: dict[str, Entity], rule: KGTypeRule, excluded: set[str]) -> NaturalType:
    """Nearest popular ancestor, else the topmost ancestor below the root, else the root.

    `excluded` holds the too-general ids. The root may win on popularity ("animal" for a lion when
    animal.n.01 is a root, as the method's own example has it) but is never the top-ancestor
    fallback: "living thing" is what every entity is, so it tells none of them apart.
    """
    usable = [a for a in ancestors(entity, by_id) if a.id not in excluded]
    for ancestor in usable:
        if ancestor.popularity >= rule.min_popularity:
            return natural_type(entity, ancestor, NEAREST_POPULAR)
    below_root = [a for a in usable if a.id != entity.root]
    if below_root:
        return natural_type(entity, below_root[-1], TOP_ANCESTOR)
    if entity.root not in by_id:
        raise TypesError(
            f"root {entity.root} of {entity.id} is not an entity; the entities stage keeps its roots"
        )
    return natural_type(entity, by_id[entity.root], ROOT)


def kg_types(entities: list[Entity], config: Config) -> list[NaturalType]:
    rule = config.types.kg
    by_id = {e.id: e for e in entities}
    excluded = too_general_ids(entities, rule.too_general)
    return [kg_type(e, by_id, rule, excluded) for e in entities]
