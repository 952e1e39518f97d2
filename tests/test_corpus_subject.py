"""Corpus matching by subject (issue 14): a caption's subject, the match modes, folder categories,
multi-word queries, the evidence each hit keeps, and the index format."""

import sqlite3
import tarfile
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kgclip.config import parse
from kgclip.pipeline import StageContext
from kgclip.search import stage as search_stage
from kgclip.search.corpus import CorpusBackend, StaleIndex, build_index
from kgclip.search.subject import caption_subject
from kgclip.tables import Hit, Query, QueryParams, read_records, write_records
from kgclip.workdir import Workdir

# Real caption shapes: Tux Paint first lines, and the examples of incidental words.
SUBJECTS = [
    ("A red kangaroo.", "red kangaroo", {"kangaroo", "red kangaroo"}, set()),
    ("An echidna looking for ants.", "echidna", {"echidna"}, {"ants", "ant"}),
    ("A tiger in the grass.", "tiger", {"tiger"}, {"grass"}),
    ("A sea lion.", "sea lion", {"sea lion"}, {"lion", "sea"}),
    ("A coral trout.", "coral trout", {"coral trout"}, {"trout", "coral"}),
    ("A rubber duck.", "rubber duck", {"rubber duck"}, {"duck"}),
    ("A VW Beetle.", "VW Beetle", {"vw beetle"}, {"beetle"}),
    ("An F-22 Raptor.", "F-22 Raptor", {"f 22 raptor"}, {"raptor"}),
    ("Teddy bear.", "Teddy bear", {"teddy bear"}, {"bear"}),
    ("Edward Bear.", "Edward Bear", {"edward bear"}, {"bear"}),
    (
        "A Canadian dollar ($1.00) called a loonie. It’s named after the bird on the coin—a loon.",
        "Canadian dollar",
        {"dollar"},
        {"loon", "bird", "loonie"},
    ),
    ("Uranus—one of the “gas giants” in our solar system.", "Uranus", {"uranus"}, {"giants", "giant"}),
    ("A hoverfly resembles a honeybee drone.", "hoverfly", {"hoverfly"}, {"drone", "honeybee"}),
    ("A Sumatran tiger.", "Sumatran tiger", {"tiger", "sumatran tiger"}, set()),
    ("A european bear.", "european bear", {"bear", "european bear"}, set()),
    ("A great blue heron.", "great blue heron", {"heron", "blue heron", "great blue heron"}, {"blue"}),
    ("A blue and yellow flag.", "blue and yellow flag", {"flag", "yellow flag"}, {"blue"}),
    ("A big eared rabbit.", "big eared rabbit", {"rabbit"}, set()),
    ("A ripe, red tomato!", "ripe, red tomato", {"tomato", "red tomato"}, {"ripe"}),
    ("A hibiscus flower.", "hibiscus flower", {"hibiscus", "flower", "hibiscus flower"}, set()),
    ("Red plastic flower.", "Red plastic flower", {"plastic flower"}, {"flower", "plastic"}),
    ("A fox cub in snow.", "fox cub", {"fox", "cub", "fox cub"}, {"snow"}),
    ("A toy fox cub.", "toy fox cub", {"toy fox cub"}, {"fox", "cub", "fox cub"}),
    ("A pair of cherries.", "cherries", {"cherries"}, {"pair"}),
    ("The baby of a gnu.", "gnu", {"gnu"}, {"baby"}),
    ("A baby sheep (a lamb).", "baby sheep", {"sheep", "lamb"}, {"baby"}),
    ("A Seville orange, also called a bitter orange.", "Seville orange", {"orange", "bitter orange"}, set()),
    ("Knight. The only piece that can jump over others.", "Knight", {"knight"}, {"piece"}),
    ("Eat your broccoli!", "broccoli", {"broccoli"}, {"eat"}),
    ("A chick hatched from an egg.", "chick", {"chick"}, {"egg", "hatched"}),
    ("A silver garbage can.", "silver garbage can", {"garbage can"}, {"can", "silver"}),
    ("A Jack-o’-lantern.", "Jack-o’-lantern", {"jack o lantern"}, {"lantern", "jack"}),
]


@pytest.mark.parametrize(("caption", "phrase", "has", "lacks"), SUBJECTS, ids=[s[0][:30] for s in SUBJECTS])
def test_caption_subject(caption, phrase, has, lacks):
    subject = caption_subject(caption)
    assert subject.text == phrase
    assert has <= set(subject.keys)
    assert not lacks & set(subject.keys)


