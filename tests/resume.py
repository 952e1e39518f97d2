"""Kill a command with SIGKILL once it has done part of its work, then run it again: shared by the
tests that check resuming (fetch, for local files and over HTTP; training; sweeps)."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from kgclip.workdir import Workdir


def without_fetch(src: Path, dst: Path) -> None:
    """A copy of a finished harvest with fetch's ledger, table and parts removed."""
    shutil.copytree(src, dst)
    for leftover in [*dst.glob("cache/fetch.sqlite*"), dst / "fetched.parquet"]:
        leftover.unlink()
    shutil.rmtree(dst / "parts")


def kill_when(
    cmd: list[str], ready: Callable[[], bool], timeout: float = 120, *, must_run: bool = True
) -> None:
    """Run `cmd` in its own process group and SIGKILL the whole group as soon as `ready()` holds (or
    at the timeout); with `must_run`, fail if the command ended by itself before that."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert not must_run or proc.poll() is None, "the command ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_mid_fetch_then_resume(config: Path, work: Path, reference: Path) -> tuple[int, int, dict]:
    """(outcomes committed before the kill, all outcomes, the resumed fetch's stats)."""
    cmd = [sys.executable, "-m", "kgclip.cli", "harvest", str(config), "-w", str(work)]
    ledger = work / "cache/fetch.sqlite"
    kill_when(cmd, lambda: _ledger_count(ledger) >= 24, must_run=False)
    done_before = _ledger_count(ledger)
    total = pq.read_table(reference / "fetched.parquet").num_rows
    assert 0 < done_before < total, "the kill must land in the middle of fetch"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    return done_before, total, Workdir(work).load_manifest()["fetch"].stats


def _ledger_count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT count(*) FROM outcomes").fetchone()[0]
    except sqlite3.OperationalError:  # created but not yet initialised by the harvest
        return 0
