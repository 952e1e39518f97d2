"""Class texts: every name style against real WordNet 3.0 and a harvest's entities table, the bundled
prompt sets against open_clip's own lists, and the errors for unusable prompt sets."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kgclip.eval.classtexts import (
    PROMPT_SETS,
    STYLES,
    ClassTexts,
    ClassTextsError,
    KGNames,
    class_texts,
    load_templates,
    taxonomic_string,
)
from kgclip.eval.sets import CLASSIFICATION, RETRIEVAL, ClassInfo, EvalSet
from kgclip.tables import Entity, write_records

RAVEN_TAXONOMY = {
    "kingdom": "Animalia",
    "phylum": "Chordata",
    "class": "Aves",
    "order": "Passeriformes",
    "family": "Corvidae",
    "genus": "Corvus",
    "species": "Corvus corax",
}
CLASSES = (
    ClassInfo("dog", wnid="n02084071"),
    ClassInfo("Corvus corax", scientific="Corvus corax", common="common raven", taxonomy=RAVEN_TAXONOMY),
    ClassInfo("mystery"),
    ClassInfo("giant panda", wnid="n02510455"),
    ClassInfo("tabby", wnid="n02123045", aliases=("Tabby Cat", "striped cat")),
)


def evalset(classes=CLASSES, templates: tuple[str, ...] = (), task: str = CLASSIFICATION) -> EvalSet:
    return EvalSet("toy", task, classes, lambda: iter(()), "fp", "test:toy", templates)


def entity(eid: str, name: str, wordnet: str | None, **kw) -> Entity:
    fields = {"aliases": [], "description": "", "root": "wn:n00015388", "parents": [], "is_leaf": True}
    return Entity(id=eid, name=name, wordnet=wordnet, **(fields | kw))


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A harvest's entities table with the real schema: a merged dog, a merged panda without common
    names, a WordNet-only tabby and a Wikidata-only item that no class wnid can reach."""
    rows = [
        entity(
            "wn:n02084071",
            "dog",
            "n02084071",
            aliases=["domestic dog", "Canis familiaris", "Canis lupus familiaris", "Dog"],
            wikidata="Q144",
            taxon_name="Canis lupus familiaris",
            common_names=["domestic dog", "dogs"],
        ),
        entity("wn:n02510455", "giant panda", "n02510455", aliases=["panda"], wikidata="Q33602"),
        entity("wn:n02123045", "tabby", "n02123045", aliases=["tabby cat"]),
        entity("wd:Q1", "mystery", None, wikidata="Q1", common_names=["mystery"], taxon_name="Mysterium"),
    ]
    write_records(tmp_path / "entities.parquet", rows, Entity)
    return tmp_path


@pytest.fixture
def kg(workdir) -> KGNames:
    return KGNames.load(workdir)


def names_of(result: ClassTexts) -> list[list[str]]:
    """With the `none` prompt set ("{c}") a class's texts are exactly its names."""
    return result.texts


def test_real_wordnet_lemmas():
    kg = KGNames.load()
    assert kg.lemmas("n02084071") == ("dog", "domestic dog", "Canis familiaris")
    assert kg.lemmas("n02121808") == ("domestic cat", "house cat", "Felis domesticus", "Felis catus")
    assert kg.lemmas("n99999999") == ()
    assert kg.lemmas(None) == ()


def test_style_name_never_falls_back(kg):
    result = class_texts(evalset(), "name", "none", kg)
    assert names_of(result) == [["dog"], ["Corvus corax"], ["mystery"], ["giant panda"], ["tabby"]]
    assert (result.style, result.prompts, result.fallbacks) == ("name", "none", 0)


def test_style_lemma_first_wordnet_lemma(kg):
    result = class_texts(evalset(), "lemma", "none", kg)
    assert names_of(result) == [["dog"], ["Corvus corax"], ["mystery"], ["giant panda"], ["tabby"]]
    assert result.fallbacks == 2
    assert result.fallback_classes == ["Corvus corax", "mystery"]


