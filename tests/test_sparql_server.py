"""The loopback SPARQL endpoint used to test the Wikidata SPARQL source offline."""

import json
import threading
import time

import httpx
import pytest
from rdflib import BNode, Literal, URIRef, Variable
from rdflib import namespace as ns
from rdflib.plugins.sparql import evalutils, prepareQuery
from rdflib.plugins.sparql.sparql import FrozenDict

from sparql_server import (
    DATA,
    GEO,
    SCHEMA,
    WD,
    WDNO,
    WDT,
    WIKIBASE,
    SparqlServer,
    _hashed_join,
    _hashed_minus,
    entities_to_graph,
    prepare,
    read_entities,
)

PREFIXES = """PREFIX wd: <http://www.wikidata.org/entity/>
PREFIX wdt: <http://www.wikidata.org/prop/direct/>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX schema: <http://schema.org/>
PREFIX skos: <http://www.w3.org/2004/02/skos/core#>
PREFIX wikibase: <http://wikiba.se/ontology#>
"""
SPARQL = {"Content-Type": "application/sparql-query", "Accept": "application/sparql-results+json"}


def claim(prop: str, value, rank: str = "normal", snaktype: str = "value", datatype: str | None = None):
    if isinstance(value, str) and value[:1] == "Q" and value[1:].isdigit():
        datavalue = {"value": {"entity-type": "item", "id": value}, "type": "wikibase-entityid"}
    elif isinstance(value, dict) and "text" in value:
        datavalue = {"value": value, "type": "monolingualtext"}
    elif isinstance(value, dict) and "latitude" in value:
        datavalue = {"value": value, "type": "globecoordinate"}
    else:
        datavalue = {"value": value, "type": "string"}
    snak = {"snaktype": snaktype, "property": prop, "datavalue": datavalue}
    if datatype:
        snak["datatype"] = datatype
    if snaktype != "value":
        del snak["datavalue"]
    return {"mainsnak": snak, "type": "statement", "rank": rank}


def item(qid: str, label: str | None = None, claims=(), sitelinks=(), **extra):
    """A dump-format entity; `claims` are (prop, value) pairs or claim() dicts."""
    grouped: dict[str, list] = {}
    for c in claims:
        c = c if isinstance(c, dict) else claim(*c)
        grouped.setdefault(c["mainsnak"]["property"], []).append(c)
    entity = {
        "type": "item",
        "id": qid,
        "labels": {"en": {"language": "en", "value": label}} if label else {},
        "descriptions": {},
        "aliases": {},
        "claims": grouped,
        "sitelinks": {s: {"site": s, "title": t, "badges": []} for s, t in sitelinks},
    }
    entity.update(extra)
    return entity


# animal <- mammal <- cat (P279); felid taxon chain via P171; a pet cat instance via P31;
# a human (excluded by MINUS); a mythical cat (excluded); something unrelated.
TINY = [
    item("Q729", "animal", sitelinks=[("enwiki", "Animal"), ("dewiki", "Tiere")]),
    item("Q7377", "mammal", [("P279", "Q729")]),
    item("Q146", "house cat", [("P279", "Q7377"), ("P18", "Cat poster 1.jpg")], [("enwiki", "Cat")]),
    item("Q25265", "Felidae", [("P171", "Q729")]),
    item("Q132186", "Lynx", [("P171", "Q25265")]),
    item("Q1001", "Tibbles", [("P31", "Q146")]),
    item("Q5", "human", [("P279", "Q7377")]),
    item("Q42", "Douglas Adams", [("P31", "Q5")]),
    item("Q24334299", "mythical creature"),
    item("Q2000", "Cait Sith", [("P31", "Q146"), ("P31", "Q24334299")]),
    item("Q3962", "laptop"),
]

ANIMALS = """
SELECT DISTINCT ?ent WHERE {
  { ?ent (wdt:P31/wdt:P279*)|wdt:P279+ wd:Q729 } UNION { ?ent wdt:P171+ wd:Q729 }
  MINUS { ?ent (wdt:P31/wdt:P279*)|wdt:P279+ wd:Q5 }
  MINUS { ?ent (wdt:P31/wdt:P279*)|wdt:P279+ wd:Q24334299 }
}"""


def rows(response: httpx.Response, var: str) -> list[str]:
    assert response.status_code == 200, response.text
    return [b[var]["value"] for b in response.json()["results"]["bindings"] if var in b]


