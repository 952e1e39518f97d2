"""livingthings-llm end to end for filter, types, attributes and queries, against a loopback LLM."""

import re

import orjson
import pytest

from kgclip.config import load_raw, parse
from kgclip.pipeline import harvest
from kgclip.tables import Attribute, FilterVerdict, NaturalType, Query, Rejected, read_records
from kgclip.text.attributes import merge_models
from kgclip.workdir import Workdir
from llm_server import ChatServer

STAGES = ("entities", "filter", "types", "attributes", "queries")


def respond(req: dict) -> str:
    """A stand-in model that reads kgclip's real prompts the way an LLM would."""
    prompt = req["messages"][-1]["content"] if len(req["messages"]) == 1 else req["messages"][0]["content"]
    if prompt.rstrip().endswith("->"):  # the filter
        entity = prompt.rstrip().splitlines()[-1]
        return "false" if entity.startswith("puppy") else "true"
    if "List of types:" in prompt:  # natural types: prefer "dog", else the first candidate
        block = prompt.split("List of types:\n", 1)[1].split("\nNatural type:", 1)[0]
        lines = [(line.split(" (", 1)[0], line.rsplit(" ", 1)[1]) for line in block.splitlines()]
        name, ident = next((x for x in lines if x[0] == "dog"), lines[0])
        return f"{name} {ident}"
    name = re.search(r"Entity: (.+?) \(", prompt).group(1)
    categories = re.findall(r"^- ([^:\n]+)", prompt, flags=re.M)
    parts = next(c for c in categories if c.endswith("arts"))  # "Body parts" / "Plant parts" / "Parts"
    return orjson.dumps(
        {
            "Color": [{"attribute": "brown", "query": f"brown {name}"}],
            "Invented category": [{"attribute": "x", "query": f"x {name}"}],  # ignored, not fatal
            parts: [
                {"attribute": "tail", "query": f"{name} tail"},
                {"attribute": "ears", "query": "floppy ears"},  # does not name the entity: dropped
            ],
        }
    ).decode()


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory):
    with ChatServer(responder=respond, api_key=None) as srv:
        raw = load_raw("livingthings-llm")
        raw["entities"]["wordnet"]["roots"] = ["dog.n.01"]
        for section in (raw["filter"]["llm"], raw["types"]["llm"], *raw["attributes"]["llm"]):
            section.update(base_url=srv.url, model="test-model")
        raw["attributes"]["top_n"] = 20
        raw["search"]["corpus"] = {"source": "/nowhere"}
        config = parse(raw)
        wd = Workdir(tmp_path_factory.mktemp("llm") / "work")
        for stage in STAGES:
            harvest(config, wd, only=stage)
        first = srv.count
        for stage in STAGES[1:]:
            harvest(config, wd, only=stage)
        yield wd, first, srv.count - first


def test_filter_records_the_models_verdicts(llm_run):
    wd, _, _ = llm_run
    verdicts = {v.entity_id: v for v in read_records(wd.path("filter.parquet"), FilterVerdict)}
    puppy = verdicts["wn:n01322604"]
    assert not puppy.keep and puppy.method == "llm:test-model"
    assert sum(v.keep for v in verdicts.values()) == len(verdicts) - 1
    rejects = list(read_records(wd.path("rejects/filter.parquet"), Rejected))
    assert [r.item for r in rejects] == ["wn:n01322604"]


def test_types_are_chosen_among_kg_candidates(llm_run):
    wd, _, _ = llm_run
    types = {t.entity_id: t for t in read_records(wd.path("types.parquet"), NaturalType)}
    beagle = types["wn:n02088364"]
    assert (beagle.type_name, beagle.method) == ("dog", "llm:test-model")
    assert "wn:n01322604" not in types  # filtered out
    manifest = wd.load_manifest()["types"].stats
    # the manifest holds the second, fully cached run
    assert manifest["llm"]["cached"] > 0 and manifest["llm"]["requests"] == 0
    assert manifest["llm_fallbacks"]["invalid_answer"] == 0


def test_attributes_keep_only_queries_that_name_the_entity(llm_run):
    wd, _, _ = llm_run
    attrs = list(read_records(wd.path("attributes.parquet"), Attribute))
    assert attrs and all(a.method == "llm:test-model" for a in attrs)
    assert {a.attribute for a in attrs} == {"brown", "tail"}
    assert len({a.entity_id for a in attrs}) == 20
    stats = wd.load_manifest()["attributes"].stats["llm:test-model"]
    assert stats["dropped_no_mention"] == 20 and stats["cached"] == 20


def test_all_three_query_kinds(llm_run):
    wd, _, _ = llm_run
    queries = list(read_records(wd.path("queries.parquet"), Query))
    kinds = {q.kind for q in queries}
    assert kinds == {"entity", "entity_attribute", "type_attribute"}
    type_attr = {q.text for q in queries if q.kind == "type_attribute"}
    assert "brown dog" in type_attr and "dog tail" in type_attr
    attrs = {(a.entity_id, a.query): a for a in read_records(wd.path("attributes.parquet"), Attribute)}
    entity_attr = [q for q in queries if q.kind == "entity_attribute"]
    rejects = read_records(wd.path("rejects/queries.parquet"), Rejected)
    dropped = {(r.item, r.detail.split(" (")[0]) for r in rejects if r.reason == "ambiguous"}
    for entity_id, text in attrs:  # each attribute is a query, or dropped as ambiguous with its reason
        made = any(q.entity_id == entity_id and text in (q.text, q.original_text) for q in entity_attr)
        assert made or (entity_id, repr(text)) in dropped, text
    assert len(entity_attr) + len({d for d in dropped if (d[0], d[1][1:-1]) in attrs}) == len(attrs)
    for q in entity_attr:
        attr = attrs[(q.entity_id, q.original_text or q.text)]
        assert q.attribute == attr.attribute
        assert not any(term in q.text.lower() for term in q.params.or_terms)  # names not already there


def test_a_second_run_sends_nothing(llm_run):
    _, first, second = llm_run
    assert first > 40 and second == 0


def test_merging_models_keeps_the_best_models_query():
    best = [Attribute("e", "Color", "Brown", "brown dog", "llm:a")]
    other = [
        Attribute("e", "Color", "brown", "a brown dog", "llm:b"),
        Attribute("e", "Color", "black", "black dog", "llm:b"),
    ]
    merged = merge_models([best, other])
    assert [(a.attribute, a.query, a.method) for a in merged] == [
        ("Brown", "brown dog", "llm:a"),
        ("black", "black dog", "llm:b"),
    ]
