"""Homonyms of query strings against the real WordNet 3.0 living-things selection (issue 14)."""

import functools

import pytest

from kgclip.config import AmbiguityConfig, QueriesConfig, load
from kgclip.kg.wordnet import open_wordnet
from kgclip.kg.wordnet_select import wordnet_entities
from kgclip.pipeline import STAGES
from kgclip.tables import Attribute, Entity, NaturalType
from kgclip.text.ambiguity import IN_DOMAIN, NONE, OUT_OF_DOMAIN, Homonyms, singulars
from kgclip.text.kg_types import kg_types
from kgclip.text.queries import Inputs, build


@functools.cache
def selection() -> tuple[dict[str, Entity], dict[str, NaturalType]]:
    """The livingthings config's selection (8,861 synsets) and its kg natural types; under a second."""
    config = load("livingthings")
    entities = wordnet_entities(config.entities.wordnet).entities
    return {e.wordnet_name: e for e in entities}, {t.entity_id: t for t in kg_types(entities, config)}


def judge(**cfg) -> Homonyms:
    by_name, types = selection()
    return Homonyms(open_wordnet(), list(by_name.values()), types, AmbiguityConfig(**cfg))


def entity(wn_name: str) -> Entity:
    return selection()[0][wn_name]


def test_every_noun_sense_in_order_with_the_lemma_tag_count():
    senses = open_wordnet().noun_senses("flag")
    assert [s.number for s in senses] == list(range(1, 8))
    assert (senses[0].offset, senses[0].tag_count) == (3354903, 31)  # the emblem
    assert (senses[2].offset, senses[2].tag_count) == (12411922, 1)  # iris.n.01, named "flag" once
    assert open_wordnet().noun_senses("Bird of prey") == open_wordnet().noun_senses("bird_of_prey")


@pytest.mark.parametrize(
    ("wn_name", "text", "other", "qualifier"),
    [
        ("chess.n.01", "chess", "n00503237 chess: a board game", "grass"),
        ("hobby.n.03", "hobby", "n00432689 avocation: an auxiliary activity", "falcon"),
        ("iris.n.01", "flag", "n03354903 flag: emblem", "plant"),
        ("giant.n.01", "giant", "n09938991 colossus: a person of exceptional importance", "animal"),
        ("blue.n.07", "blue", "n04968895 blue: blue color", "butterfly"),
    ],
)
def test_names_of_something_outside_the_selection_are_out_of_domain(wn_name, text, other, qualifier):
    verdict = judge().verdict(entity(wn_name), text)
    assert verdict.ambiguity == OUT_OF_DOMAIN
    assert any(s.startswith(other) for s in verdict.senses)
    assert verdict.qualifier == qualifier


def test_giant_is_not_qualified_by_a_kind_that_a_giant_person_also_is():
    """"organism" would fit the creature, but a very large person is an organism too."""
    verdict = judge().verdict(entity("giant.n.01"), "giant")
    assert verdict.qualifier == "animal"
    assert "organism" in judge()._kind_words(9938991)


@pytest.mark.parametrize(
    ("wn_name", "text"),
    [
        ("duck.n.01", "duck"),  # the bird takes all 4 tags; the flesh is a product anyway
        ("lion.n.01", "lion"),  # 2 tags against a celebrity's 0
        ("trout.n.02", "trout"),  # the other sense is its flesh (noun.food): not a rival
        ("hippopotamus.n.01", "hippo"),  # the other sense is a named town (an instance)
        ("butterfly.n.01", "butterfly"),  # untagged; its compounds are mostly living things
        ("bird_of_prey.n.01", "bird of prey"),  # one sense only: a corpus problem, not a homonym
    ],
)
def test_what_the_bare_string_means_is_unambiguous(wn_name, text):
    assert judge().verdict(entity(wn_name), text).ambiguity == NONE


