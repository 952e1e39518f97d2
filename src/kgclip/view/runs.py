"""Training runs' evaluation results (runs/NAME/eval/*.json, as `kgclip eval` writes them; docs/eval.md).

A run is named by a request only through the listing of runs/: a name not listed there is no run.
Example images of confused pairs are files in runs/NAME/eval/examples/ named by a digest
(eval/examples.py); a request names one only through that pattern."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RUN_NAME = re.compile(r"[\w.-]+")
EXAMPLE_FILE = re.compile(r"[0-9a-f]{16}\.jpg")
CLASSES_SHOWN = 1000  # per result, the classes of lowest recall first


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
        per_class = k.get("per_class_recall") or []
        recalls = [x for x in per_class if isinstance(x, int | float)]
        confused = [c for c in k.get("confused") or [] if isinstance(c, list) and len(c) == 3]
        examples = k.get("confused_examples") if isinstance(k.get("confused_examples"), list) else []
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
                "per_class": _per_class(k.get("class_names"), k.get("class_images"), per_class),
                "confused": [
                    (*c, _example_files(examples[i] if i < len(examples) else None))
                    for i, c in enumerate(confused)
                ],
            }
        )
    return out


def example_path(workdir: Path, run: str, name: str) -> Path | None:
    """The example image's file, or None when the run or the file name is not one kgclip writes."""
    if run not in run_names(workdir) or not EXAMPLE_FILE.fullmatch(name):
        return None
    path = workdir / "runs" / run / "eval" / "examples" / name
    return path if path.is_file() else None


def _example_files(pair: Any) -> dict[str, list[str]]:
    """{"mistakes": [file], "taken_for": [file]}: only names that an example route would serve."""
    pair = pair if isinstance(pair, dict) else {}
    out = {}
    for role in ("mistakes", "taken_for"):
        shown = pair.get(role) if isinstance(pair.get(role), list) else []
        out[role] = [
            e["file"] for e in shown if isinstance(e, dict) and EXAMPLE_FILE.fullmatch(str(e.get("file")))
        ]
    return out


def _per_class(names: Any, images: Any, recalls: list[Any]) -> list[tuple[str, int | None, float | None]]:
    """(class, images, recall), lowest recall first (classes without images last); results written
    before eval recorded class names have none."""
    if not isinstance(names, list) or len(names) != len(recalls):
        return []
    counts = images if isinstance(images, list) and len(images) == len(names) else [None] * len(names)
    rows = [
        (str(n), c if isinstance(c, int) else None, r if isinstance(r, int | float) else None)
        for n, c, r in zip(names, counts, recalls, strict=True)
    ]
    rows.sort(key=lambda row: (row[2] is None, row[2] if row[2] is not None else 0.0, row[0]))
    return rows[:CLASSES_SHOWN]


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
