"""Linking WordNet synsets and Wikidata items: real WordNet 3.0 rows, Wikidata rows modelled on real items.

The WordNet side is the real selection below animal.n.01, plant.n.02 and mammal_genus.n.01 (the last
root brings genera such as Panthera in). The Wikidata rows are written by hand after the real items;
their descriptions are the short English ones Wikidata carries ("species of big cat").
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from kgclip.config import WordNetSource
from kgclip.kg import merge as m
from kgclip.kg.wordnet_select import wordnet_entities
from kgclip.tables import Entity

ANIMAL = "wd:Q729"


@pytest.fixture(scope="module")
def wn_rows() -> list[Entity]:
    return wordnet_entities(WordNetSource(roots=["animal.n.01", "plant.n.02", "mammal_genus.n.01"])).entities


@pytest.fixture(scope="module")
def by_name(wn_rows: list[Entity]) -> dict[str, Entity]:
    return {e.wordnet_name: e for e in wn_rows}


def wid(by_name: dict[str, Entity], name: str) -> str:
    return by_name[name].id


def wd(
    qid: str,
    name: str,
    description: str,
    aliases: tuple[str, ...] = (),
    taxon: str | None = None,
    common: tuple[str, ...] = (),
    parents: tuple[str, ...] = (ANIMAL,),
    is_leaf: bool = True,
    **external: str,
) -> Entity:
    return Entity(
        id=f"wd:{qid}",
        name=name,
        aliases=list(aliases),
        description=description,
        root=ANIMAL,
        parents=list(parents),
        is_leaf=is_leaf,
        wikidata=qid,
        taxon_name=taxon,
        common_names=list(common),
        popularity=100,
        depth=3,
        sources=["wikidata"],
        image=f"{name}.jpg",
        external_ids=dict(external),
    )


LION = wd(
    "Q140",
    "lion",
    "species of big cat",
    ("African lion", "panthera leo"),
    taxon="Panthera leo",
    common=("lion",),
    parents=("wd:Q127960",),
    is_leaf=False,
    gbif="5219404",
    inaturalist="41964",
)
PANTHERA = wd("Q127960", "Panthera", "genus of mammals", taxon="Panthera", is_leaf=False)
BARBARY_LION = wd(
    "Q1367775", "Barbary lion", "extinct lion population", taxon="Panthera leo leo", parents=("wd:Q140",)
)
DOG = wd(
    "Q144",
    "dog",
    "domestic animal",
    ("Domestic Dog", "Canis lupus familiaris", "canis familiaris"),
    taxon="Canis familiaris",
)
HOUSE_CAT = wd(
    "Q146", "house cat", "domesticated feline mammal", ("domestic cat", "cat"), taxon="Felis catus"
)
BANANA = wd(
    "Q503",
    "banana",
    "elongated, edible fruit produced by several kinds of large herbaceous flowering plants "
    "in the genus Musa",
)
COUGAR = wd(
    "Q35255",
    "cougar",
    "species of mammal of the family Felidae",
    ("puma", "mountain lion", "panther"),
    taxon="Puma concolor",
)
KIWIFRUIT = wd(
    "Q13194",
    "kiwifruit",
    "edible berry of several species of woody vines in the genus Actinidia",
    ("kiwi", "Chinese gooseberry"),
)
GOLDEN_KIWI = wd("Q1186580", "Actinidia deliciosa", "species of plant", taxon="Actinidia deliciosa")
CARANX = wd("Q1968432", "Caranx", "genus of fishes", taxon="Caranx", common=("jack", "trevally"))
RED_FOX_NO_TAXON = wd("Q8332", "red fox", "species of mammal")
SPARROW = wd("Q2", "sparrow", "common name for small passerine birds")
CRANE_MACHINE = wd("Q178692", "crane", "type of machine used for lifting", parents=())
GRAY_WOLF = wd("Q18498", "wolf", "species of mammal", ("gray wolf", "grey wolf"), taxon="Canis lupus")
EASTERN_WOLF = wd(
    "Q1411563", "eastern wolf", "canid of eastern North America", ("timber wolf",), taxon="Canis lycaon"
)
DUNNOCK = wd("Q25294", "dunnock", "species of bird", ("hedge sparrow",))
DUNNOCK_TWIN = wd("Q25295", "hedge sparrow", "species of bird", ("dunnock",))
CARRION_CROW = wd("Q25334", "carrion crow", "species of bird", taxon="Corvus corone")
SKYWALKER = wd("Q28913383", "Skywalker hoolock gibbon", "species of primate", taxon="Hoolock tianxing")


def link_of(result: m.MergeResult, wikidata_id: str) -> m.Link | None:
    return next((link for link in result.links if link.wikidata_id == wikidata_id), None)


def unlinked_of(result: m.MergeResult, wikidata_id: str) -> m.Unlinked | None:
    return next((u for u in result.unlinked if u.wikidata_id == wikidata_id), None)


def row(result: m.MergeResult, entity_id: str) -> Entity:
    return next(e for e in result.entities if e.id == entity_id)


# --- links --------------------------------------------------------------------------------------


def test_taxon_name_links_lion_and_merges_the_row(wn_rows, by_name) -> None:
    result = m.merge(wn_rows, [LION])
    lion = wid(by_name, "lion.n.01")
    assert result.links == [m.Link(lion, "wd:Q140", "taxon", 2.25)]
    merged = row(result, lion)
    wn_lion = by_name["lion.n.01"]
    assert merged.name == "lion" and merged.wordnet == "n02129165" and merged.wordnet_name == "lion.n.01"
    assert merged.aliases == [
        "king of beasts",
        "Panthera leo",
        "African lion",
    ]  # no "lion", no "panthera leo"
    assert merged.description == wn_lion.description  # the WordNet gloss stays
    assert (merged.root, merged.depth, merged.popularity) == (wn_lion.root, wn_lion.depth, 2)
    assert merged.wikidata == "Q140" and merged.taxon_name == "Panthera leo"
    assert merged.common_names == ["lion"] and merged.image == "lion.jpg"
    assert merged.external_ids == {"gbif": "5219404", "inaturalist": "41964"}
    assert merged.sources == ["wordnet", "wikidata"]
    assert "wd:Q140" not in {e.id for e in result.entities}
    assert len(result.entities) == len(wn_rows)


def test_taxon_names_compare_case_sensitively_for_single_words(wn_rows, by_name) -> None:
    """The genus Panthera matches WordNet's capitalised lemma "Panthera"; a lower-case single-word lemma
    (bison.n.01 has "bison") would only count as a shared name."""
    result = m.merge(wn_rows, [PANTHERA])
    assert result.links == [m.Link(wid(by_name, "panthera.n.01"), "wd:Q127960", "taxon", 2.0)]
    bison = wd("Q9", "Bison", "genus of mammals", taxon="Bison")
    (link,) = m.merge(wn_rows, [bison]).links
    assert (link.wordnet_id, link.method) == (wid(by_name, "bison.n.01"), "name")


def test_hybrid_sign_is_ignored_in_taxon_names(wn_rows, by_name) -> None:
    plantain = wd("Q165449", "Musa × paradisiaca", "hybrid species of plant", taxon="Musa × paradisiaca")
    (link,) = m.merge(wn_rows, [plantain]).links
    assert (link.wordnet_id, link.method) == (wid(by_name, "plantain.n.02"), "taxon")


def test_dog_and_house_cat_link_by_taxon(wn_rows, by_name) -> None:
    result = m.merge(wn_rows, [DOG, HOUSE_CAT])
    assert [(lk.wordnet_id, lk.wikidata_id, lk.method) for lk in result.links] == [
        (wid(by_name, "dog.n.01"), "wd:Q144", "taxon"),
        (wid(by_name, "domestic_cat.n.01"), "wd:Q146", "taxon"),
    ]
    # house cat also names cat.n.01 and big_cat.n.01 ("cat"), far behind the taxon match
    cat = row(result, wid(by_name, "domestic_cat.n.01"))
    assert cat.aliases == ["house cat", "Felis domesticus", "Felis catus", "cat"]


def test_union_of_names_has_no_case_duplicates(wn_rows, by_name) -> None:
    merged = row(m.merge(wn_rows, [DOG]), wid(by_name, "dog.n.01"))
    assert merged.name == "dog"
    assert merged.aliases == ["domestic dog", "Canis familiaris", "Canis lupus familiaris"]


def test_alias_link_when_the_taxon_was_renamed(wn_rows, by_name) -> None:
    """WordNet still has Felis concolor; Wikidata says Puma concolor. Four shared names carry the link,
    well ahead of panther.n.02 and jaguar.n.01, which only share "panther"."""
    result = m.merge(wn_rows, [COUGAR])
    assert result.links == [m.Link(wid(by_name, "cougar.n.01"), "wd:Q35255", "name", 1.25)]
    merged = row(result, wid(by_name, "cougar.n.01"))
    assert merged.aliases[-1] == "Felis concolor"  # every Wikidata name was already a WordNet lemma


def test_banana_links_to_the_plant_by_its_description(wn_rows, by_name) -> None:
    """Only banana.n.01 (the plant) is selected; 8 of the 12 description words are in its gloss or
    its ancestors' lemmas (genus Musa, fruit, herbaceous plant ...)."""
    (link,) = m.merge(wn_rows, [BANANA]).links
    assert (link.wordnet_id, link.method, link.score) == (wid(by_name, "banana.n.01"), "name", 0.666667)