def test_style_lemmas_unites_synset_entity_and_set_aliases(kg):
    result = class_texts(evalset(), "lemmas", "none", kg)
    assert names_of(result) == [
        ["dog", "domestic dog", "Canis familiaris", "Canis lupus familiaris"],
        ["Corvus corax"],
        ["mystery"],
        ["giant panda", "panda", "panda bear", "coon bear", "Ailuropoda melanoleuca"],
        ["tabby", "tabby cat", "striped cat"],
    ]
    assert result.fallbacks == 2


def test_style_common(kg):
    result = class_texts(evalset(), "common", "none", kg)
    # dog: the entity's first P1843 name; raven: the set's; panda: the Wikidata-linked label;
    # tabby is WordNet-only (its label is just a lemma), mystery has nothing: both fall back.
    assert names_of(result) == [["domestic dog"], ["common raven"], ["mystery"], ["giant panda"], ["tabby"]]
    assert result.fallback_classes == ["mystery", "tabby"]


def test_style_scientific(kg):
    result = class_texts(evalset(), "scientific", "none", kg)
    assert names_of(result) == [
        ["Canis lupus familiaris"],
        ["Corvus corax"],
        ["mystery"],
        ["giant panda"],
        ["tabby"],
    ]
    assert result.fallback_classes == ["mystery", "giant panda", "tabby"]


def test_style_taxonomic(kg):
    result = class_texts(evalset(), "taxonomic", "none", kg)
    assert names_of(result)[1] == ["Animalia Chordata Aves Passeriformes Corvidae Corvus corax"]
    assert result.fallbacks == 4


def test_taxonomic_string_epithet_or_binomial_and_partial():
    expected = "Animalia Chordata Aves Passeriformes Corvidae Corvus corax"
    assert taxonomic_string(RAVEN_TAXONOMY) == expected
    assert taxonomic_string(RAVEN_TAXONOMY | {"species": "corax"}) == expected
    assert taxonomic_string({"genus": "Corvus", "kingdom": "Animalia"}) == "Animalia Corvus"
    assert taxonomic_string({}) is None


def test_style_scicom(kg):
    result = class_texts(evalset(), "scicom", "none", kg)
    assert names_of(result)[:2] == [
        ["Canis lupus familiaris with common name domestic dog"],
        ["Corvus corax with common name common raven"],
    ]
    assert result.fallback_classes == ["mystery", "giant panda", "tabby"]


def test_without_a_workdir_only_the_set_and_wordnet_give_names():
    kg = KGNames.load()
    common = class_texts(evalset(), "common", "none", kg)
    assert common.fallback_classes == ["dog", "mystery", "giant panda", "tabby"]
    assert class_texts(evalset(), "scientific", "none", None).fallbacks == 4
    lemmas = class_texts(evalset(), "lemmas", "none", kg)
    assert lemmas.texts[0] == ["dog", "domestic dog", "Canis familiaris"]


def test_wordnet_styles_need_kg():
    with pytest.raises(ClassTextsError, match="reads WordNet"):
        class_texts(evalset(), "lemma", "none", None)


def test_ensemble_is_every_template_times_every_name(kg):
    result = class_texts(evalset(), "lemmas", "inat", kg)
    assert result.prompts == "inat"
    dog_names = ["dog", "domestic dog", "Canis familiaris", "Canis lupus familiaris"]
    assert result.texts[0] == [f"a photo of a {n}." for n in dog_names] + [f"{n}." for n in dog_names]
    assert [len(t) for t in result.texts] == [8, 2, 2, 10, 6]


def test_every_style_and_bundled_prompt_set_runs(kg):
    for style in STYLES:
        for prompts in PROMPT_SETS[:-1]:
            result = class_texts(evalset(), style, prompts, kg)
            assert len(result.texts) == len(CLASSES)
            assert all(t and all("{c}" not in s for s in t) for t in result.texts)


def test_unknown_style_and_retrieval_set(kg):
    with pytest.raises(ClassTextsError, match="unknown name style 'latin'"):
        class_texts(evalset(), "latin", "none", kg)
    with pytest.raises(ClassTextsError, match="classification set"):
        class_texts(evalset(classes=(), task=RETRIEVAL), "name", "none", kg)