def test_an_untagged_word_whose_compounds_are_not_living_is_ambiguous():
    """Both senses of "chess" are untagged; chess piece, chess move, chess club... decide it."""
    inside, outside = judge()._compound_evidence("chess")
    assert outside > inside


def test_a_dominant_share_of_one_turns_a_tagged_majority_into_a_homonym():
    assert judge(dominant_share=1.0).verdict(entity("giant.n.01"), "giant").ambiguity == OUT_OF_DOMAIN
    assert judge(dominant_share=1.0).verdict(entity("duck.n.01"), "duck").ambiguity == NONE


def test_a_name_of_several_selected_synsets_is_qualified_apart():
    rabbit, hyrax = entity("rabbit.n.01"), entity("hyrax.n.01")
    verdicts = [judge().verdict(e, "coney") for e in (rabbit, hyrax)]
    assert [v.ambiguity for v in verdicts] == [IN_DOMAIN, IN_DOMAIN]
    # "mammal" is what both are, so each takes its own other name
    assert [v.qualifier for v in verdicts] == ["rabbit", "hyrax"]


def test_the_dominant_one_of_several_selected_synsets_keeps_the_bare_name():
    """"hen": the female chicken has 22 of the 23 tags; the other hens are qualified."""
    hens = [e for e in selection()[0].values() if "hen" in (e.name, *e.aliases)]
    verdicts = {e.wordnet_name: judge().verdict(e, "hen").ambiguity for e in hens}
    assert verdicts.pop("hen.n.01") == NONE
    assert set(verdicts.values()) == {IN_DOMAIN}


def test_a_string_is_read_in_every_spelling_and_a_plural_as_its_singular():
    """"jack-o-lantern" is the carved lantern too ("jack-o'-lantern"), "butterflyfish" the butterfly
    fish, "trumpets" the instrument; the fungus' own name "jack-o-lantern fungus" is no evidence."""
    fungus = judge().verdict(entity("jack-o-lantern_fungus.n.01"), "jack-o-lantern")
    assert fungus.ambiguity == OUT_OF_DOMAIN and fungus.qualifier == "fungus"
    assert any("lantern carved from a pumpkin" in s for s in fungus.senses)
    gurnard = judge().verdict(entity("flying_gurnard.n.01"), "butterflyfish")
    assert gurnard.ambiguity == IN_DOMAIN and gurnard.senses[0].startswith("n02605316 butterfly fish")
    horn = judge().verdict(entity("huntsman's_horn.n.01"), "trumpets")
    assert horn.ambiguity == OUT_OF_DOMAIN and horn.senses[0].startswith("n03110669 cornet")
    assert singulars("berries") == ["berrie", "berry"] and singulars("boxes") == ["boxe", "box"]
    assert singulars("ass") == singulars("iris") == singulars("grass") == []  # not plurals


def test_a_single_tag_says_nothing():
    """SemCor tagged "seahorse" once, as the walrus: with `min_tags = 1` that made the walrus what
    the string means, and the fish lost it."""
    walrus, fish = entity("walrus.n.01"), entity("seahorse.n.02")
    assert judge(min_tags=1).verdict(walrus, "seahorse").ambiguity == NONE
    assert judge().verdict(walrus, "seahorse").ambiguity == IN_DOMAIN
    assert judge().verdict(fish, "seahorse").headword


def test_the_headword_keeps_a_name_others_have_as_an_alias_and_the_others_lose_it():
    names = ("blackbird.n.02", "new_world_blackbird.n.01", "big_cat.n.01", "cat.n.01")
    queries, rejects = build(inputs(*names), cfg())
    by_text = {(q.original_text or q.text, q.entity_id): q for q in queries}
    thrush = by_text["blackbird", entity("blackbird.n.02").id]
    assert (thrush.text, thrush.decision) == ("blackbird", "headword")
    assert thrush.senses[0].startswith("n01574045 New World blackbird")
    assert ("blackbird", entity("new_world_blackbird.n.01").id) not in by_text
    assert ("cat", entity("big_cat.n.01").id) not in by_text  # the true cat is what "cat" means
    assert by_text["cat", entity("cat.n.01").id].text == "cat"
    dropped = {(r.item, r.detail.split(" (")[0]) for r in rejects if r.reason == "ambiguous"}
    assert (entity("new_world_blackbird.n.01").id, "'blackbird'") in dropped
    assert (entity("big_cat.n.01").id, "'cat'") in dropped