def test_gloss_decides_between_homonyms(wn_rows, by_name) -> None:
    """kiwifruit's aliases name the vine and the bird; "edible ... vine" fits only the vine's gloss.
    Caranx's common name "jack" names a fish and a male donkey; "fishes" picks the fish."""
    result = m.merge(wn_rows, [KIWIFRUIT, CARANX])
    assert link_of(result, "wd:Q13194") == m.Link(
        wid(by_name, "chinese_gooseberry.n.01"), "wd:Q13194", "name", 0.65
    )
    assert link_of(result, "wd:Q1968432") == m.Link(wid(by_name, "jack.n.11"), "wd:Q1968432", "name", 1.0)
    kiwi = m.score_candidates(KIWIFRUIT, m.WordNetIndex(wn_rows), None)
    assert [(c.wordnet_id, c.shared, c.gloss) for c in kiwi] == [
        (wid(by_name, "chinese_gooseberry.n.01"), 2, 0.4),
        (wid(by_name, "kiwi.n.04"), 1, 0.0),
    ]


# --- rejections ---------------------------------------------------------------------------------


def test_ambiguous_candidates_stay_separate(wn_rows, by_name) -> None:
    """Without its taxon name, "red fox, species of mammal" fits the Old World and the New World red
    fox equally; "small passerine birds" fits hedge_sparrow.n.01 and sparrow.n.01 equally."""
    result = m.merge(wn_rows, [RED_FOX_NO_TAXON, SPARROW])
    assert result.links == []
    fox = unlinked_of(result, "wd:Q8332")
    assert fox.reason == "ambiguous"
    assert fox.candidates == [wid(by_name, n) for n in ("red_fox.n.03", "red_fox.n.02", "red_fox.n.01")]
    assert unlinked_of(result, "wd:Q2").reason == "ambiguous"
    assert row(result, "wd:Q8332") == RED_FOX_NO_TAXON
    assert result.stats["ambiguous"] == 2


