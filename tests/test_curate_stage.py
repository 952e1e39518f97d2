"""Curate: deterministic, byte-identical shards and sample tables from the same inputs."""

import hashlib
import shutil

from kgclip.config import load
from kgclip.curate import stage as curate_stage
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_inputs_give_identical_samples_and_shards(demo_run, tmp_path):
    copies = []
    for name in ("a", "b"):
        work = tmp_path / name
        shutil.copytree(demo_run, work)
        shutil.rmtree(work / "shards")
        curate_stage.run(StageContext(load("demo"), Workdir(work)))
        copies.append(work)
    a, b = copies
    assert (
        digest(a / "samples.parquet") == digest(b / "samples.parquet") == digest(demo_run / "samples.parquet")
    )
    shards = sorted(p.name for p in (a / "shards").iterdir())
    assert shards == sorted(p.name for p in (demo_run / "shards").iterdir())
    for name in shards:
        assert (
            digest(a / "shards" / name) == digest(b / "shards" / name) == digest(demo_run / "shards" / name)
        )


def test_shard_size_is_respected(demo_copy):
    config = load("demo").model_copy(
        update={"curate": load("demo").curate.model_copy(update={"samples_per_shard": 50})}
    )
    result = curate_stage.run(StageContext(config, Workdir(demo_copy)))
    sizes = sorted((demo_copy / "shards").glob("*.tar"))
    assert len(sizes) == -(-result.rows // 50)
