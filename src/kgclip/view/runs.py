"""Training runs' evaluation results (runs/NAME/eval/*.json, as `kgclip eval` writes them; docs/eval.md).

A run is named by a request only through the listing of runs/: a name not listed there is no run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RUN_NAME = re.compile(r"[\w.-]+")


def run_names(workdir: Path) -> list[str]:
    runs = workdir / "runs"
    if not runs.is_dir():
        return []
    return sorted(p.name for p in runs.iterdir() if p.is_dir() and RUN_NAME.fullmatch(p.name))


def results(workdir: Path, run: str) -> list[dict[str, Any]] | None:
    """The run's final results, or those of its latest validation step; None for no such run."""
    if run not in run_names(workdir):
        return None
    folder = workdir / "runs" / run / "eval"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files and folder.is_dir():
        steps = sorted(p for p in folder.glob("step_*") if p.is_dir())
        files = sorted(steps[-1].glob("*.json")) if steps else []
    out = []
    for path in files:
        try:  # the stdlib's parser: CLIP_benchmark writes a bare NaN (acc5 with fewer than 5 classes)
            r = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            r = {"dataset": path.name, "task": f"unreadable: {e}"}
        if not isinstance(r, dict):
            r = {"dataset": path.name, "task": "unreadable: not a JSON object"}
        k = r.get("kgclip") if isinstance(r.get("kgclip"), dict) else {}
        recalls = [x for x in k.get("per_class_recall") or [] if isinstance(x, int | float)]
        out.append(
            {
                "file": path.name,
                "dataset": r.get("dataset"),
                "task": r.get("task"),
                "names": k.get("names"),
                "prompts": k.get("prompts"),
                "best_over_prompts": k.get("best_over_prompts"),
                "metrics": r.get("metrics") if isinstance(r.get("metrics"), dict) else {},
                "chance": k.get("chance") or {},
                "images": k.get("images"),
                "classes": k.get("classes"),
                "step": k.get("step"),
                "recall_buckets": _buckets(recalls),
                "confused": [c for c in k.get("confused") or [] if isinstance(c, list) and len(c) == 3],
            }
        )
    return out


def _buckets(recalls: list[float]) -> list[tuple[str, int]]:
    """How many classes have each range of per-class recall (the JSON gives no class names)."""
    edges = [
        (0.0, 0.0, "0%"),
        (0.0, 0.25, "1–25%"),
        (0.25, 0.5, "25–50%"),
        (0.5, 0.75, "50–75%"),
        (0.75, 1.0, "75–99%"),
        (1.0, 1.0, "100%"),
    ]
    counts = []
    for lo, hi, label in edges:
        if lo == hi:
            n = sum(1 for r in recalls if r == lo)
        else:
            n = sum(1 for r in recalls if lo < r <= hi and not (hi == 1.0 and r == 1.0))
        counts.append((label, n))
    return counts