def test_taxon_name_resolves_the_same_ambiguity(wn_rows, by_name) -> None:
    fox = replace(RED_FOX_NO_TAXON, taxon_name="Vulpes vulpes")
    assert m.merge(wn_rows, [fox]).links == [m.Link(wid(by_name, "red_fox.n.03"), "wd:Q8332", "taxon", 2.25)]


def test_weak_name_match_stays_separate(wn_rows, by_name) -> None:
    """The lifting machine shares only the word "crane" with the bird crane.n.05."""
    result = m.merge(wn_rows, [CRANE_MACHINE])
    assert result.links == []
    assert unlinked_of(result, "wd:Q178692") == m.Unlinked(
        "wd:Q178692", "weak", [wid(by_name, "crane.n.05")], f"{wid(by_name, 'crane.n.05')}=0"
    )
    assert row(result, wid(by_name, "crane.n.05")).sources == ["wordnet"]
    assert result.stats["weak"] == 1


def test_contested_synset_with_equal_claims_links_neither(wn_rows, by_name) -> None:
    """Two items (a duplicate pair) both name hedge_sparrow.n.01 with the same evidence."""
    result = m.merge(wn_rows, [DUNNOCK, DUNNOCK_TWIN])
    sparrow = wid(by_name, "hedge_sparrow.n.01")
    assert result.links == []
    assert [(u.wikidata_id, u.reason, u.candidates) for u in result.unlinked] == [
        ("wd:Q25294", "contested", [sparrow]),
        ("wd:Q25295", "contested", [sparrow]),
    ]
    assert row(result, sparrow).sources == ["wordnet"]
    assert result.stats["contested"] == 2
    assert result.stats["wikidata_only"] == 2


