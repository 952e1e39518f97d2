"""KG-derived attributes (src/kgclip/text/kg_attributes.py) on real WordNet 3.0 living things."""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from kgclip.config import AttributesConfig, WordNetSource, load_raw
from kgclip.kg.wordnet import WordNet, open_wordnet
from kgclip.kg.wordnet_select import wordnet_entities
from kgclip.tables import Entity
from kgclip.text import kg_attributes as ka
from kgclip.text.categories import category_sets
from kgclip.text.kg_attributes import (
    Attribute,
    Vocabulary,
    VocabularyError,
    attribute_stats,
    kg_attributes,
    load_vocabulary,
)

PART_METHODS = {ka.MERONYM, ka.INHERITED_MERONYM, ka.SUB_MERONYM, ka.PART_KIND, ka.GLOSS_PART}
ALL_METHODS = PART_METHODS | set(ka.GLOSS_METHODS.values())


class Run:
    """kg_attributes over the 8,861 LivingThings entities, indexed for the lookups the tests make."""

    def __init__(self, wn: WordNet, vocab: Vocabulary, entities: list[Entity]) -> None:
        self.wn = wn
        self.vocab = vocab
        self.entities = entities
        self.category_set = category_sets(entities, AttributesConfig().category_roots, wn)
        start = time.perf_counter()
        self.attributes = kg_attributes(entities, wn, vocab, self.category_set)
        self.seconds = time.perf_counter() - start
        self.by_name = {e.wordnet_name: e for e in entities}
        self.of: dict[str, list[Attribute]] = defaultdict(list)
        for a in self.attributes:
            self.of[a.entity_id].append(a)

    def attrs(self, wordnet_name: str) -> list[Attribute]:
        return self.of[self.by_name[wordnet_name].id]

    def texts(self, wordnet_name: str, category: str | None = None) -> set[str]:
        return {a.attribute for a in self.attrs(wordnet_name) if category in (None, a.category)}


@pytest.fixture(scope="module")
def wn() -> WordNet:
    return open_wordnet()


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return load_vocabulary()


@pytest.fixture(scope="module")
def entities() -> list[Entity]:
    raw = load_raw("livingthings")["entities"]["wordnet"]
    return wordnet_entities(WordNetSource(**raw)).entities


@pytest.fixture(scope="module")
def lt(wn: WordNet, vocab: Vocabulary, entities: list[Entity]) -> Run:
    return Run(wn, vocab, entities)


def gloss_only(
    description: str, name: str = "critter", cset: str = "animal", **kw: object
) -> list[Attribute]:
    """Attributes of a made-up entity without a synset: the gloss rules alone."""
    entity = Entity(
        id="x:1", name=name, aliases=[], description=description, root="x:0", parents=[], is_leaf=True, **kw
    )
    return kg_attributes([entity], open_wordnet(), load_vocabulary(), lambda e: cset)


def pairs(attributes: list[Attribute]) -> set[tuple[str, str]]:
    return {(a.category, a.attribute) for a in attributes}


# ---- the examples


@pytest.mark.parametrize("bird", ["robin.n.02", "bird.n.01", "bald_eagle.n.01", "english_sparrow.n.01"])
def test_birds_have_wing_beak_and_feather(lt: Run, bird: str) -> None:
    parts = {a.attribute: a for a in lt.attrs(bird) if a.category == "Body parts"}
    assert {"wing", "beak", "feather"} <= set(parts)  # WordNet's beak.n.02 is "beak, bill, neb, nib"
    expected = ka.MERONYM if bird == "bird.n.01" else ka.INHERITED_MERONYM
    assert {parts[p].method for p in ("wing", "beak", "feather")} == {expected}
    assert parts["wing"].query == f"{lt.by_name[bird].name} wing"


def test_tree_has_bark_and_leaf(lt: Run) -> None:
    tree = {a.attribute: a for a in lt.attrs("tree.n.01")}
    # tree.n.01's own parts are trunk, limb, crown, stump, burl; bark is a part of the trunk, and
    # leaf is a basic-level kind of plant.n.02's "plant part".
    assert {"trunk", "limb", "crown"} <= set(tree)
    assert (tree["bark"].method, tree["bark"].query) == (ka.SUB_MERONYM, "tree bark")
    assert (tree["leaf"].method, tree["leaf"].query) == (ka.PART_KIND, "tree leaf")
    assert {a.category for a in tree.values() if a.method in PART_METHODS} == {"Plant parts"}


@pytest.mark.parametrize("tree", ["oak.n.02", "white_oak.n.01", "sugar_maple.n.01", "silver_birch.n.01"])
def test_trees_inherit_bark_and_leaf(lt: Run, tree: str) -> None:
    texts = lt.texts(tree, "Plant parts")
    assert "bark" in texts
    assert "leaf" in texts or any(t.endswith(("leaf", "leaves")) for t in texts)


