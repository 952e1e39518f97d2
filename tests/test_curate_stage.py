"""Curate: deterministic, byte-identical shards and sample tables from the same inputs, and shards
that hold the configured number of samples."""

import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from kgclip.config import load
from kgclip.curate import stage as curate_stage
from kgclip.pipeline import STAGES, PipelineError, StageContext
from kgclip.workdir import Workdir
from resume import kill_when

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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


def test_shards_hold_samples_per_shard_and_say_so(demo_copy):
    """Every shard but the last holds exactly `samples_per_shard` samples (and the last the rest),
    in key order; sizes.json and each sample's `shard` column say where they really are."""
    per_shard = 50
    config = load("demo").model_copy(
        update={"curate": load("demo").curate.model_copy(update={"samples_per_shard": per_shard})}
    )
    result = curate_stage.run(StageContext(config, Workdir(demo_copy)))
    shards = demo_copy / "shards"
    held = {p.name: _keys(p) for p in sorted(shards.glob("*.tar"))}
    full, rest = divmod(result.rows, per_shard)
    assert result.rows == 187 and (full, rest) == (3, 37)  # a short last shard, and several full ones
    assert list(held) == [f"shard-{i:05d}.tar" for i in range(full + 1)]
    assert [len(keys) for keys in held.values()] == [per_shard] * full + [rest]
    assert list(held.values()) == [
        [f"{k:09d}" for k in range(i * per_shard, min((i + 1) * per_shard, result.rows))]
        for i in range(full + 1)
    ]
    assert orjson.loads((shards / "sizes.json").read_bytes()) == {n: len(k) for n, k in held.items()}
    where = {key: name for name, keys in held.items() for key in keys}
    samples = pq.read_table(demo_copy / "samples.parquet", columns=["key", "shard"]).to_pylist()
    assert len(samples) == len(where) == result.rows
    assert all(where[s["key"]] == s["shard"] for s in samples)


def _keys(tar_path) -> list[str]:
    """The sample keys in a shard, in order, each with exactly its .jpg, .txt and .json."""
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
    keys = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names))
    assert names == [f"{k}.{ext}" for k in keys for ext in ("jpg", "txt", "json")]
    return keys


def test_the_spill_folder_is_gone_after_a_run_and_a_killed_runs_leftover_is_cleared(demo_copy):
    """Curate's grouped rows live in `.curate-spill/` only while it runs; one a kill left behind
    is removed, not read, by the next run."""
    spill = demo_copy / curate_stage.SPILL
    spill.mkdir()
    for name in ("copies-00000.arrow", "rejected-eval-00000.arrow"):  # the second would be read back
        (spill / name).write_bytes(b"left by a killed run")
    before = [digest(demo_copy / name) for name in ("samples.parquet", "rejected.parquet")]
    curate_stage.run(StageContext(load("demo"), Workdir(demo_copy)))
    assert not spill.exists()
    assert [digest(demo_copy / name) for name in ("samples.parquet", "rejected.parquet")] == before


def _curate_with(work, **settings):
    """Curate as the pipeline runs it: against the view of the config keys it declares."""
    config = load("demo")
    update = {"curate": config.curate.model_copy(update=settings)}
    if settings.get("executor") == "ray":
        update["ray"] = config.ray.model_copy(update={"num_cpus": 2, "tasks_in_flight": 3})
    stage = next(s for s in STAGES if s.name == "curate")
    return curate_stage.run(StageContext(stage.config_for(config.model_copy(update=update)), Workdir(work)))


def _outputs(work) -> dict[str, str]:
    names = ["samples.parquet", "rejected.parquet"]
    for folder in ("shards", "val", "card"):
        names += [str(p.relative_to(work)) for p in (work / folder).rglob("*")]
    return {name: digest(work / name) for name in sorted(names) if (work / name).is_file()}


