"""The dataset card's plots: whole-number bins and ticks, no single-bar charts, coverage per root
and per type, and a contact sheet of the most pictured types."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from kgclip.curate import card
from kgclip.curate.card import write_card
from kgclip.tables import Entity, NaturalType, Query, QueryParams, Sample

ROOTS = {"wn:animal": "animal", "wn:plant": "plant"}


def entity(eid: str, root: str) -> Entity:
    return Entity(eid, eid.split(":")[1], [], "", root, [], True)


def ntype(eid: str, name: str) -> NaturalType:
    return NaturalType(eid, f"wn:{name}", name, [], "", "kg")


def sample(key: str, entity_ids: list[str], licence: str = "cc0") -> Sample:
    return Sample(
        key, "shard-00000.tar", key, 8, 8, 8, 8, [f"u{key}"], [], [], [], entity_ids, licence, None, ""
    )


ENTITIES = {
    **{e: entity(e, e) for e in ROOTS},
    **{f"wn:cat{i}": entity(f"wn:cat{i}", "wn:animal") for i in range(4)},
    **{f"wn:dog{i}": entity(f"wn:dog{i}", "wn:animal") for i in range(2)},
    **{f"wn:oak{i}": entity(f"wn:oak{i}", "wn:plant") for i in range(3)},
}
TYPES = {e: ntype(e, e.split(":")[1].rstrip("0123456789")) for e in ENTITIES if e not in ROOTS}
QUERIES = {f"q{e}": Query(f"q{e}", "entity", e, e, None, QueryParams()) for e in ENTITIES if e != "wn:oak2"}
SAMPLES = [
    sample("000000003", ["wn:cat0"]),
    sample("000000001", ["wn:cat0", "wn:cat1"]),
    sample("000000002", ["wn:dog0"], "cc-by"),
    sample("000000000", ["wn:oak0"]),
    sample("000000004", ["wn:cat1"]),
]


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(out, "JPEG")
    return out.getvalue()


def draw(folder: Path, samples=SAMPLES, image_of=None) -> str:
    write_card(folder, "t", samples, [], {}, ENTITIES, TYPES, QUERIES, Counter(), None, image_of=image_of)
    return (folder / "README.md").read_text()


@pytest.fixture
def figures(monkeypatch):
    """The figures the card would save, kept open for inspection."""
    saved = []
    monkeypatch.setattr(card, "_save", lambda fig, path: saved.append(fig))
    return saved


def _whole(values) -> bool:
    return all(float(v).is_integer() for v in values)


def test_the_histogram_has_one_bin_per_whole_number(figures):
    assert card._histogram(Path("unused.png"), [1, 1, 2, 3, 3, 3, 7], "pictures per entity")
    (ax,) = figures[0].axes
    edges = sorted({p.get_x() for p in ax.patches} | {p.get_x() + p.get_width() for p in ax.patches})
    assert edges == [x - 0.5 for x in range(1, 9)]  # 0.5 … 7.5: one bin per count, centred on it
    assert [p.get_height() for p in ax.patches] == [2, 1, 3, 0, 0, 0, 1]
    assert _whole(ax.get_xticks()) and _whole(ax.get_yticks())


def test_a_long_tail_gets_whole_number_bins_of_equal_width(figures):
    assert card._histogram(Path("unused.png"), [1, 2, 130], "pictures per entity")
    (ax,) = figures[0].axes
    widths = {p.get_width() for p in ax.patches}
    assert widths == {3} and len(ax.patches) <= 50  # ceil(130 / 50) pictures a bin
    assert ax.patches[0].get_x() == 0.5


def test_bar_charts_count_in_whole_numbers(figures):
    assert card._bars(Path("unused.png"), Counter({"cc0": 3, "cc-by": 1}), "pictures per licence")
    (ax,) = figures[0].axes
    assert len(ax.get_xticks()) > 2 and _whole(ax.get_xticks())  # 0.0, 0.5, … without the locator


def test_a_single_bar_chart_gives_way_to_its_table_and_an_old_one_is_removed(tmp_path):
    text = draw(tmp_path)  # two licences, two roots: charts
    for chart in ("licences", "pictures_per_root"):
        assert (tmp_path / f"{chart}.png").is_file() and f"]({chart}.png)" in text
    assert not (tmp_path / "rejections.png").exists()  # nothing rejected: no bar at all
    cats = [s for s in SAMPLES if s.license == "cc0" and "wn:oak0" not in s.entity_ids]
    text = draw(tmp_path, cats)  # one licence, one root
    for chart in ("licences", "pictures_per_root", "rejections"):
        assert not (tmp_path / f"{chart}.png").exists() and f"{chart}.png" not in text
    assert "| licence | pictures |\n|---|---|\n| cc0 | 3 |" in text
    assert "| root | pictures |\n|---|---|\n| animal (wn:animal) | 3 |" in text


def test_coverage_per_root_and_per_type(tmp_path):
    text = draw(tmp_path)
    # animal: itself, 4 cats, 2 dogs; cat0, cat1, dog0 pictured. plant: itself, 3 oaks (oak2 unqueried)
    assert "| animal (wn:animal) | 7 | 7 | 3 | 42.9% |" in text
    assert "| plant (wn:plant) | 4 | 3 | 1 | 25.0% |" in text
    assert "| cat | 4 | 4 | 2 | 50.0% |\n| oak | 3 | 2 | 1 | 33.3% |\n| dog | 2 | 2 | 1 | 50.0% |" in text
    with Image.open(tmp_path / "coverage_per_type.png") as image:
        assert image.format == "PNG"
    assert "](coverage_per_type.png)" in text


def test_the_contact_sheet_shows_the_first_samples_of_the_most_pictured_types(tmp_path, monkeypatch):
    monkeypatch.setattr(card, "SHEET_TYPES", 2)
    monkeypatch.setattr(card, "SHEET_PER_TYPE", 2)
    asked = []

    def image_of(s: Sample) -> bytes:
        asked.append(s.key)
        return jpeg((int(s.key) * 40, 80, 120))

    rows = card._sheet_rows(SAMPLES, TYPES, Counter({"cat": 3, "dog": 1, "oak": 1}), image_of)
    assert [label for label, _ in rows] == ["cat (3)", "dog (1)"]  # ties by name
    assert asked == ["000000001", "000000003", "000000002"]  # the first cats by key, then the dog
    text = draw(tmp_path, image_of=image_of)
    assert text.index("](contact_sheet.png)") < text.index("## Pictures per root")
    with Image.open(tmp_path / "contact_sheet.png") as image:
        assert image.format == "PNG" and image.width > 2 * card.THUMB
    assert "contact_sheet" not in draw(tmp_path / "no-images")  # no reader: no sheet
    assert not (tmp_path / "no-images" / "contact_sheet.png").exists()
