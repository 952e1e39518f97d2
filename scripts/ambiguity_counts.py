"""How the ambiguity rules treat the whole living-things selection (WordNet 3.0, 8,861 synsets):
distinct query strings ambiguous outside / inside the domain, and what the entity queries do with
them (qualified, headword, kept, dropped), for the leaves (the method's query set) and for all.

    .venv/bin/python scripts/ambiguity_counts.py

The figures quoted in docs/stages/queries.md come from this script.
"""

from __future__ import annotations

from collections import Counter

from kgclip.config import QueriesConfig, load
from kgclip.kg.wordnet import open_wordnet
from kgclip.kg.wordnet_select import wordnet_entities
from kgclip.text.ambiguity import BOTH, IN_DOMAIN, OUT_OF_DOMAIN, Homonyms
from kgclip.text.kg_types import kg_types
from kgclip.text.queries import Inputs, build


def main() -> None:
    config = load("livingthings")
    entities = wordnet_entities(config.entities.wordnet).entities
    types = {t.entity_id: t for t in kg_types(entities, config)}
    homonyms = Homonyms(open_wordnet(), entities, types, config.queries.ambiguity)
    for scope in ("leaves", "all"):
        chosen = [e for e in entities if scope == "all" or e.is_leaf]
        strings: dict[str, set[str]] = {}
        for e in chosen:
            for name in {n.lower(): n for n in (e.name, *e.aliases)}.values():
                kind = homonyms.verdict(e, name).ambiguity
                strings.setdefault(name.lower(), set()).add(kind)
        out = sum(1 for k in strings.values() if k & {OUT_OF_DOMAIN, BOTH})
        inside = sum(1 for k in strings.values() if k & {IN_DOMAIN, BOTH})
        cfg = QueriesConfig(kinds=["entity"], entities=scope)
        queries, rejects = build(Inputs(chosen, types, [], homonyms), cfg)
        decisions = Counter(q.decision for q in queries)
        dropped = sum(1 for r in rejects if r.reason == "ambiguous")
        homonym = sum(1 for r in rejects if r.reason == "homonym")
        pairs = len(queries) + dropped + homonym
        print(
            f"{scope}: {len(chosen):,} entities, {len(strings):,} distinct strings; ambiguous outside the"
            f" domain {out:,}, inside {inside:,}. {pairs:,} (entity, string) pairs: qualified"
            f" {decisions['qualified']:,}, kept as headword {decisions['headword']:,}, kept (near kin)"
            f" {decisions['kept']:,}, dropped {dropped:,}, unambiguous {decisions['unambiguous']:,};"
            f" {homonym:,} claims on shared strings went to another synset (the method's rule);"
            f" {len({q.entity_id for q in queries}):,} entities keep a query"
        )


if __name__ == "__main__":
    main()
