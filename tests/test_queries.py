"""Entity queries: names and aliases, homonym resolution, stable ids, parameters."""

from kgclip.config import QueriesConfig
from kgclip.tables import Entity, NaturalType, QueryParams
from kgclip.text.queries import build, query_id


def ent(wnid: str, name: str, aliases: list[str], wn_name: str, leaf: bool = True) -> Entity:
    return Entity(f"wn:{wnid}", name, aliases, "desc", "wn:n00004258", [], leaf, wnid, wn_name)


CRANE_BIRD = ent("n02012849", "crane", [], "crane.n.05")
CRANE_PLANT = ent("n12565102", "crane", ["Crane"], "crane.n.01")  # made-up pairing for the rule
ROBIN = ent("n01558993", "robin", ["redbreast", "Robin", "robin redbreast"], "robin.n.01")
BIRD = ent("n01503061", "bird", [], "bird.n.01", leaf=False)
TYPES = [NaturalType("wn:n01558993", "wn:n01503061", "bird", [], "warm-blooded", "kg:nearest-popular")]


def test_aliases_become_queries_and_case_variants_are_one_query():
    queries, _ = build([ROBIN], TYPES, QueriesConfig(photo_only=False))
    assert [q.text for q in queries] == ["redbreast", "robin", "robin redbreast"]
    assert {q.entity_id for q in queries} == {"wn:n01558993"}
    assert all(q.kind == "entity" for q in queries)


def test_only_names_without_aliases_and_a_cap_per_entity():
    assert [q.text for q in build([ROBIN], TYPES, QueriesConfig(use_aliases=False))[0]] == ["robin"]
    assert len(build([ROBIN], TYPES, QueriesConfig(max_per_entity=2))[0]) == 2


def test_leaves_only_by_default():
    assert build([BIRD], [], QueriesConfig())[0] == []
    assert [q.text for q in build([BIRD], [], QueriesConfig(entities="all"))[0]] == ["bird"]


def test_homonym_goes_to_alphabetically_first_synset_name_and_is_recorded():
    queries, rejects = build([CRANE_BIRD, CRANE_PLANT], [], QueriesConfig())
    assert [(q.text, q.entity_id) for q in queries] == [("crane", "wn:n12565102")]
    assert len(rejects) == 1
    assert rejects[0].item == "wn:n02012849" and rejects[0].reason == "homonym"
    assert "crane.n.01" in rejects[0].detail


def test_params_carry_type_or_term_and_excludes():
    cfg = QueriesConfig(exclude_terms=["cartoon"], photo_only=True)
    queries, _ = build([ROBIN], TYPES, cfg)
    assert all(q.params == QueryParams(["bird"], ["cartoon"], True) for q in queries)
    plain, _ = build([ROBIN], TYPES, QueriesConfig(type_or_term=False, photo_only=False))
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