def test_oak(lt: Run) -> None:
    oak = {a.attribute: a for a in lt.attrs("oak.n.02")}
    assert oak["acorns"].method == ka.GLOSS_PART  # "has acorns and lobed leaves"
    assert oak["lobed leaves"].query == "oak with lobed leaves"
    assert "acorn" not in oak  # the meronym acorn.n.01 is the gloss's "acorns" again
    assert oak["deciduous"].category == "Other"
    assert {"bark", "leaf", "trunk"} <= set(oak)


def test_koala(lt: Run) -> None:
    koala = lt.attrs("koala.n.01")
    assert lt.by_name["koala.n.01"].description.startswith("sluggish tailless Australian arboreal marsupial")
    got = {(a.category, a.attribute): a for a in koala}
    assert got["Color", "grey"].query == "grey koala"
    assert got["Color", "grey"].method == "kg:gloss-color"
    assert got["Pattern and texture", "furry"].method == "kg:gloss-pattern"
    assert got["Habitat and environment", "arboreal"].query == "arboreal koala"
    # "with grey furry ears and coat": the coat shares the ears' colour and texture words
    assert got["Body parts", "grey furry ears"].query == "koala with grey furry ears"
    assert ("Body parts", "grey furry coat") in got
    # "feeds on eucalyptus leaves and bark" is food, and "tailless" removes the inherited tail
    texts = " ".join(a.attribute for a in koala)
    for word in ("eucalyptus", "leaves", "leaf", "bark", "tail", "caudal"):
        assert word not in texts
    assert {a.category for a in koala} <= set(lt.vocab.category_order["animal"])


def test_zebra_colours_and_stripes(lt: Run) -> None:
    got = pairs(lt.attrs("zebra.n.01"))  # "fleet black-and-white striped African equines"
    assert {("Color", "black and white"), ("Pattern and texture", "striped")} <= got
    assert ("Body parts", "hoof") in got


# ---- visibility


HIDDEN = {
    "heart",
    "liver",
    "stomach",
    "rumen",
    "reticulum",
    "lung",
    "kidney",
    "gland",
    "uropygial gland",
    "silk gland",
    "furcula",
    "rib",
    "fishbone",
    "syrinx",
    "air sac",
    "apodeme",
    "keel",
    "xylem",
    "vascular tissue",
    "vascular system",
    "sapwood",
    "heartwood",
    "lignum",
    "cell",
    "tissue",
    "animal tissue",
    "body part",
    "plant part",
    "roe",
    "milt",
    "copepod",
}


def test_no_internal_or_invisible_parts(lt: Run) -> None:
    produced = {a.attribute.lower() for a in lt.attributes if a.method in PART_METHODS}
    assert not produced & HIDDEN
    assert not {a for a in lt.attributes if a.attribute == "bird" and a.method != ka.GLOSS_PART}


@pytest.mark.parametrize(
    ("part", "visible"),
    [
        ("heart.n.02", False),  # internal_organ.n.01
        ("liver.n.01", False),
        ("rumen.n.01", False),
        ("uropygial_gland.n.01", False),  # gland.n.01
        ("furcula.n.01", False),  # bone: tissue.n.01
        ("syrinx.n.02", False),  # structure.n.04
        ("air_sac.n.03", False),  # cavity.n.04
        ("xylem.n.01", False),  # plant_tissue.n.01
        ("bird.n.02", False),  # noun.food: the bird's meat
        ("lignin.n.01", False),  # noun.substance
        ("wing.n.01", True),  # organ.n.01, no hidden class
        ("beak.n.02", True),  # orifice.n.01 beats structure.n.04 (nearer)
        ("feather.n.01", True),  # covering.n.01 beats substance.n.01 (animal material, farther)
        ("tusk.n.02", True),  # tooth.n.01 beats bone
        ("thick_skin.n.01", True),  # skin.n.01 beats tissue
        ("hair.n.04", True),  # filament.n.03 beats structure
        ("udder.n.01", True),  # mammary_gland.n.01 beats gland
        ("bark.n.01", True),
        ("leaf.n.01", True),
    ],
)
def test_visibility_rule(wn: WordNet, vocab: Vocabulary, part: str, visible: bool) -> None:
    graph = ka._Graph(wn, vocab)
    assert graph.visible(wn.synset(part).offset) is visible


def test_organ_classes_cover_every_internal_organ(wn: WordNet, vocab: Vocabulary) -> None:
    graph = ka._Graph(wn, vocab)
    internal = wn.synset("internal_organ.n.01")
    organs = list(wn.hyponym_closure(internal))
    assert len(organs) > 30
    assert not any(graph.visible(s.offset) for s in organs)


