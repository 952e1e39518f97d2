"""The curate stage's options on the demo: the dataset card, the licence filter, balancing, and
reproducibility (same config, seed and inputs give the same samples and shard bytes)."""

import tarfile

import orjson
import pyarrow.parquet as pq
from PIL import Image

from kgclip.cli import _run
from kgclip.config import load, parse
from kgclip.curate import stage as curate_stage
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir


def curate_with(work, **curate):
    raw = orjson.loads((work / "config.json").read_bytes())
    raw["curate"].update(curate)
    return curate_stage.run(StageContext(parse(raw), Workdir(work)))


def test_the_demo_has_a_dataset_card_with_plots(demo_run):
    card = (demo_run / "card" / "README.md").read_text()
    sections = ("Pictures per root", "Entities and types", "Texts", "Licences", "Curation")
    assert all(f"## {section}" in card for section in sections)
    assert "| living thing (wn:n00004258) |" in card and "| GPL-2 |" in card and "| too_small | 3 |" in card
    for plot in ("images_per_entity", "pictures_per_root", "licences", "rejections"):
        with Image.open(demo_run / "card" / f"{plot}.png") as image:
            assert image.format == "PNG" and image.width > 300
        assert f"({plot}.png)" in card
    rows = (demo_run / "card" / "entity_counts.csv").read_text().splitlines()
    assert rows[0] == "entity,name,root,type,pictures_before_balancing,pictures"
    assert len(rows) - 1 == Workdir(demo_run).load_manifest()["curate"].stats["entities_covered"]


def test_licence_filter_drops_and_records(demo_copy):
    kept = curate_with(demo_copy, licenses=["gpl-2"])
    assert kept.rows == 273
    none = curate_with(demo_copy, licenses=["cc0", "cc-by"])
    assert none.rows == 0 and list((demo_copy / "shards").glob("*.tar")) == []
    rejected = pq.read_table(demo_copy / "rejected.parquet").to_pylist()
    licence = [r for r in rejected if r["reason"] == "licence"]
    assert len(licence) >= 273 and licence[0]["detail"] == "GPL-2 is not among cc0, cc-by"


def test_balancing_caps_entities_and_records_the_counts(demo_copy):
    result = curate_with(demo_copy, max_per_entity=3)
    assert 0 < result.stats["balanced_out"] < 273
    rows = (demo_copy / "card" / "entity_counts.csv").read_text().splitlines()[1:]
    before_after = [tuple(map(int, r.rsplit(",", 2)[1:])) for r in rows]
    assert any(b > 3 for b, _ in before_after) and all(a <= b for b, a in before_after)
    reasons = {r["reason"] for r in pq.read_table(demo_copy / "rejected.parquet").to_pylist()}
    assert "balanced_out" in reasons


def test_same_config_seed_and_inputs_give_identical_samples_and_shards(demo_run, tmp_path):
    again = tmp_path / "again"
    _run(load("demo"), again)
    assert pq.read_table(again / "samples.parquet").equals(pq.read_table(demo_run / "samples.parquet"))
    names = sorted(p.name for p in (demo_run / "shards").glob("*.tar"))
    assert names and sorted(p.name for p in (again / "shards").glob("*.tar")) == names
    for name in names:
        assert _members(again / "shards" / name) == _members(demo_run / "shards" / name)
    assert (again / "card" / "README.md").read_bytes() == (demo_run / "card" / "README.md").read_bytes()


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
