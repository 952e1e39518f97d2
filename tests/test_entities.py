"""The entities stage on real WordNet 3.0: the method's exact LivingThings numbers and the rules."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from kgclip.config import ConfigError, load_raw, parse
from kgclip.kg import entities as stage
from kgclip.kg import wordnet_select
from kgclip.kg.wordnet import WordNet, WordNetNotFound, find_database, open_wordnet
from kgclip.pipeline import StageContext, StageResult, harvest
from kgclip.tables import Entity, Rejected, read_records
from kgclip.workdir import Workdir


def livingthings(**wordnet: Any) -> dict[str, Any]:
    raw = load_raw("livingthings")
    raw["entities"]["wordnet"].update(wordnet)
    return raw


class Run:
    """One stage run with its outputs read back, keyed for the lookups the tests make."""

    def __init__(self, raw: dict[str, Any], root: Path) -> None:
        self.ctx = StageContext(parse(raw), Workdir(root))
        self.result: StageResult = stage.run(self.ctx)
        self.rows = list(read_records(self.ctx.path("entities.parquet"), Entity))
        self.rejects = list(read_records(self.ctx.path("rejects/entities.parquet"), Rejected))
        self.by_name = {e.wordnet_name: e for e in self.rows}
        self.reject_of = {r.item: r for r in self.rejects}


@pytest.fixture(scope="module")
def wn() -> WordNet:
    return open_wordnet()


@pytest.fixture(scope="module")
def lt(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(livingthings(), tmp_path_factory.mktemp("lt"))


def wnid_id(wn: WordNet, name: str) -> str:
    return wordnet_select.entity_id(wn.synset(name).offset)


def test_livingthings_counts_are_the_authors(lt: Run) -> None:
    stats = lt.result.stats["wordnet"]
    assert lt.result.rows == len(lt.rows) == 8_861
    assert (stats["selected"], stats["leaves"], stats["internal"]) == (8_861, 6_987, 1_874)
    assert sum(e.is_leaf for e in lt.rows) == 6_987
    assert stats["depth"] == {"mean": 7.792, "median": 8, "max": 14}
    assert lt.result.summary == "wordnet: 8,861 entities (6,987 leaves), 968 shared names"


def test_shared_name_stats(lt: Run) -> None:
    assert lt.result.stats["wordnet"]["query_strings"] == {"all": 19_604, "leaves": 16_707}
    assert lt.result.stats["wordnet"]["shared_names"] == {"all": 968, "leaves": 715}
    strings, shared = wordnet_select.shared_names(lt.rows)
    assert (strings, shared) == (19_604, 968)


def test_balm_of_gilead_is_one_shared_query_string(wn: WordNet, lt: Run) -> None:
    fir = lt.by_name["balsam_fir.n.01"]
    assert "balm of Gilead" in fir.aliases  # casing kept
    other = lt.by_name["balm_of_gilead.n.03"]
    assert other.name == "balm of gilead"
    assert wordnet_select.shared_names([fir, other]) == (5, 1)


def test_rows_are_sorted_and_resolve_back(wn: WordNet, lt: Run) -> None:
    ids = [e.id for e in lt.rows]
    assert ids == sorted(ids)
    for e in lt.rows:
        synset = wn.synset(e.wordnet)
        assert e.id == f"wn:{e.wordnet}" == f"wn:{synset.wnid}"
        assert synset.name == e.wordnet_name
        assert wn.synset(e.wordnet_name).offset == synset.offset
        assert e.sources == ["wordnet"]
        assert e.root == wnid_id(wn, "living_thing.n.01")


def test_entity_fields(wn: WordNet, lt: Run) -> None:
    dog = lt.by_name["dog.n.01"]
    assert dog.name == "dog"
    assert dog.aliases == ["domestic dog", "Canis familiaris"]
    assert dog.description.startswith("a member of the genus Canis") and '"' not in dog.description
    assert dog.popularity == 42
    assert not dog.is_leaf
    assert dog.parents == [wnid_id(wn, "canine.n.02"), wnid_id(wn, "domestic_animal.n.01")]
    assert lt.by_name["golden_retriever.n.01"].is_leaf


def test_root_is_kept_at_depth_zero(wn: WordNet, lt: Run) -> None:
    root = lt.by_name["living_thing.n.01"]
    assert (root.depth, root.is_leaf, root.id) == (0, False, root.root)
    assert lt.by_name["organism.n.01"].depth == 1
    assert lt.by_name["organism.n.01"].parents[0] == root.id


def test_primary_parent_follows_nltk_38_order(wn: WordNet, lt: Run) -> None:
    """Both parents are selected; nltk ≤ 3.8 sorted hypernyms by name, so food_fish comes first."""
    salmon = lt.by_name["salmon.n.01"]
    assert salmon.parents == [wnid_id(wn, "food_fish.n.01"), wnid_id(wn, "salmonid.n.01")]


def test_parents_inside_the_selection_come_first(wn: WordNet, lt: Run) -> None:
    depth = {e.id: e.depth for e in lt.rows}
    for e in lt.rows:
        flags = [p in depth for p in e.parents]
        assert flags == sorted(flags, reverse=True)
        if e.id != e.root:
            assert flags[0]
            assert e.depth == depth[e.parents[0]] + 1


def test_leaf_means_no_child_in_the_selection(lt: Run) -> None:
    has_child = {p for e in lt.rows for p in e.parents}
    assert all(e.is_leaf == (e.id not in has_child) for e in lt.rows)


def test_blacklisted_subtrees_are_dropped_and_explained(wn: WordNet, lt: Run) -> None:
    person = wnid_id(wn, "person.n.01")
    assert person not in {e.id for e in lt.rows}
    assert lt.reject_of[person] == Rejected("entities", person, "excluded_subtree", "person.n.01")
    mother = wnid_id(wn, "mother.n.01")  # only reachable through person.n.01
    assert "mother.n.01" not in lt.by_name
    assert lt.reject_of[mother].reason == "excluded_subtree"
    assert lt.reject_of[mother].detail == "person.n.01"
    assert lt.result.stats["wordnet"]["rejected"] == {
        "excluded_subtree": 10_712,
        "excluded_name": 8,
        "instance": 11,
        "instance_under": 0,
    }


def test_the_walk_stops_at_a_blacklisted_node_but_does_not_veto(lt: Run) -> None:
    """diatom.n.01 is below microorganism.n.01 and also an alga: the authors kept it, so do we."""
    assert "diatom.n.01" in lt.by_name
    assert "microorganism.n.01" not in lt.by_name


def test_blacklisted_names_and_instances(wn: WordNet, lt: Run) -> None:
    duck = wnid_id(wn, "donald_duck.n.01")
    assert lt.reject_of[duck] == Rejected("entities", duck, "excluded_name", "Donald_Duck")
    horse = wnid_id(wn, "secretariat.n.02")
    assert lt.reject_of[horse] == Rejected("entities", horse, "instance", "thoroughbred.n.02")
    assert not any(wn.synset(e.wordnet).is_instance for e in lt.rows)


def test_instances_without_rules_give_8880(tmp_path: Path) -> None:
    run = Run(livingthings(include_instances=True, exclude_names=[], drop_instances_under=[]), tmp_path)
    assert run.result.stats["wordnet"]["selected"] == 8_880
    assert "secretariat.n.02" in run.by_name
    assert "donald_duck.n.01" in run.by_name


def test_instances_with_rules_give_8861(wn: WordNet, tmp_path: Path) -> None:
    run = Run(livingthings(include_instances=True), tmp_path)
    assert run.result.stats["wordnet"]["selected"] == 8_861
    assert run.result.stats["wordnet"]["rejected"]["instance_under"] == 11
    horse = wnid_id(wn, "secretariat.n.02")
    assert run.reject_of[horse] == Rejected("entities", horse, "instance_under", "thoroughbred.n.02")


def test_two_roots(wn: WordNet, tmp_path: Path) -> None:
    run = Run(livingthings(roots=["animal.n.01", "n00017222"]), tmp_path)  # plant.n.02 by wnid
    stats = run.result.stats["wordnet"]
    assert stats["roots"] == {"animal.n.01": 3_996, "plant.n.02": 4_487}
    assert (stats["selected"], stats["leaves"]) == (8_483, 6_668)
    animal, plant = wnid_id(wn, "animal.n.01"), wnid_id(wn, "plant.n.02")
    assert run.by_name["lion.n.01"].root == animal
    assert run.by_name["tulip.n.01"].root == plant
    assert run.by_name["animal.n.01"].depth == 0
    assert run.by_name["chordate.n.01"].depth == 1
    assert "fungus.n.01" not in run.by_name


def test_first_root_wins(wn: WordNet, tmp_path: Path) -> None:
    run = Run(livingthings(roots=["dog.n.01", "animal.n.01"], exclude_subtrees=[]), tmp_path)
    assert run.by_name["beagle.n.01"].root == wnid_id(wn, "dog.n.01")
    assert run.by_name["lion.n.01"].root == wnid_id(wn, "animal.n.01")
    assert run.result.stats["wordnet"]["roots"]["dog.n.01"] == 190


def test_case_variant_lemmas_merge_into_one_alias(tmp_path: Path) -> None:
    run = Run(livingthings(roots=["dideoxycytosine.n.01"]), tmp_path)
    (drug,) = run.rows
    assert drug.name == "dideoxycytosine"
    assert drug.aliases == ["ddC", "zalcitabine"]  # "DDC" merged into the first-seen "ddC"


def test_aliases_never_repeat_the_name() -> None:
    assert wordnet_select.aliases(["balm_of_gilead", "Balm_of_Gilead", "Commiphora_meccanensis"]) == [
        "Commiphora meccanensis"
    ]


def test_unknown_synset_in_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exclude_subtrees"):
        Run(livingthings(exclude_subtrees=["no_such_thing.n.01"]), tmp_path)
    with pytest.raises(ConfigError, match="roots"):
        Run(livingthings(roots=["n99999999"]), tmp_path)


def test_source_fingerprint_follows_the_files(tmp_path: Path) -> None:
    folder = tmp_path / "wordnet"
    folder.mkdir()
    for name in ("data.noun", "index.noun"):
        shutil.copy(find_database() / name, folder / name)
    config = parse(livingthings(path=str(folder)))
    first = stage.source_fingerprint(config, Workdir(tmp_path))
    assert first == stage.source_fingerprint(config, Workdir(tmp_path))
    stat = (folder / "index.noun").stat()
    os.utime(folder / "index.noun", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert stage.source_fingerprint(config, Workdir(tmp_path)) != first


def test_source_fingerprint_raises_the_clear_error(tmp_path: Path) -> None:
    config = parse(livingthings(path=str(tmp_path / "missing")))
    with pytest.raises(WordNetNotFound, match="wordnet-sense-index"):
        stage.source_fingerprint(config, Workdir(tmp_path))


def test_runs_through_the_pipeline(tmp_path: Path) -> None:
    raw = livingthings(roots=["dog.n.01"])
    workdir = Workdir(tmp_path)
    assert harvest(parse(raw), workdir, only="entities") == ["entities"]
    record = workdir.load_manifest()["entities"]
    assert record.rows == 190
    assert "external" in record.inputs