def test_a_caption_without_a_noun_phrase_has_no_subject():
    assert caption_subject("– Because a brain is a terrible thing to waste…").keys == ()
    assert caption_subject("").keys == ()


# (folder, caption): each is one image of a small folder corpus.
CORPUS = [
    ("animals/marsupials", "A red kangaroo."),
    ("animals/mammals", "An echidna looking for ants."),
    ("animals/mammals/cats", "A tiger in the grass."),
    ("animals/mammals/cats", "A lion resting under a big old tree in the afternoon sun."),
    ("animals/mammals/aquatic", "A sea lion."),
    ("animals/pets", "A rabbit."),
    ("animals/pets", "A goldfish in a bowl."),
    ("household", "A rubber duck."),
    ("symbols/chess", "A grass."),
    ("symbols/chess", "A knight."),
    ("plants", "A chess grass."),
    ("hobbies", "A falcon."),
    ("cartoon", "A cartoon kangaroo."),
]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("subject") / "src"
    for i, (folder, caption) in enumerate(CORPUS):
        (src / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), "red").save(src / folder / f"{i}.png")
        (src / folder / f"{i}.txt").write_text(caption)
    out = src.parent / "corpus.sqlite"
    build_index(src, out, "folder")
    return out


def q(text: str, exclude: tuple[str, ...] = ()) -> Query:
    return Query("id", "entity", text, None, None, QueryParams(exclude_terms=list(exclude)))


def captions(index: Path, text: str, match: str = "subject", categories: bool = False, **kw) -> list[str]:
    backend = CorpusBackend(index, match, categories)
    try:
        return [f.alt_text for f in backend.search_now(q(text, **kw), 20).results]
    finally:
        backend.close()


def test_subject_mode_matches_only_what_the_caption_is_about(index):
    assert captions(index, "kangaroo") == ["A red kangaroo."]  # not the cartoon one: "cartoon kangaroo"
    assert captions(index, "red kangaroo") == ["A red kangaroo."]
    assert captions(index, "echidna") == ["An echidna looking for ants."]
    assert captions(index, "ant") == []
    assert captions(index, "grass") == ["A grass."]  # the tiger is only "in the grass"
    assert captions(index, "lion") == ["A lion resting under a big old tree in the afternoon sun."]
    assert captions(index, "sea lion") == ["A sea lion."]
    assert captions(index, "duck") == []
    assert captions(index, "tree") == []


def test_subject_first_ranks_subject_matches_above_mentions(index):
    """BM25 alone puts the short "A sea lion." first; subject_first puts the lion first, and keeps the
    mention below it; anywhere keeps BM25's order."""
    lion = "A lion resting under a big old tree in the afternoon sun."
    assert captions(index, "lion", "anywhere") == ["A sea lion.", lion]
    assert captions(index, "lion", "subject_first") == [lion, "A sea lion."]
    assert captions(index, "ant", "subject_first") == ["An echidna looking for ants."]


def test_folder_categories_match_only_when_configured(index):
    corpus = parse({"name": "t", "search": {"corpus": {"source": "/x"}}}).search.corpus
    assert corpus is not None and (corpus.match, corpus.match_categories) == ("subject", "kinds")
    backend = CorpusBackend(index)  # the defaults
    try:
        assert backend.search_now(q("pet"), 20).results == []
    finally:
        backend.close()
    for match in ("subject", "subject_first", "anywhere"):
        assert captions(index, "pet", match) == []
        assert captions(index, "hobby", match) == []
    assert sorted(captions(index, "pet", "subject", True)) == ["A goldfish in a bowl.", "A rabbit."]
    assert captions(index, "hobby", "subject", True) == ["A falcon."]
    # a caption's subject still ranks above a folder name
    assert captions(index, "grass", "subject", True)[0] == "A grass."


def test_multi_word_queries_need_every_word_in_one_field(index):
    """A qualified query ("chess grass", "hobby falcon") must not match a caption holding one word
    and a folder holding the other."""
    for categories in (False, True):
        for match in ("subject", "subject_first", "anywhere"):
            assert captions(index, "chess grass", match, categories) == ["A chess grass."]
            assert captions(index, "hobby falcon", match, categories) == []
            assert captions(index, "chess knight", match, categories) == []


