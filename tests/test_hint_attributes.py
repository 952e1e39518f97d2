"""Attributes from Wikidata statements (P462 colour, P527 parts, ...) carried in Entity.kg_hints."""

from kgclip.tables import Entity
from kgclip.text.attributes import hint_lines, prompt_data
from kgclip.text.kg_attributes import hint_attributes, load_vocabulary


def lion(**hints: list[str]) -> Entity:
    return Entity("wd:Q140", "lion", [], "large cat", "wd:Q729", [], True, wikidata="Q140", kg_hints=hints)


def test_statements_become_attributes_with_queries_naming_the_entity():
    rows = hint_attributes(
        [lion(P462=["brown"], P527=["Mane"], P1535=["circus"])], load_vocabulary(), lambda e: "animal"
    )
    got = {(a.category, a.attribute, a.query, a.method) for a in rows}
    assert got == {
        ("Color", "brown", "brown lion", "kg:wikidata-P462"),
        ("Body parts", "mane", "lion mane", "kg:wikidata-P527"),
    }  # P1535 "used by" is a hint for an LLM prompt, not a visual attribute


def test_categories_follow_the_set_and_materials_read_naturally():
    table = Entity(
        "wd:Q14745",
        "table",
        [],
        "furniture",
        "wd:Q14745",
        [],
        True,
        kg_hints={"P186": ["wood"], "P527": ["leg"]},
    )
    rows = hint_attributes([table], load_vocabulary(), lambda e: "generic")
    got = {(a.category, a.query) for a in rows}
    assert got == {("Pattern and texture", "table made of wood"), ("Parts", "table leg")}


def test_no_hints_no_attributes():
    assert hint_attributes([lion()], load_vocabulary(), lambda e: "animal") == []


def test_hints_are_listed_in_the_llm_prompt_as_the_method_did():
    names = prompt_data()["hint_names"]
    assert hint_lines(lion(P462=["brown"], P1034=["zebra", "antelope"]), names) == (
        "main food source: zebra, antelope\ncolor: brown"
    )
    assert hint_lines(lion(), names) == "None"