def test_contested_synset_goes_to_a_clearly_stronger_claim(wn_rows, by_name) -> None:
    """Gray wolf's taxon name Canis lupus is a lemma of timber_wolf.n.01; the eastern wolf only shares
    the alias "timber wolf". Likewise the species Actinidia deliciosa outranks kiwifruit."""
    result = m.merge(wn_rows, [GRAY_WOLF, EASTERN_WOLF, KIWIFRUIT, GOLDEN_KIWI])
    assert [(lk.wordnet_id, lk.wikidata_id, lk.method) for lk in result.links] == [
        (wid(by_name, "timber_wolf.n.01"), "wd:Q18498", "taxon"),
        (wid(by_name, "chinese_gooseberry.n.01"), "wd:Q1186580", "taxon"),
    ]
    eastern = unlinked_of(result, "wd:Q1411563")
    assert eastern.reason == "contested" and "wd:Q18498=2.5" in eastern.detail
    assert unlinked_of(result, "wd:Q13194").reason == "contested"


def test_different_binomials_veto_a_name_match(wn_rows, by_name) -> None:
    """WordNet's black_vulture.n.01 (Coragyps atratus) has the lemma "carrion crow"; Wikidata's carrion
    crow is Corvus corone. The description fits (both are birds), the binomials share no word."""
    result = m.merge(wn_rows, [CARRION_CROW])
    vulture = wid(by_name, "black_vulture.n.01")
    assert result.links == []
    assert unlinked_of(result, "wd:Q25334") == m.Unlinked(
        "wd:Q25334", "taxon_conflict", [vulture], f"{vulture}=taxon conflict"
    )
    # a shared genus or epithet is a renamed taxon, not a conflict: Malus domestica is WordNet's Malus pumila
    apple = wd("Q18674606", "Malus domestica", "species of plant", ("apple",), taxon="Malus domestica")
    (link,) = m.merge(wn_rows, [apple]).links
    assert (link.wordnet_id, link.method) == (wid(by_name, "apple.n.02"), "name")


def test_wikidata_only_species_passes_through(wn_rows) -> None:
    result = m.merge(wn_rows, [SKYWALKER])
    assert result.links == [] and row(result, "wd:Q28913383") == SKYWALKER
    assert unlinked_of(result, "wd:Q28913383") == m.Unlinked("wd:Q28913383", "no_candidate", [], "")


# --- the hierarchy ------------------------------------------------------------------------------