def test_exclude_terms_still_apply(index):
    assert sorted(captions(index, "kangaroo", "anywhere")) == ["A cartoon kangaroo.", "A red kangaroo."]
    assert captions(index, "kangaroo", "anywhere", exclude=("cartoon",)) == ["A red kangaroo."]


def test_each_hit_says_which_field_and_words_matched(index):
    def evidence(text, match="subject", categories=False):
        backend = CorpusBackend(index, match, categories)
        try:
            return [orjson.loads(f.evidence) for f in backend.search_now(q(text), 20).results]
        finally:
            backend.close()

    assert evidence("kangaroos") == [{"field": "caption", "words": ["kangaroo"], "subject": True}]
    assert evidence("ants", "anywhere") == [{"field": "caption", "words": ["ants"], "subject": False}]
    pets = {"field": "category", "words": ["pets"], "subject": False}
    assert evidence("pet", "subject", True) == [pets, pets]


def test_an_older_index_is_refused_with_how_to_rebuild_it(index, tmp_path):
    old = tmp_path / "old.sqlite"
    old.write_bytes(index.read_bytes())
    db = sqlite3.connect(old)
    db.execute("UPDATE meta SET value = 'kgclip-corpus-1' WHERE key = 'format'")
    db.execute("DELETE FROM meta WHERE key = 'subject_rule'")
    db.commit()
    db.close()
    with pytest.raises(StaleIndex, match=r"older kgclip .*rebuild it with `kgclip corpus index"):
        CorpusBackend(old)


def test_search_stage_rebuilds_an_older_index_and_writes_evidence(tmp_path):
    src = tmp_path / "src"
    for i, caption in enumerate(["A red fox.", "A fox terrier in a field of grass.", "A rubber duck."]):
        src.mkdir(exist_ok=True)
        Image.new("RGB", (50 + i, 40), "red").save(src / f"{i}.png")
        (src / f"{i}.txt").write_text(caption)
    config = parse({"name": "t", "search": {"corpus": {"source": str(src)}}})
    wd = Workdir(tmp_path / "wd")
    build_index(src, wd.path("corpus.sqlite"))
    db = sqlite3.connect(wd.path("corpus.sqlite"))
    db.execute("UPDATE meta SET value = 'kgclip-corpus-1' WHERE key = 'format'")
    db.commit()
    db.close()
    queries = [
        Query(f"q{i}", "entity", t, f"wn:{i}", None, QueryParams()) for i, t in enumerate(["fox", "grass"])
    ]
    write_records(wd.path("queries.parquet"), queries, Query)
    search_stage.run(StageContext(config, wd))
    assert CorpusBackend(wd.path("corpus.sqlite")).corpus_id  # rebuilt in the current format
    hits = list(read_records(wd.path("hits.parquet"), Hit))
    assert [(h.query_id, h.alt_text, orjson.loads(h.evidence or "null")) for h in hits] == [
        ("q0", "A red fox.", {"field": "caption", "words": ["fox"], "subject": True})
    ]


def test_hits_written_before_evidence_read_as_none(tmp_path):
    """hits.parquet from an earlier kgclip has no evidence column: it reads, with None."""
    path = tmp_path / "hits.parquet"
    old = Hit.SCHEMA.remove(Hit.SCHEMA.get_field_index("evidence"))
    row = {"query_id": "q", "backend": "openverse", "rank": 1, "url": "https://x/a.jpg", "page_url": None,
           "alt_text": "", "width": None, "height": None, "license": None, "attribution": None}
    pq.write_table(pa.Table.from_pylist([row], schema=old), path)
    assert [h.evidence for h in read_records(path, Hit)] == [None]


