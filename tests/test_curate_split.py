"""Curate's held-out split: val/ holds the pictures whose pixel hash draws below `val_fraction`,
disjoint from the training shards, the same on every run, and recorded in samples.parquet."""

import hashlib
import tarfile

import orjson
import pyarrow.parquet as pq

from kgclip.config import load
from kgclip.curate import stage as curate_stage
from kgclip.curate.split import val_draw
from kgclip.pipeline import StageContext, stage_by_name, state_of
from kgclip.workdir import Workdir


def _config(**curate):
    demo = load("demo")
    return demo.model_copy(update={"curate": demo.curate.model_copy(update=curate)})


def _tar_keys(folder) -> dict[str, list[str]]:
    out = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            out[path.name] = sorted({m.name.split(".")[0] for m in tar.getmembers()})
    return out


def test_val_split_is_the_pictures_drawn_below_the_fraction_and_disjoint_from_training(demo_copy):
    result = curate_stage.run(StageContext(_config(val_fraction=0.2, val_max=0), Workdir(demo_copy)))
    rows = pq.read_table(demo_copy / "samples.parquet").to_pylist()
    expected_val = {r["sha256"] for r in rows if val_draw(r["sha256"]) < 0.2}
    val_rows = [r for r in rows if r["split"] == "val"]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert {r["sha256"] for r in val_rows} == expected_val
    assert 0.1 * 187 < len(val_rows) < 0.3 * 187 and len(rows) == result.rows == 187
    assert not {r["sha256"] for r in val_rows} & {r["sha256"] for r in train_rows}  # disjoint by picture

    val, train = _tar_keys(demo_copy / "val"), _tar_keys(demo_copy / "shards")
    val_keys = {k for keys in val.values() for k in keys}
    train_keys = {k for keys in train.values() for k in keys}
    assert val_keys == {r["key"] for r in val_rows} and train_keys == {r["key"] for r in train_rows}
    assert not val_keys & train_keys
    assert all(name.startswith("shard-val-") for name in val)
    assert {r["shard"] for r in val_rows} == set(val)
    assert orjson.loads((demo_copy / "val/sizes.json").read_bytes()) == {n: len(k) for n, k in val.items()}
    assert orjson.loads((demo_copy / "shards/sizes.json").read_bytes()) == {
        n: len(k) for n, k in train.items()
    }
    assert result.stats["split"] == {"train": len(train_rows), "val": len(val_rows)}
    card = (demo_copy / "card/README.md").read_text()
    assert f"held out for evaluation: {len(val_rows):,} pictures in `val/`" in card
    assert f"{len(train_rows):,} in `shards/` for training" in card


def test_val_max_keeps_the_smallest_draws_and_the_split_is_reproducible(demo_copy):
    config = _config(val_fraction=0.2, val_max=10)
    digests = []
    for _ in range(2):
        curate_stage.run(StageContext(config, Workdir(demo_copy)))
        val = sorted((demo_copy / "val").iterdir())
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in val})
    assert digests[0] == digests[1]
    rows = pq.read_table(demo_copy / "samples.parquet").to_pylist()
    by_draw = sorted(rows, key=lambda r: val_draw(r["sha256"]))
    assert {r["key"] for r in rows if r["split"] == "val"} == {r["key"] for r in by_draw[:10]}
    # every picture keeps its key whatever the split: the keys are those of the harvest without one
    assert sorted(r["key"] for r in rows) == [f"{i:09d}" for i in range(187)]


def test_no_split_by_default_writes_an_empty_val_folder(demo_run):
    assert orjson.loads((demo_run / "val/sizes.json").read_bytes()) == {}
    assert not list((demo_run / "val").glob("*.tar"))
    rows = pq.read_table(demo_run / "samples.parquet").to_pylist()
    assert {r["split"] for r in rows} == {"train"}
    assert "held out for evaluation: none" in (demo_run / "card/README.md").read_text()


def test_changing_the_split_makes_curate_stale(demo_run):
    workdir = Workdir(demo_run)
    records = workdir.load_manifest()
    curate = stage_by_name("curate")
    assert state_of(curate, load("demo"), workdir, records).state == "done"
    for change in ({"val_fraction": 0.1}, {"val_max": 7}):
        st = state_of(curate, _config(**change), workdir, records)
        assert (st.state, st.why) == ("stale", "config [curate] changed")
