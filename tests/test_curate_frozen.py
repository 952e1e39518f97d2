"""Curate's outputs on a fixed synthetic harvest equal those frozen from the object-path curate
(before issue 17's columnar rework): the samples and rejected tables row for row, every shard's
members, sizes.json and the card's README and entity counts; and the two parquet files byte for
byte under the pyarrow version they were frozen with (its writer names itself in the file).

The harvest (benchmarks/curate_scale.py `make`) has exact copies, near copies, failed URLs, URLs
found by two queries; the second configuration adds every filter: decontamination, a licence
filter, both balancing caps and a held-out split, with small shards.

To freeze again (only for a reviewed change of output): `PYTHONPATH=OLD/src python
tests/test_curate_frozen.py` prints the table below for the code on that path."""

from __future__ import annotations

import hashlib
import importlib
import sys
import tarfile
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kgclip.config import CurateConfig, load
from kgclip.curate import phash
from kgclip.curate import stage as curate_stage
from kgclip.curate.decontam import FORMAT, SCHEMA
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PICTURES = 400
PYARROW = "26.0.1"  # the version the parquet digests below were frozen with
VARIANTS = {
    "default": {},
    "filtered": {
        "licenses": ["cc0", "cc-by", "pdm"],
        "max_per_entity": 4,
        "max_per_query": 3,
        "val_fraction": 0.1,
        "val_max": 12,
        "samples_per_shard": 40,
        "decontaminate": ["eval-index.parquet"],
    },
}
FROZEN = {
    "default": {
        "samples.parquet rows": "69843e45919cb2f6",
        "samples.parquet bytes": "fb0938c4f690c037",
        "rejected.parquet rows": "15894bb9226adf96",
        "rejected.parquet bytes": "4188c8e891c8a13e",
        "card/README.md": "c1828cff5b4431e8",
        "card/entity_counts.csv": "bc9ce41e655dff8e",
        "shards/sizes.json": "b6401f9fc44ace63",
        "val/sizes.json": "44136fa355b3678a",
        "shards/shard-00000.tar": "61ddd4cda4cc0f13",
    },
    "filtered": {
        "samples.parquet rows": "738150011ea08741",
        "samples.parquet bytes": "b77cfcc3139bc105",
        "rejected.parquet rows": "61668cd619e751ba",
        "rejected.parquet bytes": "dae60606ff0892e1",
        "card/README.md": "ee301d56afac693a",
        "card/entity_counts.csv": "a1c6d695bed76ddd",
        "shards/sizes.json": "706fe072ef5ff3e8",
        "val/sizes.json": "297aa756b3521b35",
        "shards/shard-00000.tar": "c5d78bb510c4d8a5",
        "shards/shard-00001.tar": "dc71e11dbeea259a",
        "shards/shard-00002.tar": "9d0e3ae38f381d38",
        "val/shard-val-00000.tar": "7a8eb87d7daba3ed",
    },
}


def _harvest(work: Path) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        importlib.import_module("curate_scale").make(work, PICTURES)
    finally:
        sys.path.remove(str(BENCHMARKS))
    # an evaluation index holding (a bit off) the hashes of a few harvested pictures
    hashes = pq.read_table(work / "fetched.parquet", columns=["phash"]).column("phash").to_pylist()
    chosen = [h for h in hashes if h is not None][::37][:6]
    rows = {
        "eval_set": ["bench"] * len(chosen),
        "image": [f"img{i}.jpg" for i in range(len(chosen))],
        "variant": [0] * len(chosen),
        "phash": [h ^ 0b101 for h in chosen],
    }
    meta = {"format": FORMAT, "phash_version": str(phash.VERSION)}
    pq.write_table(pa.table(rows, schema=SCHEMA).replace_schema_metadata(meta), work / "eval-index.parquet")


def _curate(work: Path, variant: str, **how: object) -> None:
    config = load("demo")
    update: dict[str, object] = {"curate": CurateConfig(**VARIANTS[variant], **how)}
    if how.get("executor") == "ray":
        update["ray"] = config.ray.model_copy(update={"num_cpus": 2, "tasks_in_flight": 3})
    curate_stage.run(StageContext(config.model_copy(update=update), Workdir(work)))


def fingerprint(work: Path) -> dict[str, str]:
    out = {}
    for name in ("samples.parquet", "rejected.parquet"):
        table = pq.read_table(work / name)
        out[f"{name} rows"] = _digest(orjson.dumps(table.to_pylist()))
        out[f"{name} bytes"] = _digest((work / name).read_bytes())
    for name in ("card/README.md", "card/entity_counts.csv", "shards/sizes.json", "val/sizes.json"):
        out[name] = _digest((work / name).read_bytes())
    for folder in ("shards", "val"):
        for tar_path in sorted((work / folder).glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                members = [(m.name, m.size, _digest(tar.extractfile(m).read())) for m in tar.getmembers()]
            out[f"{folder}/{tar_path.name}"] = _digest(orjson.dumps(members))
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.fixture(scope="module")
def harvest(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("frozen") / "work"
    _harvest(work)
    return work


# How the shards are written must not change a byte: one job here, a job per shard here (the
# held-out shard its own job, balanced-out groups set aside by several jobs), or Ray tasks.
HOW = {
    "one job": {},
    "a job per shard": {"shards_per_task": 1},
    "ray": {"executor": "ray", "shards_per_task": 1},
}


@pytest.mark.parametrize(
    ("variant", "how"), [("default", "one job"), *(("filtered", how) for how in HOW)]
)
def test_curate_outputs_equal_the_frozen_ones(harvest, tmp_path, variant, how):
    if how == "ray":
        pytest.importorskip("ray")
    work = tmp_path / "work"
    work.mkdir()
    for item in harvest.iterdir():
        (work / item.name).symlink_to(item)  # inputs only read; curate writes beside them
    _curate(work, variant, **HOW[how])
    got = fingerprint(work)
    expected = dict(FROZEN[variant])
    if pa.__version__ != PYARROW:  # another parquet writer: the rows must agree, the bytes may not
        for found in (got, expected):
            for name in ("samples.parquet bytes", "rejected.parquet bytes"):
                found.pop(name, None)
    assert got == expected
    rows = pq.read_metadata(work / "samples.parquet").num_rows
    assert rows > 100 if variant == "default" else 0 < rows < PICTURES / 2
    if variant == "filtered":  # every filter took something
        reasons = set(pq.read_table(work / "rejected.parquet").column("reason").to_pylist())
        assert {"eval_copy", "licence", "balanced_out", "http_404"} <= reasons
        assert (work / "val" / "sizes.json").read_bytes() != b"{}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "harvest"
        _harvest(base)
        print(f'PYARROW = "{pa.__version__}"')
        print("FROZEN = {")
        for variant in VARIANTS:
            work = Path(tmp) / variant
            work.mkdir()
            for item in base.iterdir():
                (work / item.name).symlink_to(item)
            _curate(work, variant)
            print(f'    "{variant}": {{')
            for key, value in fingerprint(work).items():
                print(f'        "{key}": "{value}",')
            print("    },")
        print("}")