def qids(response: httpx.Response, var: str = "ent") -> set[str]:
    return {v.rsplit("/", 1)[-1] for v in rows(response, var)}


@pytest.fixture(scope="module")
def qlever():
    with SparqlServer(TINY, dialect="qlever") as srv:
        yield srv


@pytest.fixture(scope="module")
def wdqs():
    with SparqlServer(TINY, dialect="wdqs") as srv:
        yield srv


def post(srv: SparqlServer, query: str, **headers) -> httpx.Response:
    return httpx.post(srv.url, content=query, headers={**SPARQL, **headers}, timeout=10)


# -- conversion -----------------------------------------------------------------------------


def test_truthy_claims_preferred_beats_normal_and_deprecated_is_dropped():
    entity = item(
        "Q1",
        "x",
        [
            claim("P31", "Q10", rank="normal"),
            claim("P31", "Q11", rank="preferred"),
            claim("P31", "Q12", rank="deprecated"),
            claim("P279", "Q20"),
            claim("P279", "Q21"),
            claim("P279", "Q22", rank="deprecated"),
            claim("P171", "Q30", rank="deprecated"),
            claim("P105", None, snaktype="novalue"),
            claim("P225", "Felis catus", datatype="string"),
            claim("P846", "2435035", datatype="external-id"),
            claim("P1582", "Q40"),  # a preferred "unknown value" hides the normal value, as in Wikibase
            claim("P1582", None, rank="preferred", snaktype="somevalue"),
        ],
    )
    g = entities_to_graph([entity])
    assert set(g.objects(WD.Q1, WDT.P31)) == {WD.Q11}
    assert set(g.objects(WD.Q1, WDT.P279)) == {WD.Q20, WD.Q21}
    assert not set(g.objects(WD.Q1, WDT.P171))
    assert not set(g.objects(WD.Q1, WDT.P105))
    assert set(g.objects(WD.Q1, ns.RDF.type)) == {WDNO.P105}
    assert set(g.objects(WD.Q1, WDT.P225)) == {Literal("Felis catus")}
    assert set(g.objects(WD.Q1, WDT.P846)) == {Literal("2435035")}
    assert not set(g.objects(WD.Q1, WDT.P1582))
    # unknown values: a skolem IRI on WDQS, a blank node on QLever
    (wdqs_value,) = entities_to_graph([entity], somevalue="iri").objects(WD.Q1, WDT.P1582)
    assert wdqs_value.startswith("http://www.wikidata.org/.well-known/genid/")
    (qlever_value,) = entities_to_graph([entity], somevalue="bnode").objects(WD.Q1, WDT.P1582)
    assert isinstance(qlever_value, BNode)


def test_unknown_values_in_results_per_dialect():
    entity = item("Q1", "x", [claim("P171", None, snaktype="somevalue"), claim("P171", "Q2")])
    query = PREFIXES + "SELECT ?v WHERE { wd:Q1 wdt:P171 ?v }"
    for dialect, kinds in (("wdqs", ["uri", "uri"]), ("qlever", ["bnode", "uri"])):
        with SparqlServer([entity], dialect=dialect) as srv:
            assert sorted(b["v"]["type"] for b in _bindings(post(srv, query))) == kinds


def test_labels_descriptions_aliases_in_all_languages():
    entity = item(
        "Q146",
        labels={
            "en": {"language": "en", "value": "house cat"},
            "de": {"language": "de", "value": "Hauskatze"},
        },
        descriptions={"en": {"language": "en", "value": "domesticated feline"}},
        aliases={"en": [{"language": "en", "value": "cat"}, {"language": "en", "value": "domestic cat"}]},
    )
    g = entities_to_graph([entity])
    assert set(g.objects(WD.Q146, ns.RDFS.label)) == {
        Literal("house cat", lang="en"),
        Literal("Hauskatze", lang="de"),
    }
    assert set(g.objects(WD.Q146, SCHEMA.description)) == {Literal("domesticated feline", lang="en")}
    assert set(g.objects(WD.Q146, ns.SKOS.altLabel)) == {
        Literal("cat", lang="en"),
        Literal("domestic cat", lang="en"),
    }


