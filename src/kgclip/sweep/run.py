"""Running a sweep: each cell trains, then is evaluated; whatever is done is skipped.

A cell's record, `sweeps/NAME/cells/RUN.json` in the work directory, says the folder `runs/RUN` is
the sweep's and what the cell has done (`training`, `trained`, `done` with its result files). A cell
killed while training resumes from its last checkpoint (`kgclip train --resume`); one killed before
its first checkpoint starts again (the folder holds only its own logs). A lock file beside the record,
held while the cell works, tells `--status` that it is running and keeps two sweeps off one cell.

Cells run one after another here, or as Ray tasks (one per cell, asking for `gpus_per_cell` GPUs), in
both cases through `run_cell`, so the results are the same.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kgclip.progress import console
from kgclip.sweep.grid import Cell, Sweep
from kgclip.workdir import atomic_write_bytes

SWEEPS = "sweeps"


class SweepError(RuntimeError):
    """A cell that cannot run: its folder is not the sweep's, or another process holds it."""


@dataclass
class CellState:
    cell: Cell
    state: str  # done, running, trained, partial, missing
    detail: str = ""
    results: list[str] = field(default_factory=list)  # result files under runs/RUN/eval/


def record_path(workdir: Path, cell: Cell) -> Path:
    return workdir / SWEEPS / cell.sweep / "cells" / f"{cell.run}.json"


def cell_state(cell: Cell, workdir: Path) -> CellState:
    """What the cell has done, read from its record, its run folder, and whether its lock is held."""
    from kgclip.train import checkpoint

    record = _record(workdir, cell)
    if record.get("state") == "done":
        return CellState(cell, "done", "", list(record.get("results") or []))
    if _locked(workdir, cell):
        return CellState(cell, "running", record.get("state", ""))
    run_dir = workdir / "runs" / cell.run
    if not record:
        foreign = "runs/ has a folder of its name that the sweep did not make"
        return CellState(cell, "missing", foreign if run_dir.exists() else "")
    if _finished(run_dir):
        return CellState(cell, "trained", "evaluation missing")
    found = checkpoint.latest(run_dir / "checkpoints")
    if found is not None:
        return CellState(cell, "partial", f"checkpoint {found.name}")
    return CellState(cell, "missing", "started; no checkpoint yet")


def run_cell(cell: Cell, workdir: Path) -> CellState:
    """Train the cell (or resume it) and evaluate it; a done cell is left as it is."""
    with _lock(workdir, cell):
        record = _record(workdir, cell)
        if record.get("state") == "done":
            return cell_state(cell, workdir)
        run_dir = workdir / "runs" / cell.run
        if run_dir.exists() and not record:
            raise SweepError(f"{run_dir} exists and is not this sweep's cell: move it, or rename the sweep")
        if not _finished(run_dir):
            _train(cell, workdir, run_dir)
        _write_record(workdir, cell, "trained")
        results = _evaluate(cell, workdir, run_dir)
        _write_record(workdir, cell, "done", results)
    return cell_state(cell, workdir)


def run_sweep(sweep: Sweep, workdir: Path) -> list[CellState]:
    """Every cell not done yet, here in turn or as Ray tasks; returns every cell's state after."""
    states = {c.run: cell_state(c, workdir).state for c in sweep.cells}
    for c in sweep.cells:
        if states[c.run] == "running":
            console.print(f"sweep {sweep.spec.name}: {c.label}: another process is running it; left to it")
    todo = [c for c in sweep.cells if states[c.run] not in ("done", "running")]
    if todo:
        from kgclip.eval.open import open_set

        for spec in dict.fromkeys(s for c in todo for s in c.eval_sets):
            open_set(spec)  # a wrong set fails now, not after the first cell's training
    where = sweep.spec.executor
    console.print(f"sweep {sweep.spec.name}: {len(sweep.cells)} cells, {len(todo)} to run ({where})")
    if sweep.spec.executor == "ray" and todo:
        _run_on_ray(sweep, todo, workdir)
    else:
        began = time.monotonic()
        for i, cell in enumerate(todo, 1):
            console.print(f"sweep {sweep.spec.name}: cell {i}/{len(todo)}: {cell.label} ({cell.run})")
            run_cell(cell, workdir)
            took = (time.monotonic() - began) / i
            console.print(
                f"sweep {sweep.spec.name}: {i}/{len(todo)} cells done, {took / 60:.1f} min a cell, "
                f"ETA {took * (len(todo) - i) / 60:.0f} min"
            )
    return [cell_state(c, workdir) for c in sweep.cells]


def _run_on_ray(sweep: Sweep, todo: list[Cell], workdir: Path) -> None:
    from kgclip.raycluster import ray_session

    base = todo[0].config
    with ray_session(base.ray) as ray:
        task = ray.remote(num_gpus=sweep.spec.gpus_per_cell, num_cpus=sweep.spec.cpus_per_cell)(_remote_cell)
        refs = {task.remote(cell, str(workdir)): cell for cell in todo}
        began = time.monotonic()
        while refs:
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            cell = refs.pop(ref)
            state = ray.get(ref)
            done = len(todo) - len(refs)
            console.print(
                f"sweep {sweep.spec.name}: {cell.label}: {state} ({done}/{len(todo)} cells, "
                f"{(time.monotonic() - began) / 60:.1f} min so far)"
            )


def _remote_cell(cell: Cell, workdir: str) -> str:
    return run_cell(cell, Path(workdir)).state


def _train(cell: Cell, workdir: Path, run_dir: Path) -> None:
    from kgclip.train import checkpoint
    from kgclip.train.loop import train

    resume = checkpoint.latest(run_dir / "checkpoints") is not None
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # the cell's own start, killed before its first checkpoint: only logs
    _write_record(workdir, cell, "training")
    train(cell.config, run_dir, workdir=workdir, resume=resume)


def _evaluate(cell: Cell, workdir: Path, run_dir: Path) -> list[str]:
    if not cell.eval_sets:
        return []
    from kgclip.eval.model import load_model
    from kgclip.eval.run import EvalOptions, evaluate, folders, results

    model = load_model(str(run_dir))
    opts = EvalOptions(names=cell.eval_names, prompts=cell.eval_prompts, workdir=workdir)
    found = evaluate(model, list(cell.eval_sets), opts)
    out, _ = folders(model, opts)
    return [str((out / results.file_name(r)).relative_to(run_dir)) for r in found]


def _finished(run_dir: Path) -> bool:
    path = run_dir / "run.json"
    try:
        return path.is_file() and bool(orjson.loads(path.read_bytes()).get("finished"))
    except orjson.JSONDecodeError:
        return False


def _record(workdir: Path, cell: Cell) -> dict[str, Any]:
    path = record_path(workdir, cell)
    if not path.is_file():
        return {}
    try:
        found = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) and found.get("digest") == cell.digest else {}


def _write_record(workdir: Path, cell: Cell, state: str, results: list[str] | None = None) -> None:
    record = {
        "sweep": cell.sweep,
        "run": cell.run,
        "values": cell.values,
        "digest": cell.digest,
        "state": state,
        "results": results or [],
    }
    atomic_write_bytes(record_path(workdir, cell), orjson.dumps(record, option=orjson.OPT_INDENT_2))


@contextmanager
def _lock(workdir: Path, cell: Cell) -> Iterator[None]:
    path = record_path(workdir, cell).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"cell {cell.run} is running in another process") from None
        yield
    finally:
        os.close(fd)


def _locked(workdir: Path, cell: Cell) -> bool:
    path = record_path(workdir, cell).with_suffix(".lock")
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
