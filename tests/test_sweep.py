"""`kgclip sweep` end to end on the demo harvest with the tiny model and the shapes set (torch; serial):
every cell trained and evaluated once, a second run does nothing, a killed cell resumes from its
checkpoint, and Ray gives the same results as cells run here."""

import shutil
import sys

import orjson
import pytest
from typer.testing import CliRunner

from eval_fixtures import write_shapes
from kgclip.cli import app
from kgclip.progress import console, results
from kgclip.sweep.grid import load_sweep
from resume import kill_when

runner = CliRunner()

SWEEP = """extends = "demo"
[train]
max_steps = {steps}
batch_size = 16
workers = 0
threads = 1
shuffle_buffer = 32
save_every_steps = 2
log_every_steps = 1
[ray]
num_cpus = 1
[sweep]
name = "t"
eval_sets = ["wds:{shapes}"]
eval_names = ["name"]
eval_prompts = ["none"]
executor = "{executor}"
[sweep.axes]
{axes}
"""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("sets") / "shapes", per_class=2)


def _sweep_file(tmp_path, shapes, axes, steps=2, executor="local", name="sweep.toml"):
    path = tmp_path / name
    path.write_text(SWEEP.format(steps=steps, shapes=shapes, executor=executor, axes=axes))
    return path


def invoke(*args):
    return runner.invoke(app, ["sweep", *map(str, args)], catch_exceptions=False)


def _stamps(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _metrics(work, sweep_file):
    out = {}
    for cell in load_sweep(sweep_file, work).cells:
        record = orjson.loads((work / "sweeps" / "t" / "cells" / f"{cell.run}.json").read_bytes())
        assert record["state"] == "done" and record["results"]
        out[cell.label] = [
            orjson.loads((work / "runs" / cell.run / f).read_bytes())["metrics"] for f in record["results"]
        ]
    return out


def test_every_cell_runs_once_and_the_report_has_them_all(demo_copy, shapes, tmp_path, monkeypatch):
    axes = 'data_fraction = [1.0, 0.5]\n"captions.sources" = ["alt", "kg"]'
    sweep = _sweep_file(tmp_path, shapes, axes)
    first = invoke(sweep, "-w", demo_copy)
    assert first.exit_code == 0, first.output
    assert "4 cells, 4 to run" in first.output
    metrics = _metrics(demo_copy, sweep)
    assert set(metrics) == {
        "data_fraction-1.0_sources-alt", "data_fraction-1.0_sources-kg",
        "data_fraction-0.5_sources-alt", "data_fraction-0.5_sources-kg",
    }
    half = next(c for c in load_sweep(sweep, demo_copy).cells if c.label == "data_fraction-0.5_sources-kg")
    subset = orjson.loads((demo_copy / "runs" / half.run / "run.json").read_bytes())["subset"]
    assert subset["fraction"] == 0.5 and 0 < subset["pictures"] < 187
    report = demo_copy / "sweeps" / "t" / "report"
    rows = (report / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("data_fraction,captions.sources,samples seen,pictures,shapes [name/none]")
    assert len(rows) == 5 and rows[1].startswith("1.0,alt,32,187,")
    assert (report / "sweep_shapes-name-none.png").stat().st_size > 5000
    assert "| 0.5 | kg | 32 |" in (report / "sweep.md").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a done cell ran again")

    monkeypatch.setattr("kgclip.train.loop.train", refuse)
    monkeypatch.setattr("kgclip.eval.run.evaluate", refuse)
    again = invoke(sweep, "-w", demo_copy)
    assert again.exit_code == 0, again.output
    assert "4 cells, 0 to run" in again.output
    status = invoke(sweep, "-w", demo_copy, "--status")
    assert status.output.count(" done ") == 4
    # `kgclip report` over the sweep's folder writes the same table where it is told
    other = runner.invoke(app, ["report", str(demo_copy / "sweeps" / "t"), "-o", str(tmp_path / "r")])
    assert other.exit_code == 0, other.output
    assert (tmp_path / "r" / "sweep.csv").read_text() == (report / "sweep.csv").read_text()  # same order


def test_a_killed_cell_resumes_from_its_checkpoint(demo_copy, shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "width", 200)  # the status table goes to stdout
    monkeypatch.setattr(console, "width", 200)  # and progress lines to stderr: unfolded
    sweep = _sweep_file(tmp_path, shapes, '"captions.sources" = ["alt", "kg"]', steps=6)
    first, second = load_sweep(sweep, demo_copy).cells
    ckpt = demo_copy / "runs" / second.run / "checkpoints"
    cmd = [sys.executable, "-m", "kgclip.cli", "sweep", str(sweep), "-w", str(demo_copy)]
    kill_when(cmd, (ckpt / "step_00000002.pt").is_file, timeout=300)
    status = invoke(sweep, "-w", demo_copy, "--status").output
    assert " done " in status and " partial " in status and "checkpoint step_0000000" in status
    done_before = _stamps(demo_copy / "runs" / first.run)
    resumed = invoke(sweep, "-w", demo_copy)
    assert resumed.exit_code == 0, resumed.output
    assert "2 cells, 1 to run" in resumed.output and "from step 0;" not in resumed.output
    assert "from step 2;" in resumed.output or "from step 4;" in resumed.output
    log = (demo_copy / "runs" / second.run / "log.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in log] == list(range(1, 7))  # no step lost or logged twice
    assert _stamps(demo_copy / "runs" / first.run) == done_before  # the finished cell was not touched


def test_ray_tasks_give_the_same_results_as_cells_run_here(demo_run, shapes, tmp_path):
    pytest.importorskip("ray")
    axes = 'data_fraction = [1.0, 0.5]'
    here, there = tmp_path / "here", tmp_path / "there"
    shutil.copytree(demo_run, here)
    shutil.copytree(demo_run, there)
    local = _sweep_file(tmp_path, shapes, axes)
    ray = _sweep_file(tmp_path, shapes, axes, executor="ray", name="ray.toml")
    assert invoke(local, "-w", here).exit_code == 0
    on_ray = invoke(ray, "-w", there)
    assert on_ray.exit_code == 0, on_ray.output
    assert "2 to run (ray)" in on_ray.output
    assert _metrics(here, local) == _metrics(there, ray)