def test_value_types_p18_iri_monolingual_and_coordinates():
    entity = item(
        "Q1",
        claims=[
            claim("P18", "Cat (Felis catus) à Paris.jpg", datatype="commonsMedia"),
            claim("P18", "no datatype given.png"),  # P18 is commonsMedia even without the datatype
            claim("P1843", {"text": "house cat", "language": "en"}),
            claim(
                "P625", {"latitude": 48.5, "longitude": 2.25, "globe": "http://www.wikidata.org/entity/Q2"}
            ),
        ],
    )
    g = entities_to_graph([entity])
    assert set(g.objects(WD.Q1, WDT.P18)) == {
        URIRef(
            "http://commons.wikimedia.org/wiki/Special:FilePath/Cat%20%28Felis%20catus%29%20%C3%A0%20Paris.jpg"
        ),
        URIRef("http://commons.wikimedia.org/wiki/Special:FilePath/no%20datatype%20given.png"),
    }
    assert set(g.objects(WD.Q1, WDT.P1843)) == {Literal("house cat", lang="en")}
    assert set(g.objects(WD.Q1, WDT.P625)) == {Literal("Point(2.25 48.5)", datatype=GEO.wktLiteral)}


def test_sitelinks_both_patterns(qlever, wdqs):
    g = entities_to_graph([item("Q146", "cat", sitelinks=[("enwiki", "House cat"), ("frwiki", "Chat")])])
    assert (URIRef("https://en.wikipedia.org/wiki/House_cat"), SCHEMA.about, WD.Q146) in g
    assert (URIRef("https://fr.wikipedia.org/wiki/Chat"), SCHEMA.about, WD.Q146) in g
    assert (DATA.Q146, SCHEMA.about, WD.Q146) in g
    assert set(g.objects(DATA.Q146, WIKIBASE.sitelinks)) == {Literal(2, datatype=ns.XSD.integer)}
    assert set(g.objects(WD.Q146, WIKIBASE.sitelinks)) == {Literal(2, datatype=ns.XSD.integer)}
    ql = PREFIXES + "SELECT ?n WHERE { wd:Q729 ^schema:about/wikibase:sitelinks ?n }"
    assert rows(post(qlever, ql), "n") == ["2"]
    assert rows(post(wdqs, "SELECT ?n WHERE { wd:Q729 wikibase:sitelinks ?n }"), "n") == ["2"]
    assert rows(post(wdqs, "SELECT ?n WHERE { wd:Q3962 wikibase:sitelinks ?n }"), "n") == ["0"]


def test_read_entities_accepts_dump_lines_and_jsonl(tmp_path):
    dump = tmp_path / "dump.json"
    dump.write_text("[\n" + json.dumps(TINY[0]) + ",\n" + json.dumps(TINY[1]) + "\n]\n")
    assert [e["id"] for e in read_entities(dump)] == ["Q729", "Q7377"]


# -- queries --------------------------------------------------------------------------------


def test_property_paths_with_minus(qlever):
    # Q5 (human) is itself a subclass of mammal: MINUS drops what is *below* Q5, not Q5 itself
    found = qids(post(qlever, PREFIXES + ANIMALS))
    assert found == {"Q7377", "Q146", "Q1001", "Q25265", "Q132186", "Q5"}


def test_entity_pattern_with_optional_group_concat_values_bind(qlever):
    query = (
        PREFIXES
        + """
SELECT ?ent ?label (GROUP_CONCAT(DISTINCT ?image; separator=";") AS ?images) (MAX(?l) AS ?links) ?tag
WHERE {
  VALUES ?ent { wd:Q146 wd:Q729 wd:Q3962 }
  ?ent @en@rdfs:label ?label .
  OPTIONAL { ?ent wdt:P18 ?image }
  OPTIONAL { ?ent ^schema:about/wikibase:sitelinks ?l }
  BIND("x" AS ?tag)
}
GROUP BY ?ent ?label ?tag ORDER BY DESC(?links) ?label"""
    )
    response = post(qlever, query)
    assert rows(response, "label") == ["animal", "house cat", "laptop"]
    images = rows(response, "images")
    assert images[1] == "http://commons.wikimedia.org/wiki/Special:FilePath/Cat%20poster%201.jpg"
    assert rows(response, "links") == ["2", "1", "0"]