def test_near_kin_sharing_a_headword_keep_it_by_the_methods_rule():
    """Two echidna synsets, one gloss each but for the country: nothing tells them apart."""
    verdicts = [judge().verdict(entity(n), "echidna") for n in ("echidna.n.01", "echidna.n.02")]
    assert [(v.kin, v.qualifier) for v in verdicts] == [(True, None), (True, None)]
    queries, _ = build(inputs("echidna.n.01", "echidna.n.02"), cfg())
    assert [q.decision for q in queries if q.text == "echidna"] == ["kept"]


def test_a_selected_sense_below_the_entity_does_not_compete():
    """A picture of a member of the entity shows the entity: "radish" names the radish plant and two
    radishes below it; only for those two is it a homonym."""
    plant = entity("radish_plant.n.01")
    own = int(plant.wordnet[1:])
    kinds = [s for s in judge().readings("radish") if s.offset != own and s.offset in judge().domain]
    assert len(kinds) == 2 and all(own in judge()._above(s.offset) for s in kinds)
    assert judge().verdict(plant, "radish").ambiguity == NONE
    below = next(e for e in selection()[0].values() if e.wordnet == f"n{kinds[0].offset:08d}")
    assert judge().verdict(below, "radish").ambiguity == IN_DOMAIN


@pytest.mark.parametrize(
    ("wn_name", "text", "ambiguity", "first_rival", "qualifier"),
    [
        ("yellow_iris.n.01", "yellow flag", OUT_OF_DOMAIN, "n03354903 flag: emblem", "iris"),
        ("fisher.n.02", "black cat", "both", "n02121620 cat: feline", "fisher"),
        ("black_widow.n.01", "black widow", OUT_OF_DOMAIN, "n10780284 widow", "spider"),
    ],
)
def test_adjectives_and_a_head_are_read_word_by_word(wn_name, text, ambiguity, first_rival, qualifier):
    """The head's first sense is no kind of the entity: a yellow flag is an emblem first."""
    verdict = judge().verdict(entity(wn_name), text)
    assert (verdict.ambiguity, verdict.qualifier) == (ambiguity, qualifier)
    assert verdict.senses[0].startswith(first_rival)


@pytest.mark.parametrize(
    ("wn_name", "text"),
    [("great_blue_heron.n.01", "great blue heron"), ("sea_lion.n.01", "sea lion")],
)
def test_a_head_the_entity_is_a_kind_of_or_a_compound_name_reads_as_a_whole(wn_name, text):
    assert judge().verdict(entity(wn_name), text).ambiguity == NONE


def inputs(*wn_names: str, attributes: tuple[Attribute, ...] = ()) -> Inputs:
    chosen = [entity(n) for n in wn_names]
    return Inputs(chosen, selection()[1], list(attributes), judge())


def cfg(kinds=("entity",), **policy) -> QueriesConfig:
    return QueriesConfig(kinds=list(kinds), entities="all", ambiguity=AmbiguityConfig(**policy))


def test_qualify_records_the_original_text_and_the_competing_senses():
    queries, rejects = build(inputs("chess.n.01"), cfg())
    chess = next(q for q in queries if q.original_text == "chess")
    assert (chess.text, chess.ambiguity, chess.decision) == ("chess grass", OUT_OF_DOMAIN, "qualified")
    assert any(s.startswith("n00503237 chess: a board game") for s in chess.senses)
    assert "Bromus secalinus" in {q.text for q in queries}  # the other names need nothing
    assert rejects == []