def test_parents_are_rewritten_to_the_merged_ids(wn_rows, by_name) -> None:
    result = m.merge(wn_rows, [LION, PANTHERA, BARBARY_LION])
    lion, panthera = wid(by_name, "lion.n.01"), wid(by_name, "panthera.n.01")
    assert row(result, lion).parents == [wid(by_name, "big_cat.n.01"), panthera]  # WordNet's, then wd:Q127960
    assert row(result, "wd:Q1367775").parents == [lion]  # was wd:Q140
    ids = {e.id for e in result.entities}
    refs = {p for e in result.entities for p in e.parents} | {e.root for e in result.entities}
    assert not {"wd:Q140", "wd:Q127960"} & (ids | refs)


def test_a_leaf_with_wikidata_children_becomes_internal(wn_rows, by_name) -> None:
    """Panthera is a WordNet leaf (genera have no hyponyms) but a Wikidata parent: the merged row is not."""
    assert by_name["panthera.n.01"].is_leaf
    result = m.merge(wn_rows, [LION, PANTHERA])
    assert not row(result, wid(by_name, "panthera.n.01")).is_leaf
    assert result.stats["wordnet_leaves_now_internal"] == 1


# --- the bridge ---------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_bridge_link_through_p8814(wn_rows, by_name, tmp_path) -> None:
    """The 3.1 offsets here are illustrative; the bridge file is what a user would supply."""
    bridge = m.load_bridge(
        write(tmp_path / "wn31.tsv", "wn31\twn30\n02121808-n\tn02119022\n07767847-n\t07753592-n\n")
    )
    assert bridge == {"02121808-n": "n02119022", "07767847-n": "n07753592"}
    fox = replace(RED_FOX_NO_TAXON, external_ids={"wordnet31": "02121808-n"})
    banana = replace(BANANA, external_ids={"wordnet31": "07767847-n"})  # the fruit, not selected
    cat = replace(HOUSE_CAT, external_ids={"wordnet31": "09999999-n"})  # not in the bridge

    without = m.merge(wn_rows, [fox, banana, cat])
    assert unlinked_of(without, "wd:Q8332").reason == "ambiguous"
    assert {lk.wikidata_id for lk in without.links} == {"wd:Q503", "wd:Q146"}
    assert without.stats["p8814"]["bridge"] is False
    assert without.stats["p8814"]["note"].startswith("unused: no WordNet 3.1→3.0 bridge given (3 items")

    result = m.merge(wn_rows, [fox, banana, cat], bridge)
    red_fox = wid(by_name, "red_fox.n.03")
    assert link_of(result, "wd:Q8332") == m.Link(red_fox, "wd:Q8332", "p8814", 11.0)
    assert row(result, red_fox).external_ids == {"wordnet31": "02121808-n"}
    assert unlinked_of(result, "wd:Q503").reason == "p8814_elsewhere"  # P8814 wins over the name
    assert link_of(result, "wd:Q146").method == "taxon"  # unmapped P8814: name matching as usual
    assert result.stats["linked_by"] == {"p8814": 1, "taxon": 1, "name": 0}
    assert result.stats["p8814"] == {
        "bridge": True,
        "with_p8814": 3,
        "resolved": 1,
        "not_in_bridge": 1,
        "outside_selection": 1,
        "note": "bridge of 2 synsets; 1 items resolved into the selection",
    }


def test_p8814_outranks_a_taxon_claim(wn_rows, by_name) -> None:
    bridge = {"02121808-n": "n02129165"}
    rival = replace(SKYWALKER, id="wd:Q7", wikidata="Q7", external_ids={"wordnet31": "02121808-n"})
    result = m.merge(wn_rows, [LION, rival], bridge)
    assert link_of(result, "wd:Q7").method == "p8814"
    assert unlinked_of(result, "wd:Q140").reason == "contested"