def test_qlever_language_shortcut_and_wdqs_rejects_it(qlever, wdqs):
    entity = item(
        "Q1",
        labels={"en": {"language": "en", "value": "cat"}, "de": {"language": "de", "value": "Katze"}},
        aliases={"en": [{"language": "en", "value": "kitty"}], "fr": [{"language": "fr", "value": "minou"}]},
        claims=[
            claim("P31", "Q2"),
            claim("P1843", {"text": "house cat", "language": "en"}),
            claim("P1843", {"text": "Hauskatze", "language": "de"}),
        ],
    )
    query = (
        PREFIXES
        + """SELECT ?label ?alias ?common WHERE {
  ?x wdt:P31 wd:Q2 ; @en@rdfs:label ?label .
  OPTIONAL { ?x @en@skos:altLabel ?alias }
  OPTIONAL { ?x @en@wdt:P1843 ?common }   # comment with @de@rdfs:label inside
  FILTER(?label != "@en@rdfs:label")
}"""
    )
    with SparqlServer([entity], dialect="qlever") as srv:
        response = post(srv, query)
        assert [
            (b["label"]["value"], b["alias"]["value"], b["common"]["value"]) for b in _bindings(response)
        ] == [("cat", "kitty", "house cat")]
        assert _bindings(response)[0]["label"] == {"type": "literal", "value": "cat", "xml:lang": "en"}
    response = post(wdqs, query)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")