def open_clip_templates(name: str) -> list:
    """open_clip's template lambdas, read from its source without importing it (that imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations
    source = Path(spec.submodule_search_locations[0]) / "zero_shot_metadata.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [name]:
            # The tuple holds f-string lambdas only: evaluating it runs no other code.
            return eval(compile(ast.Expression(node.value), str(source), "eval"), {})
    raise AssertionError(f"{name} not in {source}")


@pytest.mark.parametrize(
    ("prompts", "constant", "count"),
    [
        ("openai_imagenet", "OPENAI_IMAGENET_TEMPLATES", 80),
        ("simple_imagenet", "SIMPLE_IMAGENET_TEMPLATES", 7),
    ],
)
def test_bundled_templates_render_as_open_clips(prompts, constant, count):
    ours = class_texts(evalset(classes=(ClassInfo("great grey owl"),)), "name", prompts, None).texts[0]
    theirs = [template("great grey owl") for template in open_clip_templates(constant)]
    assert len(ours) == count
    assert ours == theirs


def test_small_bundled_sets():
    assert load_templates("none") == ("none", ("{c}",))
    assert load_templates("inat") == ("inat", ("a photo of a {c}.", "{c}."))
    assert load_templates("cub") == ("cub", ("a photo of a {c}, a type of bird.",))


def test_set_templates(kg):
    own = evalset(templates=("a photo of the {c}.", "{c} in the wild"))
    assert class_texts(own, "name", "set", kg).texts[0] == ["a photo of the dog.", "dog in the wild"]
    with pytest.raises(ClassTextsError, match="toy has no templates of its own"):
        class_texts(evalset(), "name", "set", kg)
    with pytest.raises(ClassTextsError, match="has no \\{c\\} placeholder"):
        class_texts(evalset(templates=("a photo",)), "name", "set", kg)


def test_user_template_file(tmp_path, kg):
    path = tmp_path / "mine.txt"
    path.write_text("a {c} in {braces} stays.\n\n  art of the {c}.  \n", encoding="utf-8")
    result = class_texts(evalset(), "name", str(path), kg)
    assert result.prompts == "mine.txt"
    assert result.texts[0] == ["a dog in {braces} stays.", "art of the dog."]


def test_user_template_file_errors(tmp_path, kg):
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a {c}.\na photo of a thing.\n", encoding="utf-8")
    with pytest.raises(ClassTextsError, match=r"bad\.txt:2: template 'a photo of a thing\.' has no"):
        class_texts(evalset(), "name", str(bad), kg)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ClassTextsError, match=r"empty\.txt: no templates"):
        class_texts(evalset(), "name", str(empty), kg)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe{c}")
    with pytest.raises(ClassTextsError, match=r"binary\.txt: cannot read"):
        class_texts(evalset(), "name", str(binary), kg)
    for missing in (tmp_path / "nope.txt", tmp_path):
        with pytest.raises(ClassTextsError, match=r"not one of none, openai_imagenet.*and no such file"):
            class_texts(evalset(), "name", str(missing), kg)


def test_entities_table_errors(tmp_path):
    with pytest.raises(ClassTextsError, match=r"entities\.parquet: missing"):
        KGNames.load(tmp_path)
    pq.write_table(pa.table({"wordnet": ["n02084071"], "name": ["dog"]}), tmp_path / "entities.parquet")
    with pytest.raises(ClassTextsError, match=r"not an entities table .*aliases"):
        KGNames.load(tmp_path)


def test_default_prompts_are_the_sets_own_else_the_openai_templates():
    from kgclip.eval.classtexts import load_templates
    from kgclip.eval.sets import CLASSIFICATION, ClassInfo, EvalSet

    def evalset(templates: tuple[str, ...]) -> EvalSet:
        return EvalSet("s", CLASSIFICATION, [ClassInfo("cat")], lambda: iter(()), "fp", "here", templates)

    assert load_templates("default", evalset(("a {c} here.",))) == ("set", ("a {c} here.",))
    label, templates = load_templates("default", evalset(()))
    assert label == "openai_imagenet" and len(templates) == 80
