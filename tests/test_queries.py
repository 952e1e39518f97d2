"""Entity queries: names and aliases, homonym resolution, stable ids, parameters."""

from kgclip.config import QueriesConfig
from kgclip.tables import Attribute, Entity, NaturalType, QueryParams
from kgclip.text.queries import Inputs, build, query_id, type_attribute_text


def ent(wnid: str, name: str, aliases: list[str], wn_name: str, leaf: bool = True) -> Entity:
    return Entity(f"wn:{wnid}", name, aliases, "desc", "wn:n00004258", [], leaf, wnid, wn_name)


CRANE_BIRD = ent("n02012849", "crane", [], "crane.n.05")
CRANE_PLANT = ent("n12565102", "crane", ["Crane"], "crane.n.01")  # made-up pairing for the rule
ROBIN = ent("n01558993", "robin", ["redbreast", "Robin", "robin redbreast"], "robin.n.01")
BIRD = ent("n01503061", "bird", [], "bird.n.01", leaf=False)


def tmap(types: list[NaturalType]) -> dict[str, NaturalType]:
    return {t.entity_id: t for t in types}


TYPES = [NaturalType("wn:n01558993", "wn:n01503061", "bird", [], "warm-blooded", "kg:nearest-popular")]


def test_aliases_become_queries_and_case_variants_are_one_query():
    queries, _ = build(Inputs([ROBIN], tmap(TYPES)), QueriesConfig(photo_only=False))
    assert sorted(q.text for q in queries) == ["redbreast", "robin", "robin redbreast"]
    assert {q.entity_id for q in queries} == {"wn:n01558993"}
    assert all(q.kind == "entity" for q in queries)


def test_only_names_without_aliases_and_a_cap_per_entity():
    assert [q.text for q in build(Inputs([ROBIN], tmap(TYPES)), QueriesConfig(use_aliases=False))[0]] == [
        "robin"
    ]
    assert len(build(Inputs([ROBIN], tmap(TYPES)), QueriesConfig(max_per_entity=2))[0]) == 2


def test_leaves_only_by_default():
    assert build(Inputs([BIRD], tmap([])), QueriesConfig())[0] == []
    assert [q.text for q in build(Inputs([BIRD], tmap([])), QueriesConfig(entities="all"))[0]] == ["bird"]


def test_homonym_goes_to_alphabetically_first_synset_name_and_is_recorded():
    queries, rejects = build(Inputs([CRANE_BIRD, CRANE_PLANT], tmap([])), QueriesConfig())
    assert [(q.text, q.entity_id) for q in queries] == [("crane", "wn:n12565102")]
    assert len(rejects) == 1
    assert rejects[0].item == "wn:n02012849" and rejects[0].reason == "homonym"
    assert "crane.n.01" in rejects[0].detail


def test_params_carry_type_or_term_and_excludes():
    cfg = QueriesConfig(exclude_terms=["cartoon"], photo_only=True)
    queries, _ = build(Inputs([ROBIN], tmap(TYPES)), cfg)
    assert all(q.params == QueryParams(["bird"], ["cartoon"], True) for q in queries)
    plain, _ = build(Inputs([ROBIN], tmap(TYPES)), QueriesConfig(type_or_term=False, photo_only=False))
    assert plain[0].params == QueryParams([], [], False)


def test_query_ids_are_stable_and_depend_on_text_kind_and_params():
    p = QueryParams(["bird"], [], True)
    assert query_id("entity", "robin", p) == query_id("entity", "robin", QueryParams(["bird"], [], True))
    ids = {
        query_id("entity", "robin", p),
        query_id("entity", "Robin", p),
        query_id("type_attribute", "robin", p),
        query_id("entity", "robin", QueryParams([], [], True)),
    }
    assert len(ids) == 4
    # pinned: a change of the id scheme would orphan every ledger and cache
    assert query_id("entity", "robin", QueryParams()) == "16e6f3385a5647019633"


ATTRS = [
    Attribute("wn:n01558993", "Color", "red", "red breast of a robin", "kg:gloss-color"),
    Attribute("wn:n01558993", "Body parts", "wing", "robin wing", "kg:meronym"),
    Attribute("wn:n01558993", "Body parts", "beak", "robin beak", "kg:meronym"),
]
SPARROW = ent("n01529672", "sparrow", [], "sparrow.n.01")
SPARROW_TYPE = NaturalType(SPARROW.id, "wn:n01503061", "bird", [], "", "kg:nearest-popular")


def test_entity_attribute_queries_carry_the_attribute_and_other_names():
    cfg = QueriesConfig(kinds=["entity_attribute"], photo_only=False)
    queries, _ = build(Inputs([ROBIN], tmap(TYPES), ATTRS), cfg)
    by_text = {q.text: q for q in queries}
    assert set(by_text) == {"red breast of a robin", "robin wing", "robin beak"}
    wing = by_text["robin wing"]
    assert (wing.kind, wing.entity_id, wing.attribute) == ("entity_attribute", ROBIN.id, "wing")
    assert wing.params.or_terms == ["redbreast", "robin redbreast"]  # names the query does not contain


def test_type_attribute_queries_are_counted_over_entities_most_frequent_first():
    attrs = [*ATTRS, Attribute(SPARROW.id, "Body parts", "Wing", "sparrow wing", "kg:meronym")]
    cfg = QueriesConfig(kinds=["type_attribute"])
    queries, _ = build(Inputs([ROBIN, SPARROW], tmap([*TYPES, SPARROW_TYPE]), attrs), cfg)
    assert [q.text for q in queries][:1] == ["bird wing"]  # two entities share it
    assert {q.text for q in queries} == {"bird wing", "red bird", "bird beak"}
    assert all(q.entity_id is None and q.kind == "type_attribute" for q in queries)


def test_type_attribute_text():
    assert type_attribute_text("striped", "Pattern and texture", "cat") == "striped cat"
    assert type_attribute_text("bark", "Plant parts", "tree") == "tree bark"
    assert type_attribute_text("flowers", "Plant parts", "flower") is None
    assert type_attribute_text("flower", "Plant parts", "flower") is None


def test_budget_caps_per_kind_and_per_entity_are_recorded():
    cfg = QueriesConfig(
        kinds=["entity_attribute", "type_attribute"],
        max_per_kind={"type_attribute": 1},
        max_attribute_queries_per_entity=2,
    )
    queries, rejects = build(Inputs([ROBIN], tmap(TYPES), ATTRS), cfg)
    assert sum(q.kind == "entity_attribute" for q in queries) == 2
    assert sum(q.kind == "type_attribute" for q in queries) == 1
    assert sorted(r.reason for r in rejects) == ["budget_per_entity", "budget_per_kind", "budget_per_kind"]


def test_a_duplicate_query_is_dropped_with_a_recorded_reason():
    """Two attribute rows that make the same query: one query, and the other in the rejects."""
    attrs = [
        Attribute("wn:n01558993", "Body parts", "wing", "robin wing", "kg:meronym"),
        Attribute("wn:n01558993", "Parts", "wings", "robin wing", "kg:gloss"),
    ]
    cfg = QueriesConfig(kinds=["entity_attribute"])
    queries, rejects = build(Inputs([ROBIN], tmap(TYPES), attrs), cfg)
    assert [q.text for q in queries] == ["robin wing"]
    assert [(r.stage, r.item, r.reason) for r in rejects] == [("queries", ROBIN.id, "duplicate")]
    kept = queries[0].query_id
    assert rejects[0].detail == f"'robin wing' (attribute 'wings') is already query {kept} of {ROBIN.id}"