def test_load_bridge_accepts_csv_and_both_id_forms(tmp_path) -> None:
    path = write(tmp_path / "map.csv", "source,wn30,wn31\nx,n02129165,n02131653\n\ny,02084071-n,02086723-n\n")
    assert m.load_bridge(path) == {"02131653-n": "n02129165", "02086723-n": "n02084071"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("a,b\n1,2\n", "lacks column(s) wn31, wn30"),
        ("wn31,wn30\n02131653-n\n", "line 2: 1 column(s), too few"),
        ("wn31,wn30\n2131653-n,n02129165\n", "line 2: wn31 '2131653-n' is not a synset id"),
        ("wn31,wn30\n02131653-n,lion.n.01\n", "line 2: wn30 'lion.n.01' is not a synset id"),
        ("wn31,wn30\n02131653-n,n02129165\n02131653-n,n02129166\n", "line 3: 02131653-n maps to both"),
    ],
)
def test_load_bridge_errors(tmp_path, text: str, message: str) -> None:
    with pytest.raises(m.BridgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        m.load_bridge(write(tmp_path / "bad.csv", text))


def test_load_bridge_missing_file(tmp_path) -> None:
    with pytest.raises(m.BridgeError, match="cannot read it"):
        m.load_bridge(tmp_path / "nope.tsv")


# --- stats and determinism ----------------------------------------------------------------------

ALL = [
    LION,
    PANTHERA,
    BARBARY_LION,
    DOG,
    HOUSE_CAT,
    BANANA,
    COUGAR,
    CARANX,
    RED_FOX_NO_TAXON,
    SPARROW,
    CRANE_MACHINE,
    DUNNOCK,
    DUNNOCK_TWIN,
    GRAY_WOLF,
    EASTERN_WOLF,
    CARRION_CROW,
    SKYWALKER,
]


def test_stats_count_every_item_once(wn_rows) -> None:
    result = m.merge(wn_rows, ALL)
    s = result.stats
    assert s["linked_by"] == {"p8814": 0, "taxon": 5, "name": 3}
    assert s["linked"] == len(result.links) == 8
    reasons = ("ambiguous", "contested", "weak", "taxon_conflict", "no_candidate", "p8814_elsewhere")
    assert [s[k] for k in reasons] == [2, 3, 1, 1, 2, 0]
    assert s["wikidata_only"] == len(ALL) - 8 == 2 + 3 + 1 + 1 + 2
    assert s["wordnet_only"] == len(wn_rows) - 8
    assert s["entities"] == len(result.entities) == len(wn_rows) + len(ALL) - 8
    assert sum(e.sources == ["wordnet", "wikidata"] for e in result.entities) == 8
    assert result.summary == (
        f"8 linked (taxon 5, name 3); {len(wn_rows) - 8:,} WordNet-only, 9 Wikidata-only "
        "(2 ambiguous, 1 weak, 3 contested, 1 taxon_conflict kept apart)"
    )
    assert s["thresholds"] == {
        "threshold": 0.3,
        "margin": 0.2,
        "name_bonus": 0.25,
        "taxon_bonus": 1.0,
        "p8814_bonus": 10.0,
    }


def test_output_is_sorted_and_independent_of_input_order(wn_rows) -> None:
    first = m.merge(wn_rows, ALL)
    shuffled_wn, shuffled_wd = list(wn_rows), list(ALL)
    random.Random(7).shuffle(shuffled_wn)
    random.Random(8).shuffle(shuffled_wd)
    second = m.merge(shuffled_wn, shuffled_wd)
    assert [e.id for e in first.entities] == sorted(e.id for e in first.entities)
    assert first.entities == second.entities
    assert first.links == second.links and first.unlinked == second.unlinked
    assert first.stats == second.stats


def test_duplicate_ids_are_an_error(wn_rows) -> None:
    with pytest.raises(ValueError, match="duplicate entity ids"):
        m.merge(wn_rows, [LION, LION])


def test_name_normalisation() -> None:
    assert m.norm_name("  Balm_of-Gilead \t tree ") == "balm of gilead tree"
    assert m.norm_taxon("Musa  ×paradisiaca") == "Musa paradisiaca"
    assert m.norm_taxon("Musa x paradisiaca") == "Musa paradisiaca"
    assert m.content_words("species of big cats; berries, fishes and the genus Musa") == {
        "big",
        "cat",
        "berry",
        "fish",
        "musa",
    }