def _bindings(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["results"]["bindings"]


def test_language_shortcut_rewrite_keeps_the_query_valid():
    query = PREFIXES + (
        "SELECT * { ?x @en@rdfs:label ?l ; wdt:P2 1.5 ; @de-ch@skos:altLabel ?a . "
        "OPTIONAL { ?x @en@schema:description ?d } ?x wdt:P3 '@en@rdfs:label' }"
    )
    rewritten = prepare(query, "qlever")
    assert 'FILTER(LANG(?l) = "en")' in rewritten
    assert 'FILTER(LANG(?a) = "de-ch")' in rewritten
    assert 'FILTER(LANG(?d) = "en")' in rewritten
    assert "'@en@rdfs:label'" in rewritten  # strings are left alone
    prepareQuery(rewritten)  # parses


def test_standard_language_filter_on_both_dialects(qlever, wdqs):
    query = PREFIXES + 'SELECT ?l WHERE { wd:Q146 rdfs:label ?l FILTER(LANG(?l) = "en") }'
    assert rows(post(qlever, query), "l") == rows(post(wdqs, query), "l") == ["house cat"]


def test_undeclared_prefixes_predeclared_on_wdqs_and_refused_on_qlever(qlever, wdqs):
    query = (
        "SELECT ?n WHERE { wd:Q729 rdfs:label ?l ; wikibase:sitelinks ?n . hint:Prior hint:rangeSafe true . }"
    )
    assert rows(post(wdqs, query), "n") == ["2"]
    response = post(qlever, query)
    assert response.status_code == 400
    assert "not declared" in response.text
    # a prefix WDQS does not know is a 400 there too
    assert post(wdqs, "SELECT ?x WHERE { ?x foo:bar ?y }").status_code == 400


def test_schema_prefix_is_http_not_rdflibs_https():
    assert "PREFIX schema: <http://schema.org/>" in prepare("SELECT * { ?a schema:about ?b }", "wdqs")


def test_syntax_errors_are_400_and_service_is_refused(qlever):
    assert post(qlever, "SELEKT ?x WHERE { ?x ?p ?o }").status_code == 400
    service = PREFIXES + "SELECT ?x WHERE { SERVICE <http://example.org/sparql> { ?x ?p ?o } }"
    assert post(qlever, service).status_code == 400


# -- protocol and formats -------------------------------------------------------------------

LABEL_QUERY = (
    PREFIXES
    + """PREFIX xsd: <http://www.w3.org/2001/XMLSchema#>
SELECT ?ent ?label ?n ?none ?text WHERE {
  VALUES ?ent { wd:Q729 }
  ?ent rdfs:label ?label ; wikibase:sitelinks ?n .
  OPTIONAL { ?ent wdt:P999 ?none }
  BIND("tab\\there \\"quoted\\"" AS ?text)
}"""
)


def test_json_results_are_the_w3c_shape(qlever):
    response = post(qlever, LABEL_QUERY)
    assert response.headers["content-type"].startswith("application/sparql-results+json")
    assert response.json() == {
        "head": {"vars": ["ent", "label", "n", "none", "text"]},
        "results": {
            "bindings": [
                {
                    "ent": {"type": "uri", "value": "http://www.wikidata.org/entity/Q729"},
                    "label": {"type": "literal", "value": "animal", "xml:lang": "en"},
                    "n": {
                        "type": "literal",
                        "value": "2",
                        "datatype": "http://www.w3.org/2001/XMLSchema#integer",
                    },
                    "text": {"type": "literal", "value": 'tab\there "quoted"'},
                }
            ]
        },
    }


def test_tsv_results_are_the_w3c_shape(qlever):
    response = post(qlever, LABEL_QUERY, Accept="text/tab-separated-values")
    assert response.headers["content-type"].startswith("text/tab-separated-values")
    assert response.text == (
        "?ent\t?label\t?n\t?none\t?text\n"
        '<http://www.wikidata.org/entity/Q729>\t"animal"@en\t'
        '"2"^^<http://www.w3.org/2001/XMLSchema#integer>\t\t"tab\\there \\"quoted\\""\n'
    )


def test_get_form_post_and_accept_negotiation(wdqs):
    query = "SELECT ?l WHERE { wd:Q3962 rdfs:label ?l }"
    expect = ["laptop"]
    assert rows(httpx.get(wdqs.url, params={"query": query}), "l") == expect
    assert rows(httpx.post(wdqs.url, data={"query": query}), "l") == expect
    unknown = httpx.get(wdqs.url, params={"query": query}, headers={"Accept": "application/x-whatever"})
    assert rows(unknown, "l") == expect
    both = httpx.get(wdqs.url, params={"query": query}, headers={"Accept": "text/tab-separated-values, */*"})
    assert both.text == '?l\n"laptop"@en\n'
    assert httpx.get(wdqs.url).status_code == 400
    assert httpx.get(wdqs.url.replace("/sparql", "/api/wikidata"), params={"query": query}).status_code == 404


def test_ask_query(qlever):
    response = post(qlever, PREFIXES + "ASK { wd:Q146 wdt:P279+ wd:Q729 }")
    assert response.json() == {"head": {}, "boolean": True}


# -- request log and faults -----------------------------------------------------------------


def test_request_log_and_max_concurrent():
    with SparqlServer(TINY, dialect="qlever") as srv:
        with httpx.Client(headers={"User-Agent": "kgclip-test/0.1 (me@example.org)"}) as client:
            for _ in range(20):  # quick ones: the next request follows the last byte at once
                client.post(srv.url, content=PREFIXES + "ASK { wd:Q146 wdt:P279 wd:Q7377 }", headers=SPARQL)
            client.post(srv.url, content=PREFIXES + ANIMALS, headers=SPARQL)
        assert len(srv.requests) == 21
        method, path, headers, query = srv.requests[-1]
        assert (method, path, query) == ("POST", "/api/wikidata", PREFIXES + ANIMALS)
        assert headers["user-agent"] == "kgclip-test/0.1 (me@example.org)"
        assert headers["content-type"] == "application/sparql-query"
        assert srv.max_concurrent == 1
        assert all(end is not None and end >= start for start, end in srv.spans)
        assert all(a[1] <= b[0] for a, b in zip(srv.spans, srv.spans[1:], strict=False))

        srv.faults += [("sleep", 0.5), ("sleep", 0.5)]
        threads = [threading.Thread(target=lambda: post(srv, PREFIXES + ANIMALS)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.max_concurrent == 2
        assert len(srv.requests) == 23


def test_status_faults_then_normal_answers(qlever):
    qlever.faults += [
        ("status", 429, {"Retry-After": "1"}),
        ("status", 500, {}),
        ("status", 503, {"Retry-After": "0"}),
    ]
    first = post(qlever, PREFIXES + ANIMALS)
    assert (first.status_code, first.headers["retry-after"]) == (429, "1")
    assert post(qlever, PREFIXES + ANIMALS).status_code == 500
    third = post(qlever, PREFIXES + ANIMALS)
    assert (third.status_code, third.headers["retry-after"]) == (503, "0")
    assert qids(post(qlever, PREFIXES + ANIMALS))
    assert qlever.faults == []


def test_sleep_fault_times_the_client_out_and_does_not_block_shutdown():
    srv = SparqlServer(TINY).start()
    srv.faults.append(("sleep", 30))
    with pytest.raises(httpx.ReadTimeout):
        post_with_timeout(srv, 0.3)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 2


def post_with_timeout(srv: SparqlServer, timeout: float) -> httpx.Response:
    return httpx.post(srv.url, content=PREFIXES + ANIMALS, headers=SPARQL, timeout=timeout)


def test_sleep_fault_then_answers_normally(qlever):
    qlever.faults.append(("sleep", 0.2))
    started = time.monotonic()
    assert len(qids(post(qlever, PREFIXES + ANIMALS))) == 6
    assert time.monotonic() - started >= 0.2


def test_malformed_and_wrong_type_faults(qlever):
    qlever.faults += [("malformed",), ("wrong_type",)]
    malformed = post(qlever, PREFIXES + ANIMALS)
    assert malformed.status_code == 200
    assert malformed.headers["content-type"].startswith("application/sparql-results+json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.text)
    wrong = post(qlever, PREFIXES + ANIMALS)
    assert wrong.status_code == 200
    assert wrong.headers["content-type"].startswith("text/html")


def test_slow_body_and_close_faults(qlever):
    qlever.faults.append(("slow_body", 1.0))  # headers at once, then nothing for a second
    with pytest.raises(httpx.ReadTimeout):
        post_with_timeout(qlever, 0.5)
    qlever.faults.append(("slow_body", 0.01))
    assert len(qids(post(qlever, PREFIXES + ANIMALS))) == 6
    qlever.faults.append(("close",))
    with pytest.raises(httpx.RemoteProtocolError):
        post(qlever, PREFIXES + ANIMALS)
    assert len(qids(post(qlever, PREFIXES + ANIMALS))) == 6


def test_hashed_join_and_minus_agree_with_rdflibs_nested_loops():
    x, y, z = Variable("x"), Variable("y"), Variable("z")
    a, b, c = URIRef("urn:a"), URIRef("urn:b"), URIRef("urn:c")
    left = [FrozenDict(d) for d in ({x: a, y: b}, {x: b}, {x: c, y: c}, {z: a}, {x: c}, {z: a, x: c}, {})]
    right = [FrozenDict(d) for d in ({x: a, y: b}, {y: c, z: b}, {z: c}, {x: b, z: a}, {x: a})]
    expected = list(evalutils._minus(left, right))
    assert list(_hashed_minus(left, right)) == expected
    assert expected == [FrozenDict({x: c}), FrozenDict({z: a, x: c}), FrozenDict({})]
    joined = sorted(map(repr, evalutils._join(left, right)))
    assert sorted(map(repr, _hashed_join(left, right))) == joined
    assert len(joined) == 18


# -- scale ----------------------------------------------------------------------------------


def test_closure_over_a_few_hundred_items_is_fast():
    """A class tree of 300 subclasses and 300 taxa under Q729, 300 instances, humans to exclude."""
    entities = [item("Q729", "animal"), item("Q5", "human", [("P279", "Q729")])]
    for n in range(300):
        parent = "Q729" if n < 10 else f"Q{100000 + n // 10}"
        entities.append(item(f"Q{100000 + n}", f"class {n}", [("P279", parent), ("P18", f"c{n}.jpg")]))
        tparent = "Q729" if n < 10 else f"Q{200000 + n // 10}"
        entities.append(item(f"Q{200000 + n}", f"taxon {n}", [("P171", tparent), ("P18", f"t{n}.jpg")]))
        entities.append(
            item(f"Q{300000 + n}", f"thing {n}", [("P31", f"Q{100000 + n}"), ("P18", f"i{n}.jpg")])
        )
        entities.append(item(f"Q{400000 + n}", f"person {n}", [("P31", "Q5"), ("P18", f"p{n}.jpg")]))
    query = (
        PREFIXES
        + """SELECT ?ent ?label ?image WHERE {
  { ?ent (wdt:P31/wdt:P279*)|wdt:P279+ wd:Q729 } UNION { ?ent wdt:P171+ wd:Q729 }
  MINUS { ?ent (wdt:P31/wdt:P279*)|wdt:P279+ wd:Q5 }
  ?ent @en@rdfs:label ?label . ?ent wdt:P18 ?image .
}"""
    )
    with SparqlServer(entities) as srv:
        started = time.monotonic()
        found = qids(post(srv, query))
        elapsed = time.monotonic() - started
    assert len(found) == 900
    assert "Q5" not in found and "Q400000" not in found
    assert elapsed < 10, elapsed
