"""Ctrl-C during a stage: one line, no traceback; `status` shows the stage as partial with how far it
got; the next run resumes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import _QuietFiles
from kgclip.config import load
from kgclip.pipeline import status
from kgclip.workdir import Workdir


@pytest.fixture
def slower_host(photo_host):
    _QuietFiles.delay = 0.25
    yield photo_host
    _QuietFiles.delay = 0.0


def as_in_a_terminal() -> None:
    """Ctrl-C as a terminal's foreground job gets it: a shell that starts a job in the background
    (`cmd &`, as some CI runners do) makes it ignore SIGINT, and every child inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _running_progress(work) -> int:
    running = Workdir(work).running() if (work / "manifest.json").exists() else {}
    return running.get("fetch", {}).get("done") or 0


def test_ctrl_c_during_fetch_says_one_line_and_status_shows_partial(web_photo_config, slower_host, tmp_path):
    config = tmp_path / "slow.toml"
    config.write_text(
        f'extends = "{web_photo_config}"\n[fetch]\nworkers = 2\nper_host_concurrency = 1\nbatch_size = 4\n'
    )
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "kgclip.cli", "harvest", str(config), "-w", str(work)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=as_in_a_terminal,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None and _running_progress(work) < 8:
            time.sleep(0.05)
        assert proc.poll() is None, "the harvest ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted; rerun to resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "Task" not in err

    fetch = {s.stage.name: s for s in status(load(config), Workdir(work))}["fetch"]
    assert fetch.state == "partial"
    assert fetch.why.startswith("stopped before the end; rerun to resume: fetch ")
    done = int(fetch.why.split("fetch ")[1].split("/")[0].replace(",", ""))
    assert done >= 8

    _QuietFiles.delay = 0.0
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert all(s.state == "done" for s in status(load(config), Workdir(work)))


POOL = textwrap.dedent(
    """
    import sys, time
    from kgclip.workers import process_pool

    def square(x):
        return x * x

    if __name__ == "__main__":
        with process_pool(2) as pool:
            assert list(pool.map(square, range(4))) == [0, 1, 4, 9]
            print("ready", flush=True)
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                print("interrupted; rerun to resume", file=sys.stderr)
                raise SystemExit(130) from None
    """
)


def test_ctrl_c_reaches_only_the_main_process_of_a_worker_pool():
    """Decontam indexing and the dump scan run process pools outside asyncio (whose SIGINT handler
    the fetch workers inherit): without kgclip.workers' initializer every idle worker of the
    group that a terminal's Ctrl-C reaches prints its own KeyboardInterrupt traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-c", POOL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=as_in_a_terminal,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(0.2)  # the workers are back waiting for tasks
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err == "interrupted; rerun to resume\n"
