"""Sweep files: the grid, the cells' names and digests, and clear errors (no torch)."""

import pytest

from kgclip.config import ConfigError
from kgclip.sweep.grid import load_sweep

BASE = """extends = "demo"
[train]
max_steps = 2
[sweep]
name = "s"
eval_sets = ["wds:{workdir}/evalsets/x"]
[sweep.axes]
data_fraction = [1.0, 0.5, 0.25]
"captions.sources" = ["alt", "kg", "mixed"]
"""


def _sweep(tmp_path, text=BASE):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return load_sweep(path, tmp_path / "work")


def test_the_grid_is_the_product_of_the_axes_over_the_base_config(tmp_path):
    grid = _sweep(tmp_path)
    assert len(grid.cells) == 9
    cell = grid.cells[4]
    assert cell.values == {"data_fraction": 0.5, "captions.sources": "kg"}
    assert cell.config.train.data_fraction == 0.5 and cell.config.train.captions.sources == "kg"
    assert cell.config.train.max_steps == 2 and cell.config.train.model == "kgclip-tiny"  # base and [train]
    assert cell.label == "data_fraction-0.5_sources-kg"
    assert cell.run == f"s__data_fraction-0.5_sources-kg__{cell.digest[:8]}"
    assert cell.eval_sets == (f"wds:{tmp_path / 'work'}/evalsets/x",)
    assert len({c.digest for c in grid.cells}) == 9


def test_a_changed_setting_makes_other_cells(tmp_path):
    before = {c.label: c.digest for c in _sweep(tmp_path).cells}
    longer = _sweep(tmp_path, BASE.replace("max_steps = 2", "max_steps = 3"))
    after = {c.label: c.digest for c in longer.cells}
    assert before.keys() == after.keys() and not set(before.values()) & set(after.values())
    evals = _sweep(tmp_path, BASE.replace('eval_sets = ["wds:{workdir}/evalsets/x"]', "eval_sets = []")).cells
    assert not {c.digest for c in evals} & set(before.values())
    assert {c.digest for c in _sweep(tmp_path).cells} == set(before.values())  # and the same is the same


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[sweep]\n", "[notsweep]\n"), "[sweep]: invalid config\n  name: required key is missing"),
        (("[sweep.axes]", "[notsweep.axes]"), "[sweep]: invalid config\n  axes: required key is missing"),
        (('"captions.sources" = ["alt", "kg", "mixed"]', '"captions.sources" = ["alt", "both"]'),
         "cell data_fraction=1.0, captions.sources=both"),
        (("data_fraction = [1.0, 0.5, 0.25]", "data_fraction = [1.0, 1.0]"), "listed twice"),
        (("data_fraction = [1.0, 0.5, 0.25]", "data_fraction = []"), "no values"),
        (("data_fraction = [1.0, 0.5, 0.25]", "data_fraction = [2.0]"), "less than or equal to 1"),
        (("data_fraction = [1.0, 0.5, 0.25]", "nosuchkey = [1]"), "train.nosuchkey: unknown key"),
        (('name = "s"', 'name = "a/b"'), "name"),
    ],
)
def test_a_bad_sweep_file_is_one_clear_error(tmp_path, change, message):
    with pytest.raises(ConfigError) as err:
        _sweep(tmp_path, BASE.replace(*change))
    assert message in str(err.value)


def test_a_config_without_a_sweep_table_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"no \[sweep\] table"):
        _sweep(tmp_path, 'extends = "demo"\n')


def test_the_bundled_demo_sweep_is_the_papers_grid(tmp_path):
    grid = load_sweep("demo", tmp_path)
    assert [c.label for c in grid.cells][:3] == [
        "data_fraction-1.0_sources-alt", "data_fraction-1.0_sources-kg", "data_fraction-1.0_sources-mixed"
    ]
    assert len(grid.cells) == 9 and grid.cells[0].eval_sets == (f"wds:{tmp_path}/evalsets/gcompris",)
    with pytest.raises(ConfigError, match="bundled sweeps: demo"):
        load_sweep("nosuch", tmp_path)


def test_a_missing_evaluation_set_fails_before_any_training(tmp_path):
    from kgclip.eval.sets import EvalSetError
    from kgclip.sweep.run import run_sweep

    with pytest.raises(EvalSetError, match="evalsets/x"):
        run_sweep(_sweep(tmp_path), tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_a_run_folder_the_sweep_did_not_make_is_never_used(tmp_path):
    from kgclip.sweep.run import SweepError, cell_state, run_cell

    cell = _sweep(tmp_path).cells[0]
    work = tmp_path / "work"
    theirs = work / "runs" / cell.run
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    state = cell_state(cell, work)
    assert state.state == "missing"
    assert state.detail == "runs/ has a folder of its name that the sweep did not make"
    with pytest.raises(SweepError, match="is not this sweep's cell"):
        run_cell(cell, work)
    assert (theirs / "notes.txt").read_text() == "mine"


def test_a_cell_another_process_runs_is_left_to_it(tmp_path, monkeypatch):
    import fcntl
    import os

    from kgclip.sweep import run

    grid = _sweep(tmp_path, BASE.replace('eval_sets = ["wds:{workdir}/evalsets/x"]', "eval_sets = []"))
    work = tmp_path / "work"
    busy = run.record_path(work, grid.cells[0]).with_suffix(".lock")
    busy.parent.mkdir(parents=True)
    fd = os.open(busy, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another `kgclip sweep` holds it while the cell works
    ran = []
    monkeypatch.setattr(run, "run_cell", lambda cell, workdir: ran.append(cell.label))
    try:
        assert run.cell_state(grid.cells[0], work).state == "running"
        with pytest.raises(run.SweepError, match="running in another process"):
            run._lock(work, grid.cells[0]).__enter__()
        run.run_sweep(grid, work)
    finally:
        os.close(fd)
    assert ran == [c.label for c in grid.cells[1:]]
