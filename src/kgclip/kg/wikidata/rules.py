"""The method's Wikidata selection, evaluated over a class/taxon graph (method.md §2, §9).

For a root R an item is a member when it is `(P31/P279*) R` ("instance"), `P279+ R` ("subclass")
or `P171+ R` ("taxon"), as far as the root's `via` allows (the general-domain roots use
subclasses only, and count the root itself: `P279* R`); for plants
also a fruit-like product (`P31|P279` of a product class) linked to a plant taxon by `P1582` on
the product or `P1672` on the taxon. Members are dropped when they are `(P31/P279*)|P279+` of an
excluded class, or carry an excluded property (P625 coordinates for plants). These are the MINUS
clauses of the authors' SPARQL, so the dump source and the SPARQL source agree by construction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from kgclip.kg.wikidata.item import Item

SUBCLASS, PARENT_TAXON, SOURCE_OF = "P279", "P171", "P1672"
GRAPH_PROPS = (SUBCLASS, PARENT_TAXON, SOURCE_OF)


@dataclass(frozen=True)
class RootRule:
    """One root of a harvest (animal, plant, ...) with its exclusions, as numeric QIDs."""

    qid: int
    name: str
    exclude_classes: tuple[int, ...] = ()
    exclude_with: tuple[str, ...] = ()
    product_classes: tuple[int, ...] = ()
    via: tuple[str, ...] = ("instance", "subclass", "taxon")
    include_root: bool = False
    min_sitelinks: int = 0


class Graph:
    """Downward edges of the three trees selection walks: subclasses, child taxa, and products."""

    def __init__(self) -> None:
        self.children: dict[str, dict[int, list[int]]] = {p: defaultdict(list) for p in GRAPH_PROPS}

    def add(self, item: Item) -> None:
        for prop in (SUBCLASS, PARENT_TAXON):
            for parent in item.values(prop):
                self.children[prop][parent].append(item.qid)
        for product in item.values(SOURCE_OF):
            self.children[SOURCE_OF][item.qid].append(product)

    def add_edges(self, prop: str, edges: Iterable[tuple[int, int]]) -> None:
        """(upper, lower) pairs: parent class -> subclass, parent taxon -> taxon, taxon -> product."""
        table = self.children[prop]
        for upper, lower in edges:
            table[upper].append(lower)

    def below(self, prop: str, root: int) -> set[int]:
        """`root` and everything reachable downwards through `prop` (cycles are tolerated)."""
        table = self.children[prop]
        seen = {root}
        stack = [root]
        while stack:
            for child in table.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen


@dataclass
class Selector:
    """Closures for one root, computed once; `verdict` is then a few set lookups per item."""

    rule: RootRule
    classes: set[int]
    taxa: set[int]
    excluded: dict[int, set[int]]
    products: set[int]

    @classmethod
    def build(cls, graph: Graph, rule: RootRule) -> Selector:
        taxa = graph.below(PARENT_TAXON, rule.qid)
        strict_taxa = taxa - {rule.qid}
        products: set[int] = set()
        if rule.product_classes:
            for taxon in strict_taxa:
                products.update(graph.children[SOURCE_OF].get(taxon, ()))
        return cls(
            rule=rule,
            classes=graph.below(SUBCLASS, rule.qid),
            taxa=taxa,
            excluded={x: graph.below(SUBCLASS, x) for x in rule.exclude_classes},
            products=products,
        )

    def is_member(self, item: Item) -> bool:
        via = self.rule.via
        if item.qid == self.rule.qid:
            return self.rule.include_root
        if "instance" in via and any(c in self.classes for c in item.values("P31")):
            return True
        if "subclass" in via and any(c in self.classes for c in item.values(SUBCLASS)):
            return True
        if "taxon" in via and any(t in self.taxa for t in item.values(PARENT_TAXON)):
            return True
        kinds = (*item.values("P31"), *item.values(SUBCLASS))
        if not self.rule.product_classes or not any(c in self.rule.product_classes for c in kinds):
            return False
        linked = any(t in self.taxa and t != self.rule.qid for t in item.values("P1582"))
        return linked or item.qid in self.products

    def exclusion(self, item: Item) -> tuple[str, str] | None:
        """(reason, detail) when a MINUS clause removes the member, else None."""
        kinds = (*item.values("P31"), *item.values(SUBCLASS))
        for excluded, below in self.excluded.items():
            if any(c in below for c in kinds):
                return "excluded_class", f"Q{excluded}"
        for prop in self.rule.exclude_with:
            if prop in item.present:
                return "excluded_property", prop
        return None
