"""The natural-types stage: the KG rule on real LivingThings entities, and its fallbacks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from kgclip.config import load_raw, parse
from kgclip.kg import entities as entities_stage
from kgclip.pipeline import StageContext, StageResult
from kgclip.tables import Entity, NaturalType, read_records
from kgclip.text import filter as filter_stage
from kgclip.text import types as stage
from kgclip.workdir import Workdir


def livingthings(roots: list[str] | None = None, **kg: Any) -> dict[str, Any]:
    raw = load_raw("livingthings")
    if roots is not None:
        raw["entities"]["wordnet"]["roots"] = roots
    raw["types"]["kg"].update(kg)
    return raw


class Run:
    """The entities stage, then the types stage, with both tables read back."""

    def __init__(self, raw: dict[str, Any], root: Path) -> None:
        self.ctx = StageContext(parse(raw), Workdir(root))
        entities_stage.run(self.ctx)
        filter_stage.run(self.ctx)
        self.result: StageResult = stage.run(self.ctx)
        self.entities = list(read_records(self.ctx.path("entities.parquet"), Entity))
        self.types = list(read_records(self.ctx.path("types.parquet"), NaturalType))
        self.by_name = {e.wordnet_name: e for e in self.entities}
        self.by_id = {e.id: e for e in self.entities}
        self.type_of = {t.entity_id: t for t in self.types}

    def typed(self, wordnet_name: str) -> tuple[str, str]:
        t = self.type_of[self.by_name[wordnet_name].id]
        return self.by_id[t.type_id].wordnet_name or "", t.method


@pytest.fixture(scope="module")
def lt(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(livingthings(), tmp_path_factory.mktemp("types"))


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        ("golden_retriever.n.01", "dog.n.01"),
        ("beagle.n.01", "dog.n.01"),
        ("lion.n.01", "animal.n.01"),  # the method's own example: lion -> animal
        ("white_oak.n.01", "tree.n.01"),
        ("live_oak.n.01", "tree.n.01"),
        ("rose.n.01", "shrub.n.01"),
        ("tabby.n.01", "cat.n.01"),
        ("eagle.n.01", "bird.n.01"),
        ("bald_eagle.n.01", "bird.n.01"),
        ("salmon.n.01", "fish.n.01"),
        ("fern.n.01", "plant.n.02"),
        ("tulip.n.01", "plant.n.02"),
        ("sunflower.n.01", "flower.n.01"),
        ("beetle.n.01", "insect.n.01"),
        ("ladybug.n.01", "insect.n.01"),
        ("mallard.n.01", "duck.n.01"),
        ("ponderosa.n.01", "pine.n.01"),
        ("puppy.n.01", "dog.n.01"),
    ],
)
def test_natural_types_of_familiar_entities(lt: Run, entity: str, expected: str) -> None:
    assert lt.typed(entity) == (expected, stage.NEAREST_POPULAR)


def test_fallbacks(lt: Run) -> None:
    # No ancestor of a mushroom is popular: the topmost one below the root that is not too general.
    assert lt.typed("agaric.n.02") == ("fungus.n.01", stage.TOP_ANCESTOR)
    # animal.n.01's only ancestors are organism.n.01 (too general) and the root.
    assert lt.typed("animal.n.01") == ("living_thing.n.01", stage.ROOT)
    assert lt.typed("living_thing.n.01") == ("living_thing.n.01", stage.ROOT)


def test_one_row_per_entity_copied_from_the_type_entity(lt: Run) -> None:
    assert len(lt.types) == len(lt.entities) == lt.result.rows == 8_861
    assert [t.entity_id for t in lt.types] == sorted(e.id for e in lt.entities)
    for t in lt.types:
        source = lt.by_id[t.type_id]
        assert (t.type_name, t.type_aliases, t.type_description) == (
            source.name,
            source.aliases,
            source.description,
        )
        assert t.type_id != t.entity_id or t.method == stage.ROOT


def test_stats(lt: Run) -> None:
    stats = lt.result.stats
    assert sum(stats["methods"].values()) == 8_861
    assert set(stats["methods"]) == {stage.NEAREST_POPULAR, stage.TOP_ANCESTOR, stage.ROOT}
    assert stats["distinct_types"] == len({t.type_id for t in lt.types})
    top = [t["name"] for t in stats["top_types"]]
    assert len(top) == 10
    assert top[:3] == ["plant", "animal", "tree"]
    assert {"bird", "fish", "insect", "flower"} <= set(top)


def test_too_general_is_honoured(lt: Run) -> None:
    config = parse(livingthings(too_general=["organism.n.01", "n00015388", "bird.n.01"]))
    types = {t.entity_id: t for t in stage.kg_types(lt.entities, config)}
    names = {t.type_name for t in types.values()}
    assert "animal" not in names and "bird" not in names
    lion = types[lt.by_name["lion.n.01"].id]
    assert (lion.type_name, lion.method) == ("chordate", stage.TOP_ANCESTOR)
    eagle = types[lt.by_name["eagle.n.01"].id]
    assert eagle.type_name == "chordate"


def test_threshold_zero_gives_the_primary_parent(lt: Run) -> None:
    config = parse(livingthings(min_popularity=0))
    types = {t.entity_id: t for t in stage.kg_types(lt.entities, config)}
    lion = lt.by_name["lion.n.01"]
    assert types[lion.id].type_id == lion.parents[0]
    assert types[lion.id].type_name == "big cat"


def test_a_popular_root_is_a_fine_type(tmp_path: Path) -> None:
    run = Run(livingthings(roots=["animal.n.01", "plant.n.02"]), tmp_path)
    assert run.typed("lion.n.01") == ("animal.n.01", stage.NEAREST_POPULAR)
    assert run.typed("chordate.n.01") == ("animal.n.01", stage.NEAREST_POPULAR)
    assert run.typed("animal.n.01") == ("animal.n.01", stage.ROOT)
    assert run.typed("tulip.n.01") == ("plant.n.02", stage.NEAREST_POPULAR)


def entity(eid: str, parents: list[str], popularity: int = 0, root: str = "r") -> Entity:
    return Entity(
        id=eid,
        name=eid.upper(),
        aliases=[f"{eid} alias"],
        description=f"about {eid}",
        root=root,
        parents=parents,
        is_leaf=False,
        wordnet_name=f"{eid}.n.01",
        popularity=popularity,
    )


def test_rule_on_a_small_tree() -> None:
    """r <- a(pop 9) <- b(pop 0) <- c; a second branch r <- x(pop 0) <- y."""
    rows = [
        entity("r", ["outside"], popularity=99),
        entity("a", ["r"], popularity=9),
        entity("b", ["a"]),
        entity("c", ["b", "a"]),
        entity("x", ["r"]),
        entity("y", ["x"]),
    ]
    config = parse(
        {"name": "t", "search": {"corpus": {"source": "/x"}}, "types": {"kg": {"min_popularity": 5}}}
    )
    got = {t.entity_id: (t.type_id, t.method) for t in stage.kg_types(rows, config)}
    assert got == {
        "r": ("r", stage.ROOT),
        "a": ("r", stage.NEAREST_POPULAR),
        "b": ("a", stage.NEAREST_POPULAR),
        "c": ("a", stage.NEAREST_POPULAR),
        "x": ("r", stage.NEAREST_POPULAR),
        "y": ("r", stage.NEAREST_POPULAR),
    }
    strict = parse(
        {"name": "t", "search": {"corpus": {"source": "/x"}}, "types": {"kg": {"min_popularity": 100}}}
    )
    got = {t.entity_id: (t.type_id, t.method) for t in stage.kg_types(rows, strict)}
    assert got["c"] == ("a", stage.TOP_ANCESTOR)
    assert got["y"] == ("x", stage.TOP_ANCESTOR)
    assert got["x"] == ("r", stage.ROOT)
    first = stage.kg_types(rows, strict)[0]
    assert (first.type_name, first.type_aliases, first.type_description) == ("R", ["r alias"], "about r")


def test_a_missing_root_is_an_error() -> None:
    config = parse({"name": "t", "search": {"corpus": {"source": "/x"}}})
    with pytest.raises(stage.TypesError, match="not an entity"):
        stage.kg_types([entity("a", ["gone"], root="gone")], config)


def test_methods_are_pluggable() -> None:
    assert set(stage.METHODS) == {"kg", "llm"}


def test_unmatched_too_general_is_reported(lt: Run, tmp_path: Path) -> None:
    config = parse(livingthings(too_general=["organism.n.01", "organsim.n.01"]))
    ctx = StageContext(config, Workdir(tmp_path))
    for table in ("entities.parquet", "filter.parquet"):
        shutil.copy(lt.ctx.path(table), ctx.path(table))
    result = stage.run(ctx)
    assert result.stats["too_general_unmatched"] == ["organsim.n.01"]
