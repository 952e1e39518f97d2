"""One Wikidata item reduced to what entity selection and the entities table need.

Claims are reduced to their *truthy* values, as WDQS and QLever expose them as `wdt:` triples:
for each property the preferred statements if there are any, else the normal ones; deprecated
statements never count, and a no-value statement has no triple. Both the dump and the SPARQL sources
must see the same graph, so this rule is applied in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Wikidata properties the method lists as attribute hints (method.md §4), kept with their value
# labels in the entity row (`kg_hints`); the KG attribute rules read the visual ones.
HINT_PROPS = (
    "P462",
    "P1552",
    "P1535",
    "P4733",
    "P1034",
    "P3095",
    "P361",
    "P527",
    "P1542",
    "P1963",
    "P136",
    "P793",
    "P1056",
    "P186",
    "P2079",
    "P137",
)
# Properties whose values are items (stored as ints) or strings (stored as given).
ITEM_PROPS = ("P31", "P279", "P171", "P1582", "P1672", "P105", *HINT_PROPS)
STRING_PROPS = ("P18", "P225", "P373", "P3151", "P846", "P8814")
EXTERNAL_IDS = {"P3151": "inaturalist", "P846": "gbif", "P373": "commons_category", "P8814": "wordnet31"}
LANG = "en"


@dataclass(frozen=True, slots=True)
class Item:
    """The facts kgclip keeps about an item; `items` and `strings` hold truthy claim values, and
    `present` names every property with a truthy value (for "has P625"-style exclusions)."""

    qid: int
    label: str | None
    description: str | None
    aliases: tuple[str, ...]
    sitelinks: int
    items: dict[str, tuple[int, ...]] = field(default_factory=dict)
    strings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    common_names: tuple[str, ...] = ()
    present: frozenset[str] = frozenset()

    def values(self, prop: str) -> tuple[int, ...]:
        return self.items.get(prop, ())

    def first(self, prop: str) -> str | None:
        values = self.strings.get(prop, ())
        return values[0] if values else None


def qid_number(qid: str) -> int:
    return int(qid[1:])


def truthy(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statements a `wdt:` triple shows: the best rank (preferred, else normal, never deprecated)
    chosen as Wikibase chooses it, with no-value and unknown-value statements taking part in the
    ranking; then the value and unknown-value ones (a no-value statement has no `wdt:` triple)."""
    ranked = [s for s in statements if s.get("rank") != "deprecated"]
    best = [s for s in ranked if s.get("rank") == "preferred"] or ranked
    return [s for s in best if s["mainsnak"].get("snaktype") in ("value", "somevalue")]


def _values(statements: list[dict[str, Any]]) -> list[Any]:
    return [
        s["mainsnak"]["datavalue"]["value"]
        for s in truthy(statements)
        if s["mainsnak"]["snaktype"] == "value"
    ]


def _text(section: dict[str, Any], lang: str = LANG) -> str | None:
    entry = section.get(lang)
    return entry["value"] if entry else None


def from_entity(entity: dict[str, Any]) -> Item | None:
    """An item from a parsed dump entity (or wbgetentities answer); None for non-items."""
    if entity.get("type") != "item":
        return None
    claims = entity.get("claims") or {}
    items: dict[str, list[int]] = {}
    for prop in ITEM_PROPS:
        values = _values(claims.get(prop, []))
        items[prop] = [v["numeric-id"] if "numeric-id" in v else qid_number(v["id"]) for v in values]
    strings = {p: _values(claims.get(p, [])) for p in STRING_PROPS}
    common = [v["text"] for v in _values(claims.get("P1843", [])) if v.get("language") == LANG]
    aliases = [a["value"] for a in (entity.get("aliases") or {}).get(LANG, [])]
    return make_item(
        qid=qid_number(entity["id"]),
        label=_text(entity.get("labels") or {}),
        description=_text(entity.get("descriptions") or {}),
        aliases=aliases,
        sitelinks=len(entity.get("sitelinks") or {}),
        items=items,
        strings=strings,
        common_names=common,
        present=frozenset(p for p, statements in claims.items() if truthy(statements)),
    )


def make_item(
    qid: int,
    label: str | None,
    description: str | None,
    aliases: list[str],
    sitelinks: int,
    items: dict[str, list[int]],
    strings: dict[str, list[str]],
    common_names: list[str],
    present: frozenset[str] = frozenset(),
) -> Item:
    """The one constructor both sources use: multi-valued facts are de-duplicated and sorted,
    because a dump lists them in statement order while SPARQL answers in no order at all."""
    return Item(
        qid=qid,
        label=label,
        description=description,
        aliases=tuple(sorted(set(aliases))),
        sitelinks=sitelinks,
        items={p: tuple(sorted(set(v))) for p, v in items.items() if v},
        strings={p: tuple(sorted(set(v))) for p, v in strings.items() if v},
        common_names=tuple(sorted(set(common_names))),
        present=present,
    )


def parse_line(line: bytes) -> Item | None:
    """A dump line (`{...},` with the trailing comma, or the `[`/`]` framing) to an Item."""
    line = line.strip()
    if line.endswith(b","):
        line = line[:-1]
    if not line.startswith(b"{"):
        return None
    return from_entity(orjson.loads(line))


def to_record(item: Item) -> dict[str, Any]:
    """The item as plain JSON data (for the scan's spill file): no code runs when it is read back."""
    return {
        "qid": item.qid,
        "label": item.label,
        "description": item.description,
        "aliases": item.aliases,
        "sitelinks": item.sitelinks,
        "items": item.items,
        "strings": item.strings,
        "common_names": item.common_names,
        "present": sorted(item.present),
    }


def from_record(data: dict[str, Any]) -> Item:
    """The inverse of `to_record`: JSON lists back to the tuples and frozenset an Item holds."""
    return Item(
        qid=data["qid"],
        label=data["label"],
        description=data["description"],
        aliases=tuple(data["aliases"]),
        sitelinks=data["sitelinks"],
        items={p: tuple(v) for p, v in data["items"].items()},
        strings={p: tuple(v) for p, v in data["strings"].items()},
        common_names=tuple(data["common_names"]),
        present=frozenset(data["present"]),
    )