# ---- queries, categories, methods, limits


def test_every_query_names_its_entity(lt: Run) -> None:
    names = {e.id: e.name for e in lt.entities}
    for a in lt.attributes:
        name = names[a.entity_id]
        assert name in a.query or name.lower() in a.query.lower(), a
        # lower case but for the entity's name and a meronym's own lemma, as WordNet spells them
        rest = a.query.replace(name, "")
        if a.method in PART_METHODS - {ka.GLOSS_PART}:
            rest = rest.replace(a.attribute, "")
        assert rest == rest.lower(), a
    assert "bur marigold Spanish needles" in {a.query for a in lt.attributes}


def test_proper_nouns_keep_their_case(lt: Run) -> None:
    # "blue jay of eastern North America; bright blue with grey breast"
    assert "Cooper's hawk beak" in {a.query for a in lt.attrs("cooper's_hawk.n.01")}
    queries = {a.query for a in lt.attrs("australian_magpie.n.01")}
    assert "black and white Australian magpie" in queries


def test_categories_follow_the_category_set(lt: Run) -> None:
    sets = Counter(lt.category_set(e) for e in lt.entities)
    assert sets["animal"] == 3_996 and sets["plant"] > 4_800 and 0 < sets["generic"] < 50
    for e in lt.entities:
        allowed = set(lt.vocab.category_order[lt.category_set(e)])
        got = [a.category for a in lt.of[e.id]]
        assert set(got) <= allowed, e.wordnet_name
        order = list(lt.vocab.category_order[lt.category_set(e)])
        assert [order.index(c) for c in got] == sorted(order.index(c) for c in got)
    animals = {a.category for e in lt.entities if lt.category_set(e) == "animal" for a in lt.of[e.id]}
    plants = {a.category for e in lt.entities if lt.category_set(e) == "plant" for a in lt.of[e.id]}
    assert "Body parts" in animals and "Plant parts" not in animals and "Parts" not in animals
    assert "Plant parts" in plants and "Behavior and movement" not in plants


def test_methods_are_recorded(lt: Run) -> None:
    methods = Counter(a.method for a in lt.attributes)
    assert set(methods) == ALL_METHODS
    for a in lt.attributes:
        assert (a.method in PART_METHODS) == (a.category in ("Body parts", "Plant parts", "Parts")), a


def test_limits_and_uniqueness(lt: Run) -> None:
    per_category = Counter((a.entity_id, a.category) for a in lt.attributes)
    assert max(per_category.values()) == lt.vocab.max_per_category == 10
    per_text = Counter((a.entity_id, a.attribute.lower()) for a in lt.attributes)
    assert max(per_text.values()) == 1
    for e in lt.entities:
        names = {e.name.lower(), *(x.lower() for x in e.aliases)}
        assert not any(a.attribute.lower() in names for a in lt.of[e.id])