def test_drop_sends_the_query_to_the_rejects_with_the_senses():
    queries, rejects = build(inputs("chess.n.01"), cfg(entity="drop"))
    assert "chess" not in {q.text for q in queries} and "chess grass" not in {q.text for q in queries}
    (reject,) = [r for r in rejects if r.reason == "ambiguous" and r.detail.startswith("'chess'")]
    assert reject.item == entity("chess.n.01").id
    assert reject.detail.startswith("'chess' (out_of_domain)") and "a board game" in reject.detail


def test_keep_leaves_the_text_and_records_the_ambiguity():
    queries, _ = build(inputs("chess.n.01"), cfg(entity="keep"))
    chess = next(q for q in queries if q.text == "chess")
    assert (chess.original_text, chess.ambiguity, chess.decision) == (None, OUT_OF_DOMAIN, "kept")
    assert chess.senses


def test_in_domain_homonyms_each_get_a_query_instead_of_the_first_synset_taking_all():
    queries, rejects = build(inputs("rabbit.n.01", "hyrax.n.01"), cfg())
    coneys = sorted(q.text for q in queries if q.original_text == "coney")
    assert coneys == ["coney hyrax", "coney rabbit"]
    assert not [r for r in rejects if r.reason == "homonym" and "coney" in r.detail]


def test_the_policy_is_per_kind_and_the_qualifier_follows_the_name_inside_an_attribute_query():
    hobby = entity("hobby.n.03")
    attr = Attribute(hobby.id, "Behavior and movement", "diving", "hobby diving", "kg")
    qualify, _ = build(inputs("hobby.n.03", attributes=(attr,)), cfg(("entity", "entity_attribute")))
    assert {q.text for q in qualify if q.kind == "entity_attribute"} == {"hobby falcon diving"}
    kept, _ = build(
        inputs("hobby.n.03", attributes=(attr,)), cfg(("entity", "entity_attribute"), entity_attribute="keep")
    )
    assert {q.text for q in kept if q.kind == "entity_attribute"} == {"hobby diving"}
    assert {q.text for q in kept if q.kind == "entity"} >= {"hobby falcon"}


def test_a_type_attribute_query_is_kept_by_default_and_qualified_on_request():
    """Type "plant" reads as a factory first; "flowering plant" is recorded, not rewritten."""
    iris = entity("iris.n.01")
    attr = Attribute(iris.id, "Other", "flowering", "flowering iris", "kg")
    by_default, _ = build(inputs("iris.n.01", attributes=(attr,)), cfg(("type_attribute",)))
    (query,) = by_default
    assert (query.text, query.ambiguity, query.decision) == ("flowering plant", OUT_OF_DOMAIN, "kept")
    dropped, rejects = build(
        inputs("iris.n.01", attributes=(attr,)), cfg(("type_attribute",), type_attribute="drop")
    )
    assert dropped == [] and [r.reason for r in rejects] == ["ambiguous"]


def test_without_wordnet_nothing_is_checked_and_the_first_synset_takes_a_shared_name():
    rabbit, hyrax = entity("rabbit.n.01"), entity("hyrax.n.01")
    queries, rejects = build(Inputs([rabbit, hyrax], {}), cfg())
    assert {q.decision for q in queries} == {"unambiguous"}
    assert [r.detail for r in rejects if r.reason == "homonym"] == [
        "'coney' goes to hyrax.n.01, not rabbit.n.01",
        "'cony' goes to hyrax.n.01, not rabbit.n.01",
    ]


def test_a_changed_policy_makes_the_queries_stage_stale():
    stage = next(s for s in STAGES if s.name == "queries")
    config = load("demo")
    other = config.model_copy(
        update={"queries": config.queries.model_copy(update={"ambiguity": AmbiguityConfig(entity="drop")})}
    )
    assert stage.config_hash(config) != stage.config_hash(other)
    assert "entities.wordnet.path" in stage.reads  # the stage reads WordNet itself