def test_demo_links_pictures_by_subject_with_evidence(demo_run):
    """The demo's samples: every link has subject evidence in samples.parquet and in the sample
    JSON, and the issue's examples are gone (sea lion → lion, rubber duck, VW Beetle, F-22,
    loonie → loon, chess pieces and hobbies by folder)."""
    samples = pq.read_table(demo_run / "samples.parquet").to_pylist()
    entities = {e["id"]: e["name"] for e in pq.read_table(demo_run / "entities.parquet").to_pylist()}
    by_caption = {s["caption"]: s for s in samples}
    gone = ("A rubber duck.", "A VW Beetle.", "An F-22 Raptor.", "A walnut sailboat.", "A Jack-o’-lantern.")
    for caption in (*gone, "A trumpet.", "A yellow flag.", "Edward Bear.", "A clock face."):
        assert caption not in by_caption, caption  # other senses of a name, spelt otherwise or composed
    black_cat = {entities[e] for e in by_caption.get("A black cat.", {"entity_ids": []})["entity_ids"]}
    assert not {"big cat", "fisher"} & black_cat  # (it is in seasonal/halloween/: no folder of animals)
    assert {entities[e] for e in by_caption["A seahorse."]["entity_ids"]} >= {"seahorse"}
    assert "walrus" not in {entities[e] for e in by_caption["A seahorse."]["entity_ids"]}
    assert "lion" not in {entities[e] for e in by_caption["A sea lion."]["entity_ids"]}
    assert "loon" not in {entities[e] for s in samples for e in s["entity_ids"] if "loonie" in s["caption"]}
    linked = {entities[e] for s in samples for e in s["entity_ids"]}
    assert not {"hobby", "chess", "giant", "redstem storksbill"} & linked  # Uranus a "gas giant", a clock
    for caption, names in ((s["caption"], {entities[e] for e in s["entity_ids"]}) for s in samples):
        if "rabbit" in caption.lower() or "sheep" in caption.lower():
            assert not {"rodent", "bovine"} & names, caption  # by folder, but not kinds of them
    for s in samples:
        evidence = [orjson.loads(e) for e in s["evidence"]]
        assert {e["query_id"] for e in evidence} == set(s["query_ids"])
        assert all(e["backend"] == "corpus" for e in evidence)
        # a caption match is the subject; a folder match is allowed only for a kind of the entity
        assert all((e["subject"] and e["field"] == "caption") or e["field"] == "category" for e in evidence)
    first = samples[0]
    with tarfile.open(demo_run / ("shards" if first["split"] == "train" else "val") / first["shard"]) as tar:
        meta = orjson.loads(tar.extractfile(f"{first['key']}.json").read())
    assert meta["evidence"] == [orjson.loads(e) for e in first["evidence"]]
    assert {e["entity_id"] for e in meta["evidence"]} <= set(first["entity_ids"])


def test_a_folder_links_a_picture_only_to_what_wordnet_says_its_subject_is_a_kind_of(demo_run):
    """`match_categories = "kinds"` (the default): a blackbird in animals/birds is a bird and a koala
    in marsupials/ a marsupial, but a rabbit in rodents/ is no rodent (a lagomorph) and a sheep in
    bovines/ no bovine (WordNet: genus Bos)."""
    samples = pq.read_table(demo_run / "samples.parquet").to_pylist()
    entities = {e["id"]: e["name"] for e in pq.read_table(demo_run / "entities.parquet").to_pylist()}
    linked = {s["caption"]: {entities[e] for e in s["entity_ids"]} for s in samples}
    assert "bird" in linked["A blackbird."] and {"koala", "marsupial"} <= linked["A koala."]
    assert {"rodent"} == linked["A beaver."] and "bovine" in linked["A yak."]
    by_category = [
        (s["caption"], entities[orjson.loads(e)["entity_id"]])
        for s in samples
        for e in s["evidence"]
        if orjson.loads(e)["field"] == "category"
    ]
    assert ("A blackbird.", "bird") in by_category
    assert ("A beaver.", "rodent") in by_category and "pet" not in {name for _, name in by_category}
    wrong = [(c, n) for c, n in by_category if n in ("rodent", "bovine") and ("rabbit" in c or "sheep" in c)]
    assert wrong == []


def test_the_kind_check_follows_wordnet_hypernyms():
    from kgclip.search.corpus import number_variants
    from kgclip.search.kinds import KindCheck

    check = KindCheck.open(number_variants)
    bird, rodent, bovine = "wn:n01503061", "wn:n02329401", "wn:n02402010"
    assert check.is_kind(["blackbird"], bird) and not check.is_kind(["blackbird"], rodent)
    assert check.is_kind(["european blackbird"], bird)  # a phrase WordNet lacks: its last words
    assert check.is_kind(["blackbirds"], bird)  # a plural
    assert not check.is_kind(["rabbit"], rodent) and check.is_kind(["beaver"], rodent)
    assert not check.is_kind(["sheep"], bovine) and not check.is_kind(["bison"], bovine)  # genus Bos only
    assert check.is_kind(["yak"], bovine) and check.is_kind(["cow"], bovine)
    assert not check.is_kind(["blackbird"], "wd:Q25334")  # no hierarchy to check a Wikidata item against
    bear = "wn:n02131653"
    assert check.is_kind(["european bear"], bear) and check.is_kind(["Brown bear"], bear)
    assert not check.is_kind(["Edward Bear"], bear)  # a name (a teddy's): its last word says nothing
    assert not check.is_kind(["Teddy bear"], bear)  # WordNet's teddy bear is a toy


