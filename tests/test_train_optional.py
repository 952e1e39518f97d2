"""Harvesting never needs torch: a harvest-only install runs every harvest command, and the training
commands say what to install."""

import shutil
import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent(
    """
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "open_clip"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    from kgclip.cli import app
    try:
        app(sys.argv[1:])
    finally:
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip"))
        print("torch modules loaded:", loaded, file=sys.stderr)
    """
)


def kgclip_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, timeout=600
    )


def test_a_harvest_runs_without_torch_and_never_imports_it(demo_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(demo_run, work)
    (work / "samples.parquet").unlink()  # curate runs again, then everything is reported
    done = kgclip_without_torch("harvest", "demo", "-w", str(work))
    assert done.returncode == 0, done.stderr
    assert "curate: running" in done.stderr and "torch modules loaded: []" in done.stderr
    status = kgclip_without_torch("status", str(work))
    assert status.returncode == 0 and "torch modules loaded: []" in status.stderr


def test_train_without_torch_says_what_to_install(demo_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(demo_run, work)
    got = kgclip_without_torch("train", "demo", "-w", str(work))
    assert got.returncode == 2
    assert "kgclip train needs torch and open_clip" in got.stderr and "Traceback" not in got.stderr
    demo = kgclip_without_torch("demo", "-w", str(work), "--keep")
    assert demo.returncode == 0 and "training skipped: torch and open_clip are not installed" in demo.stderr