def test_attribute_record_shape() -> None:
    fields = [(f.name, f.type) for f in dataclasses.fields(Attribute)]
    assert fields == [(n, "str") for n in ("entity_id", "category", "attribute", "query", "method")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Attribute("a", "b", "c", "d", "e").query = "x"  # type: ignore[misc]


def test_deterministic_and_order_independent(lt: Run) -> None:
    again = kg_attributes(lt.entities, lt.wn, lt.vocab, lt.category_set)
    assert again == lt.attributes
    shuffled = list(lt.entities)
    random.Random(0).shuffle(shuffled)
    other = kg_attributes(shuffled, lt.wn, lt.vocab, lt.category_set)
    assert sorted(other, key=lambda a: a.entity_id) == sorted(lt.attributes, key=lambda a: a.entity_id)


def test_counts_over_livingthings(lt: Run) -> None:
    stats = attribute_stats(lt.entities, lt.attributes)
    assert stats["entities"] == 8_861
    assert stats["with_attributes"] >= 8_800
    assert stats["per_entity"]["mean"] >= 8 and stats["per_entity"]["median"] == 10
    per = stats["entities_per_method"]
    assert per[ka.INHERITED_MERONYM] > 6_000 and per[ka.PART_KIND] > 4_000 and per[ka.SUB_MERONYM] > 3_500
    assert per[ka.GLOSS_PART] > 3_000 and per["kg:gloss-color"] > 1_000 and per["kg:gloss-size"] > 2_000
    assert per["kg:gloss-habitat"] > 1_500 and per["kg:gloss-behavior"] > 300
    assert lt.seconds < 10  # about 1.5 s on the 2-core project machine


def test_coverage_of_familiar_groups(lt: Run, wn: WordNet) -> None:
    graph = ka._Graph(wn, lt.vocab)
    birds = wn.synset("bird.n.01").offset
    trees = wn.synset("tree.n.01").offset
    bird_ok = tree_ok = bird_n = tree_n = 0
    for e in lt.entities:
        line = graph.ancestors(wn.synset(e.wordnet).offset) | {wn.synset(e.wordnet).offset}
        texts = {a.attribute for a in lt.of[e.id]}
        if birds in line:
            bird_n += 1
            bird_ok += {"wing", "beak", "feather"} <= texts
        if trees in line:
            tree_n += 1
            tree_ok += {"bark", "leaf"} <= texts
    assert (bird_n, tree_n) == (872, 1_014)
    assert bird_ok >= 870 and tree_ok >= 950


# ---- the gloss rules on made-up glosses


def test_gloss_parts_only_in_trigger_phrases() -> None:
    got = pairs(gloss_only("small nocturnal rodent with a long tail; feeds on red berries and green leaves"))
    assert ("Body parts", "long tail") in got
    assert ("Shape and size", "small") in got and ("Behavior and movement", "nocturnal") in got
    texts = {t for _, t in got}
    assert not texts & {"long", "red", "green", "red berries", "green leaves", "leaves"}


def test_part_modifiers_stay_with_their_part() -> None:
    got = pairs(gloss_only("black-headed gull with white wings"))
    assert ("Body parts", "black head") in got and ("Body parts", "white wings") in got
    assert not {t for c, t in got if c == "Color"}  # a black head does not make a black gull
    coat = pairs(gloss_only("terrier with a wiry brown coat"))
    assert ("Color", "brown") in coat  # a coat covers the whole animal


def test_compounds_count_only_as_a_whole() -> None:
    got = pairs(
        gloss_only("long-lived non-flowering shrub with red-breasted long-tailed relatives", cset="plant")
    )
    texts = {t for _, t in got}
    assert "long" not in texts and "flowering" not in texts


def test_coordinated_colours_and_alternatives() -> None:
    got = pairs(
        gloss_only("black and white bird having pale or greenish yellow flowers and red or blue eyes")
    )
    assert ("Color", "black and white") in got
    assert {
        ("Body parts", "greenish yellow flowers"),
        ("Body parts", "red eyes"),
        ("Body parts", "blue eyes"),
    } <= got


def test_habitat_and_behaviour_templates() -> None:
    got = {a.attribute: a.query for a in gloss_only("burrowing marine worm of sandy beaches and coral reefs")}
    assert got["burrowing"] == "critter burrowing"
    assert got["marine"] == "marine critter"
    assert got["beach"] == "critter on the beach"
    assert got["reef"] == "critter on the reef"
    forest = {a.attribute: a.query for a in gloss_only("climbing vine of tropical forests", cset="plant")}
    assert forest == {
        "climbing": "climbing critter",
        "tropical": "tropical critter",
        "forest": "critter in the forest",
    }
    assert {a.category for a in gloss_only("climbing vine", cset="plant")} == {"Other"}


def test_generic_set_and_no_synset() -> None:
    got = gloss_only("small green organism with a thick shell, found in ponds", cset="generic")
    assert pairs(got) == {
        ("Color", "green"),
        ("Parts", "thick shell"),
        ("Shape and size", "small"),
        ("Environment", "pond"),
    }


def test_attribute_that_names_the_entity_is_its_own_query() -> None:
    assert ka.build_query("{entity} {attribute}", "cassia", "cassia bark") == "cassia bark"
    assert ka.build_query("{entity} {attribute}", "Cooper's hawk", "beak") == "Cooper's hawk beak"


# ---- the vocabulary


def test_vocabulary_is_data(vocab: Vocabulary) -> None:
    assert vocab.source.endswith("kg_attributes.toml")
    assert vocab.words["grey"].slot == "color" and vocab.words["stripes"].canonical == "striped"
    assert vocab.part_nouns["leaves"] == "leaf" and vocab.part_nouns["ears"] == "ear"
    assert vocab.part_adjectives["tailed"] == "tail" and vocab.part_adjectives["bellied"] == "belly"
    assert vocab.part_adjectives["finned"] == "fin" and vocab.part_adjectives["leaved"] == "leaf"


def test_bad_vocabularies_are_refused(tmp_path: Path, wn: WordNet) -> None:
    text = ka.DEFAULT_VOCABULARY.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('"{entity} {attribute}"  ', '"{attribute}"  ', 1))
    with pytest.raises(VocabularyError, match="must contain"):
        load_vocabulary(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text(text.replace('"gland.n.01"', '"glnad.n.01"'))
    vocab = load_vocabulary(typo)
    with pytest.raises(VocabularyError, match="hidden_classes"):
        kg_attributes([], wn, vocab, lambda e: "animal")