def test_a_folder_name_with_underscores_is_a_category_match_and_checked_as_one(tmp_path):
    """FTS5 splits "big_cats" into big + cats: a tiger named "Tigre01" in animals/mammals/big_cats
    matched the query "cat" through its folder, but the evidence called it a caption match, so the
    kind check never ran and the tiger became a true cat."""
    from kgclip.search.subject import key_tokens

    assert key_tokens("animals/mammals/big_cats") == ["animals", "mammals", "big", "cats"]
    src = tmp_path / "src"
    for folder, name, caption in (("big_cats", "tigre01", "Tigre01"), ("cats", "tabby", "A tabby cat.")):
        (src / "animals" / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), "orange").save(src / "animals" / folder / f"{name}.png")
        (src / "animals" / folder / f"{name}.txt").write_text(caption + "\n")
    index = tmp_path / "c.sqlite"
    build_index(src, index, importer="tuxpaint")
    backend = CorpusBackend(index, match_categories="kinds")
    cat = Query("q", "entity", "cat", "wn:n02121620", None, QueryParams())
    found = backend.search_now(cat, 10).results
    assert [f.alt_text for f in found] == ["A tabby cat."]


def test_a_folder_must_be_about_the_entitys_kind_of_thing():
    """A picture in office/ is no storksbill and a chess queen in games/ no queen; animals/,
    food/fruits and a folder naming the entity or a kind of it fit. Folder words are read in their
    prominent senses: "games" are contests (not game animals), "flags" emblems (not irises)."""
    from kgclip.search.corpus import number_variants
    from kgclip.search.kinds import KindCheck

    check = KindCheck.open(number_variants)
    storksbill, queen, apple_tree, tiger = "wn:n12688903", "wn:n02313008", "wn:n12633994", "wn:n02129604"
    assert not check.folder_fits("office", storksbill) and not check.folder_fits("computer/icons", storksbill)
    assert check.folder_fits("signs_and_symbols/clocks", storksbill)  # "clocks" is one of its names
    assert not check.folder_fits("recreation/games", queen)  # "chess", never tagged, is a grass too
    assert not check.folder_fits("signs_and_symbols/flags/asia", "wn:n01794158")  # turkey the bird
    assert check.folder_fits("animals/mammals/big_cats", tiger)
    assert check.folder_fits("animals/insects", queen) and check.folder_fits("food/fruit", apple_tree)
    assert check.folder_fits("big_cats", tiger)  # names a kind above the tiger
    assert check.folder_fits("", storksbill) and check.folder_fits("office", "wd:Q1")  # nothing to check
    assert check.folder_fits("office", "wn:n00000001")  # no such synset: nothing to judge by


def test_a_compound_subject_wordnet_knows_must_be_a_kind_part_or_product_of_the_entity():
    from kgclip.search.corpus import number_variants
    from kgclip.search.kinds import KindCheck

    check = KindCheck.open(number_variants)
    dog, boar, piper, capsicum = "wn:n02084071", "wn:n02396014", "wn:n13149506", "wn:n12900462"
    assert check.compound_denies("Hot Dog", dog) and check.compound_denies("Hot_Dog", dog)
    assert check.compound_denies("wild boars", boar)  # the wild boar is no uncastrated male hog
    assert check.compound_denies("green pepper", piper)  # a capsicum's fruit
    assert not check.compound_denies("green pepper", capsicum)  # food → pepper fruit → capsicum
    assert not check.compound_denies("great blue heron", "wn:n02008497")
    assert not check.compound_denies("european bear", "wn:n02131653")  # WordNet lacks it: no verdict
    assert not check.compound_denies("dog", dog)  # one word: the subject rule has matched it
    assert not check.compound_denies("red fox", "wn:n00000001")  # no such synset: no verdict
