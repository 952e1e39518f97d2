"""The conditions a benchmark ran under, printed with its result so a figure can be repeated.

`describe(**extra)` returns one block of text: the date, the machine (CPU model, cores, memory,
load average), Python, kgclip (version and git commit), numpy, and every extra condition the
benchmark passes (peer versions, decompressor, hosts, rounds, sizes). `version_of` reads an
installed distribution's version without importing it, so asking costs the timed code nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def tool_version(cmd: list[str]) -> str:
    """First line a command prints about its version (stdout or stderr), or 'not installed'."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else f"exit {out.returncode}"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "") or "unknown"


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return "unknown"
    totals = [int(line.split()[1]) for line in lines if line.startswith("MemTotal:")]
    return f"{totals[0] / 2**20:.0f} GiB" if totals else "unknown"


def describe(**extra: object) -> str:
    """The conditions as 'conditions:' followed by one 'key: value' line each."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = {
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{_cpu()}, {os.cpu_count()} cores, {_memory()} RAM, load average {load}",
        "python": f"{platform.python_version()} ({sys.executable})",
        "kgclip": f"{version_of('kgclip')} at {_commit()}",
        "numpy": version_of("numpy"),
        **{k.replace("_", " "): v for k, v in extra.items()},
    }
    width = max(len(k) for k in rows)
    return "conditions:\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows.items())
