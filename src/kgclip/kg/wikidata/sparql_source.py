"""Wikidata selection through a SPARQL endpoint, giving the same `Evaluation` as the dump path.

Per root: one query for the members that survive the MINUS clauses (the authors' pattern), one
query per exclusion clause to record why the others were dropped, then the facts of every
member in VALUES batches. Dialect differences are confined to `Dialect`: QLever's `@en@`
language shortcut and its `^schema:about/wikibase:sitelinks` path, versus WDQS's LANG filters
and `wikibase:sitelinks` on the item.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from kgclip.kg.wikidata.item import EXTERNAL_IDS, ITEM_PROPS, LANG, STRING_PROPS, Item, make_item, qid_number
from kgclip.kg.wikidata.rules import RootRule
from kgclip.kg.wikidata.select import Evaluation
from kgclip.kg.wikidata.sparql import SparqlClient
from kgclip.progress import meter

PREFIXES = """PREFIX wd: <http://www.wikidata.org/entity/>
PREFIX wdt: <http://www.wikidata.org/prop/direct/>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX schema: <http://schema.org/>
PREFIX skos: <http://www.w3.org/2004/02/skos/core#>
PREFIX wikibase: <http://wikiba.se/ontology#>
"""
ENTITY_PREFIX = "http://www.wikidata.org/entity/Q"
FILE_PATH = "/Special:FilePath/"
assert set(EXTERNAL_IDS) <= set(STRING_PROPS)


@dataclass(frozen=True)
class Dialect:
    name: str

    def lang(self, subject: str, predicate: str, var: str) -> str:
        if self.name == "qlever":
            return f"{subject} @{LANG}@{predicate} {var} ."
        return f'{subject} {predicate} {var} . FILTER(LANG({var}) = "{LANG}")'

    def sitelinks(self, subject: str, var: str) -> str:
        if self.name == "qlever":
            return f"{subject} ^schema:about/wikibase:sitelinks {var} ."
        return f"{subject} wikibase:sitelinks {var} ."


def _wd(qid: int) -> str:
    return f"wd:Q{qid}"


def member_pattern(rule: RootRule) -> str:
    """`(P31/P279*) R`, `P279+ R`, `P171+ R` as the root's `via` allows, the root itself when it
    counts, plus products of member taxa for plant-like roots."""
    root = _wd(rule.qid)
    paths = {"instance": "wdt:P31/wdt:P279*", "subclass": "wdt:P279+", "taxon": "wdt:P171+"}
    branches = [f"{{ ?ent {paths[v]} {root} }}" for v in rule.via]
    if rule.include_root:
        branches.append(f"{{ VALUES ?ent {{ {root} }} }}")
    pattern = " UNION ".join(branches)
    if rule.product_classes:
        classes = " ".join(_wd(q) for q in rule.product_classes)
        pattern += (
            f" UNION {{ VALUES ?productClass {{ {classes} }} ?ent wdt:P31|wdt:P279 ?productClass ."
            f" {{ ?ent wdt:P1582 ?sourceTaxon }} UNION {{ ?sourceTaxon wdt:P1672 ?ent }}"
            f" ?sourceTaxon wdt:P171+ {root} }}"
        )
    return pattern


def _required(rule: RootRule, dialect: Dialect, require_image: bool) -> str:
    lines = [] if rule.include_root else [f"FILTER(?ent != {_wd(rule.qid)})"]
    lines.append(dialect.lang("?ent", "rdfs:label", "?label"))
    if require_image:
        lines.append("?ent wdt:P18 ?image .")
    return "\n  ".join(lines)


def _class_clause(qid: int) -> str:
    return f"?ent (wdt:P31/wdt:P279*)|wdt:P279+ {_wd(qid)} ."


def _property_clause(prop: str) -> str:
    return f"?ent wdt:{prop} ?excludedValue ."


def members_query(rule: RootRule, dialect: Dialect, require_image: bool) -> str:
    minus = [f"MINUS {{ {_class_clause(q)} }}" for q in rule.exclude_classes]
    minus += [f"MINUS {{ {_property_clause(p)} }}" for p in rule.exclude_with]
    body = "\n  ".join([member_pattern(rule), _required(rule, dialect, require_image), *minus])
    return f"{PREFIXES}SELECT DISTINCT ?ent WHERE {{\n  {body}\n}}"


def exclusion_queries(rule: RootRule, dialect: Dialect, require_image: bool) -> list[tuple[str, str, str]]:
    """(reason, detail, query) per MINUS clause, in the order the dump path reports them."""
    clauses = [("excluded_class", f"Q{q}", _class_clause(q)) for q in rule.exclude_classes]
    clauses += [("excluded_property", p, _property_clause(p)) for p in rule.exclude_with]
    out = []
    for reason, detail, clause in clauses:
        body = "\n  ".join([member_pattern(rule), _required(rule, dialect, require_image), clause])
        out.append((reason, detail, f"{PREFIXES}SELECT DISTINCT ?ent WHERE {{\n  {body}\n}}"))
    return out


def facts_query(qids: Iterable[int], dialect: Dialect) -> str:
    values = " ".join(_wd(q) for q in qids)
    props = " ".join(f'(wdt:{p} "{p}")' for p in (*ITEM_PROPS, *STRING_PROPS))
    branches = [
        f'{dialect.lang("?ent", "rdfs:label", "?value")} BIND("label" AS ?key)',
        f'{dialect.lang("?ent", "schema:description", "?value")} BIND("description" AS ?key)',
        f'{dialect.lang("?ent", "skos:altLabel", "?value")} BIND("alias" AS ?key)',
        f'{dialect.lang("?ent", "wdt:P1843", "?value")} BIND("P1843" AS ?key)',
        f"VALUES (?p ?key) {{ {props} }} ?ent ?p ?value .",
        f'{dialect.sitelinks("?ent", "?value")} BIND("sitelinks" AS ?key)',
    ]
    union = "\n  UNION ".join(f"{{ {b} }}" for b in branches)
    return f"{PREFIXES}SELECT ?ent ?key ?value WHERE {{\n  VALUES ?ent {{ {values} }}\n  {union}\n}}"


def labels_query(qids: Iterable[int], dialect: Dialect) -> str:
    values = " ".join(_wd(q) for q in qids)
    label = dialect.lang("?ent", "rdfs:label", "?label")
    return f"{PREFIXES}SELECT ?ent ?label WHERE {{\n  VALUES ?ent {{ {values} }}\n  {label}\n}}"


def sparql_labels(client: SparqlClient, qids: set[int], batch_size: int) -> dict[int, str]:
    """English labels of the items hint properties point at, in VALUES batches."""
    dialect = Dialect(client.endpoint.dialect)
    wanted = sorted(qids)
    labels: dict[int, str] = {}
    for start in range(0, len(wanted), batch_size):
        for row in client.select(labels_query(wanted[start : start + batch_size], dialect)):
            labels.setdefault(_qid(row["ent"]), row["label"]["value"])
    return labels


def _qid(binding: dict[str, Any]) -> int:
    value = binding["value"]
    if not value.startswith(ENTITY_PREFIX):
        raise ValueError(f"not a Wikidata item: {value}")
    return qid_number(value[len(ENTITY_PREFIX) - 1 :])


def _is_item(binding: dict[str, Any]) -> bool:
    """Unknown values come back as blank nodes (QLever) or `.well-known/genid` IRIs (WDQS)."""
    return binding["type"] == "uri" and binding["value"].startswith(ENTITY_PREFIX)


def _string(prop: str, binding: dict[str, Any]) -> str:
    """Literal values as they are in the dump; images come back as Commons FilePath IRIs."""
    value = binding["value"]
    if prop == "P18" and FILE_PATH in value:
        return unquote(value.split(FILE_PATH, 1)[1]).replace("_", " ")
    return value


def items_from_facts(bindings: list[dict[str, Any]]) -> dict[int, Item]:
    facts: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for row in bindings:
        facts[_qid(row["ent"])][row["key"]["value"]].append(row["value"])
    items = {}
    for qid, by_key in facts.items():
        first = {k: v[0]["value"] for k, v in by_key.items() if v}
        items[qid] = make_item(
            qid=qid,
            label=first.get("label"),
            description=first.get("description"),
            aliases=[v["value"] for v in by_key.get("alias", [])],
            sitelinks=int(first.get("sitelinks", 0)),
            items={p: [_qid(v) for v in by_key.get(p, []) if _is_item(v)] for p in ITEM_PROPS},
            strings={p: [_string(p, v) for v in by_key.get(p, [])] for p in STRING_PROPS},
            common_names=[v["value"] for v in by_key.get("P1843", [])],
        )
    return items


def sparql_evaluate(
    client: SparqlClient, rules: list[RootRule], require_image: bool, batch_size: int
) -> Evaluation:
    dialect = Dialect(client.endpoint.dialect)
    member_ids: dict[int, list[int]] = {}
    excluded: dict[int, tuple[str, str]] = {}
    for rule in rules:
        member_ids[rule.qid] = sorted(
            {_qid(b["ent"]) for b in client.select(members_query(rule, dialect, require_image))}
        )
        for reason, detail, query in exclusion_queries(rule, dialect, require_image):
            for qid in sorted({_qid(b["ent"]) for b in client.select(query)}):
                excluded.setdefault(qid, (reason, detail))
    wanted = sorted({q for ids in member_ids.values() for q in ids})
    items: dict[int, Item] = {}
    with meter("wikidata facts (items)", len(wanted)) as m:
        for start in range(0, len(wanted), batch_size):
            batch = wanted[start : start + batch_size]
            items.update(items_from_facts(client.select(facts_query(batch, dialect))))
            m.advance(len(batch))
    missing = [q for q in wanted if q not in items]
    if missing:
        raise ValueError(f"the endpoint returned no facts for {len(missing)} members, e.g. Q{missing[0]}")
    return Evaluation({root: [items[q] for q in ids] for root, ids in member_ids.items()}, excluded)
