"""`harvest:WORKDIR`: the held-out split as a retrieval set, one item per held-out picture, with
the picture's alt texts, query texts and entity names; a clear error without a split."""

import io
import shutil
import subprocess
import sys

import orjson
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kgclip.config import load
from kgclip.curate import stage as curate_stage
from kgclip.eval.harvest_set import open_harvest, sample_texts
from kgclip.eval.sets import RETRIEVAL, EvalSetError
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir


@pytest.fixture(scope="module")
def split_run(tmp_path_factory, demo_run):
    work = tmp_path_factory.mktemp("split") / "work"
    shutil.copytree(demo_run, work)
    demo = load("demo")
    config = demo.model_copy(update={"curate": demo.curate.model_copy(update={"val_fraction": 0.1})})
    curate_stage.run(StageContext(config, Workdir(work)))
    return work


def test_items_are_the_held_out_pictures_with_their_texts(split_run):
    evalset = open_harvest(split_run)
    rows = {r["key"]: r for r in pq.read_table(split_run / "samples.parquet").to_pylist()}
    items = list(evalset.items())
    assert evalset.task == RETRIEVAL and evalset.name == "harvest-demo"
    assert evalset.source == f"harvest:{split_run}"
    assert [i.key for i in items] == sorted(k for k, r in rows.items() if r["split"] == "val")
    assert items, "the demo's 10% split holds pictures"
    for item in items:
        row = rows[item.key]
        with Image.open(io.BytesIO(item.read())) as im:
            assert im.size == (row["width"], row["height"])
        assert item.texts[: len(row["alt_texts"])] == tuple(row["alt_texts"])
        assert set(item.texts) >= set(row["alt_texts"])
    assert [i.key for i in evalset.items()] == [i.key for i in items]  # a fixed order, every time


def test_texts_are_alt_texts_then_queries_then_entity_names_each_once():
    meta = {
        "alt_texts": ["A koala.", " "],
        "queries": [{"text": "koala"}, {"text": "sleepy koala"}],
        "entities": [{"name": "koala", "aliases": ["koala bear"]}, {"name": "marsupial"}],
        "caption": "A koala.",
    }
    assert sample_texts(meta) == ("A koala.", "koala", "sleepy koala", "marsupial")


def test_fingerprint_follows_the_split(split_run, tmp_path):
    first = open_harvest(split_run).fingerprint
    assert open_harvest(split_run).fingerprint == first
    other = tmp_path / "w"
    shutil.copytree(split_run, other)
    demo = load("demo")
    config = demo.model_copy(update={"curate": demo.curate.model_copy(update={"val_fraction": 0.2})})
    curate_stage.run(StageContext(config, Workdir(other)))
    assert open_harvest(other).fingerprint != first


def test_a_harvest_without_a_split_says_how_to_make_one(demo_run, tmp_path):
    with pytest.raises(EvalSetError, match=r"held-out split is empty: set \[curate\] val_fraction"):
        open_harvest(demo_run)
    with pytest.raises(EvalSetError, match="not a harvest work directory"):
        open_harvest(tmp_path)
    (tmp_path / "samples.parquet").write_bytes(b"")
    with pytest.raises(EvalSetError, match=r"no held-out split: set \[curate\] val_fraction and rerun"):
        open_harvest(tmp_path)


def test_a_missing_val_shard_is_named(split_run, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(split_run, work)
    name = sorted(orjson.loads((work / "val/sizes.json").read_bytes()))[0]
    (work / "val" / name).unlink()
    with pytest.raises(EvalSetError, match=f"names {name}, which is missing"):
        open_harvest(work)


def test_opening_the_harvest_set_never_imports_torch(split_run):
    code = (
        "import sys; from kgclip.eval.harvest_set import open_harvest;"
        f"s = open_harvest({str(split_run)!r}); n = sum(1 for _ in s.items());"
        "assert n > 0; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