def test_a_ray_curate_writes_the_same_bytes_as_a_local_one(demo_run, tmp_path):
    """On the demo, with small shards and a held-out split, so that seven Ray tasks each write one
    shard (five training shards, two held-out ones): every output file equals the local run's, and
    how curate runs does not make it stale."""
    pytest.importorskip("ray")
    settings = {"samples_per_shard": 30, "val_fraction": 0.2, "val_max": 0}
    runs = {}
    for how, extra in (("local", {}), ("ray", {"executor": "ray", "shards_per_task": 1})):
        work = tmp_path / how
        shutil.copytree(demo_run, work)
        result = _curate_with(work, **settings, **extra)
        runs[how] = _outputs(work)
    assert result.rows == 187
    assert len([n for n in runs["ray"] if n.endswith(".tar")]) == 7
    assert runs["ray"] == runs["local"]
    ray = load("demo").curate.model_copy(update={"executor": "ray", "shards_per_task": 1})
    stage = next(s for s in STAGES if s.name == "curate")
    on_ray = load("demo").model_copy(update={"curate": ray})
    assert stage.config_hash(on_ray) == stage.config_hash(load("demo"))


def test_a_failed_ray_task_stops_curate_and_keeps_the_old_shards(demo_copy):
    """A part gone missing makes the task that needs it fail; curate says which image and part,
    and the previous shards stay as they were (nothing is emptied before its replacement is ready)."""
    pytest.importorskip("ray")
    before = _outputs(demo_copy)
    parts = sorted((demo_copy / "parts").glob("*.tar"))
    parts[len(parts) // 2].rename(demo_copy / "moved-away.tar")
    with pytest.raises(PipelineError, match=r"cannot read image .* of fetch part"):
        _curate_with(demo_copy, samples_per_shard=30, executor="ray", shards_per_task=1)
    assert _outputs(demo_copy) == before
    assert not (demo_copy / ".shards.new").exists() and not (demo_copy / curate_stage.SPILL).exists()


def test_a_local_curate_reports_progress_a_window_at_a_time(demo_copy, monkeypatch):
    """The writing is one job here; its progress still moves with every window of samples, not
    only when the job ends (an hour at 9M pictures)."""
    from kgclip.curate import plan as curate_plan

    monkeypatch.setattr(curate_plan.Plan.windows, "__defaults__", (10,))  # windows of 10 groups
    steps: list[int] = []

    class Meter:
        def __init__(self, *args: object) -> None:
            pass

        def __enter__(self) -> "Meter":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def advance(self, n: int) -> None:
            steps.append(n)

    monkeypatch.setattr(curate_stage, "meter", Meter)
    result = curate_stage.run(StageContext(load("demo"), Workdir(demo_copy)))
    assert sum(steps) == result.rows == 187
    assert len(steps) >= 18 and max(steps) <= 10


KILLABLE = """
import sys
from pathlib import Path
from kgclip.config import load
from kgclip.curate import stage
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir
config = load("demo")
config = config.model_copy(update={"curate": config.curate.model_copy(update={"samples_per_shard": 500})})
stage.run(StageContext(config, Workdir(Path(sys.argv[1]))))
"""


def test_curate_killed_while_writing_shards_then_run_again_writes_what_an_unbroken_run_writes(tmp_path):
    """SIGKILL once a few shards of a 20,000-picture harvest are written: nothing is in place yet
    (the new shards wait in a folder of their own, the tables in temporary files), and the next run
    clears the leftovers and writes exactly what a run that was never killed writes."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import curate_scale
    finally:
        sys.path.remove(str(BENCHMARKS))
    base = tmp_path / "base"
    curate_scale.make(base, 20_000)
    runs = {}
    for name in ("unbroken", "killed"):
        work = tmp_path / name
        work.mkdir()
        for item in base.iterdir():
            (work / item.name).symlink_to(item)
        runs[name] = work
    cmd = [sys.executable, "-c", KILLABLE]
    assert subprocess.run([*cmd, str(runs["unbroken"])], capture_output=True, timeout=600).returncode == 0
    work = runs["killed"]
    new = work / ".shards.new"
    kill_when([*cmd, str(work)], lambda: len(list(new.glob("shard-*.tar"))) >= 3, timeout=300)
    assert (work / curate_stage.SPILL).is_dir() and not (work / "shards").exists()
    assert not (work / "samples.parquet").exists()
    assert subprocess.run([*cmd, str(work)], capture_output=True, timeout=600).returncode == 0
    assert not new.exists() and not (work / curate_stage.SPILL).exists()
    assert _outputs(work) == _outputs(runs["unbroken"])
    assert len(list((work / "shards").glob("*.tar"))) == 39
