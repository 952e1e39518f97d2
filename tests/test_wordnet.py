"""The wndb reader against the real WordNet 3.0 files; expected names are what nltk gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kgclip.kg import wordnet
from kgclip.kg.wordnet import (
    HYPONYM,
    INSTANCE_HYPONYM,
    PART_MERONYM,
    UnknownSynset,
    WordNet,
    WordNetNotFound,
    find_database,
    has_database,
    open_wordnet,
)

# The set-up installs Debian's WordNet; without it these tests must fail, not skip.
DB = find_database()


@pytest.fixture(scope="module")
def wn() -> WordNet:
    return open_wordnet()


def names(wn: WordNet, offsets: tuple[int, ...]) -> list[str]:
    return [wn.by_offset(o).name for o in offsets]


@pytest.mark.parametrize(
    ("wnid", "name"),
    [
        ("n01440764", "tench.n.01"),
        ("n01443537", "goldfish.n.01"),
        ("n02084071", "dog.n.01"),
        ("n07753592", "banana.n.02"),  # the fruit; banana.n.01 is the plant
        ("n02123045", "tabby.n.01"),
        ("n04037443", "racer.n.02"),
        ("n15075141", "toilet_tissue.n.01"),
        ("n00004258", "living_thing.n.01"),
    ],
)
def test_wnids_and_names_resolve_both_ways(wn: WordNet, wnid: str, name: str) -> None:
    assert wn.synset(wnid).name == name
    assert wn.synset(name).wnid == wnid
    assert wn.synset(f"wn:{wnid}").name == name
    assert wn.synset(int(wnid[1:])).name == name


def test_any_lemma_sense_resolves_like_nltk(wn: WordNet) -> None:
    assert wn.synset("domestic_dog.n.01").name == "dog.n.01"
    assert wn.synset("Dog.N.01").name == "dog.n.01"
    assert wn.synset("banana.n.01").name == "banana.n.01"
    assert wn.synset("banana.n.01").offset != wn.synset("banana.n.02").offset


@pytest.mark.parametrize("ref", ["dog.n.99", "dog.v.01", "nosuchword.n.01", "dog", "n99999999", "n00000001"])
def test_unknown_synsets_raise(wn: WordNet, ref: str) -> None:
    with pytest.raises(UnknownSynset):
        wn.synset(ref)


def test_lemmas_keep_case_and_gloss_splits_like_nltk(wn: WordNet) -> None:
    dog = wn.synset("dog.n.01")
    assert dog.lemmas == ("dog", "domestic_dog", "Canis_familiaris")
    assert dog.definition.startswith("a member of the genus Canis")
    assert dog.definition.endswith("occurs in many breeds")
    assert dog.examples == ["the dog barked all night"]
    assert dog.lexfile == 5  # noun.animal
    assert not dog.is_instance


def test_pointers_by_symbol(wn: WordNet) -> None:
    dog = wn.synset("dog.n.01")
    assert "puppy.n.01" in names(wn, dog.related(HYPONYM))
    assert names(wn, dog.related("@")) == ["canine.n.02", "domestic_animal.n.01"]
    assert set(names(wn, wn.synset("tree.n.01").related(PART_MERONYM))) >= {"trunk.n.01", "limb.n.02"}
    racehorses = names(wn, wn.synset("thoroughbred.n.02").related(INSTANCE_HYPONYM))
    assert "secretariat.n.02" in racehorses
    assert wn.synset("secretariat.n.02").is_instance


def test_popularity_is_the_semcor_tag_count(wn: WordNet) -> None:
    assert wn.popularity(wn.synset("dog.n.01").offset) == 42
    assert wn.popularity(wn.synset("tree.n.01").offset) == 107
    assert wn.popularity(wn.synset("tabby.n.01").offset) == 0


def test_hyponym_closures_match_nltk(wn: WordNet) -> None:
    living = wn.synset("living_thing.n.01")
    assert sum(1 for _ in wn.hyponym_closure(living)) == 16_254
    assert sum(1 for _ in wn.hyponym_closure(living, instances=True)) == 19_591
    assert sum(1 for _ in wn.hyponym_closure(wn.synset("dog.n.01"))) == 189


def test_open_wordnet_is_shared_within_a_process() -> None:
    assert open_wordnet() is open_wordnet(DB)


def test_missing_folder_names_the_packages(tmp_path: Path) -> None:
    with pytest.raises(WordNetNotFound) as err:
        find_database(tmp_path / "nowhere")
    assert isinstance(err.value, RuntimeError)
    assert "apt-get install wordnet-base wordnet-sense-index" in str(err.value)
    assert "nltk_data" in str(err.value)


def test_nothing_installed_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(wordnet, "NLTK_DATA_DIRS", ())
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "empty"))
    with pytest.raises(WordNetNotFound, match="wordnet-base"):
        find_database()


def test_nltk_data_tree_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "nltk_data" / "corpora" / "wordnet"
    corpus.mkdir(parents=True)
    for name in ("data.noun", "index.noun"):
        shutil.copy(DB / name, corpus / name)
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("NLTK_DATA", f"{tmp_path / 'elsewhere'}:{tmp_path / 'nltk_data'}")
    assert find_database() == corpus
    assert has_database(corpus)
    wn = open_wordnet()
    assert wn.folder == corpus.resolve()
    dog = wn.synset("n02084071")
    assert dog.name == "dog.n.01"
    # Without index.sense (package wordnet-sense-index) popularity is 0 and the reader says why.
    assert wn.popularity(dog.offset) == 0
    assert any("index.sense" in w for w in wn.warnings)
