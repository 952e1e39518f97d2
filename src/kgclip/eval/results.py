"""Results: one JSON per (set, name style, prompt set) in CLIP_benchmark's shape, and the table.

The top level is exactly CLIP_benchmark's (`dataset`, `model`, `pretrained`, `task`, `metrics`,
`language`), so `clip_benchmark build *.json` aggregates kgclip's files with its own; everything
kgclip adds sits under `kgclip`. NaN (acc5 with fewer than 5 classes) is written as `NaN`, as
CLIP_benchmark's `json.dump` writes it. "Best over prompts" is never a plain row: it is its own file
and row, with `best_over_prompts: true` and the winning prompt set named.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from kgclip.eval.sets import CLASSIFICATION, RETRIEVAL
from kgclip.workdir import atomic_write_bytes

LANGUAGE = "en"
BEST = "best-over-prompts"
HEADLINE = ("acc1", "acc5", "mean_per_class_recall")
OVAD = "ovad_attributes"  # the task of an OVAD result (CLIP_benchmark has no such task)


def file_name(result: dict[str, Any]) -> str:
    """`{dataset}_{names}_{prompts}_{model}_en_{task}.json`, each part safe as a file name."""
    k = result["kgclip"]
    prompts = BEST if k["best_over_prompts"] else k["prompts"]
    parts = (result["dataset"], k["names"], prompts, result["model"], result["language"], result["task"])
    return "_".join(_safe(str(p)) for p in parts) + ".json"


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-") or "x"


def write(result: dict[str, Any], folder: Path) -> Path:
    path = folder / file_name(result)
    atomic_write_bytes(path, (json.dumps(result, indent=1) + "\n").encode())
    return path


def best_over_prompts(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The result with the highest acc1 among one (set, name style)'s prompt sets, labelled as such."""
    winner = max(results, key=lambda r: r["metrics"]["acc1"])  # the first of equals: the order asked
    best = json.loads(json.dumps(winner))
    best["kgclip"]["best_over_prompts"] = True
    best["kgclip"]["compared_prompts"] = [r["kgclip"]["prompts"] for r in results]
    return best


def tables(results: Sequence[dict[str, Any]]) -> list[Table]:
    """One table per task among `results`, in the order the tasks first appear."""
    makers = {CLASSIFICATION: table, RETRIEVAL: retrieval_table, OVAD: ovad_table}
    tasks = list(dict.fromkeys(r["task"] for r in results))
    return [makers[task]([r for r in results if r["task"] == task]) for task in tasks]


def table(results: Sequence[dict[str, Any]]) -> Table:
    """One row per classification result: acc1 and acc5 with chance beside them; the best-over-prompts
    rows marked. The fallback column appears only when some class lacked its style's name."""
    t = Table(title="zero-shot classification")
    fallbacks = any(r["kgclip"]["fallback_names"] for r in results)
    for column in ("set (images, classes)", "names", "prompts", "acc1 (chance)", "acc5 (chance)"):
        t.add_column(column, overflow="fold")
    t.add_column("mean class recall", justify="right", overflow="fold")
    if fallbacks:
        t.add_column("fallback names", justify="right", overflow="fold")
    for r in results:
        k = r["kgclip"]
        prompts = f"best over prompts: {k['prompts']}" if k["best_over_prompts"] else k["prompts"]
        m, chance = r["metrics"], k["chance"]
        row = [
            f"{r['dataset']} ({k['images']:,}, {k['classes']:,})",
            k["names"],
            prompts,
            f"{_pct(m['acc1'])} ({_pct(chance['acc1'])})",
            f"{_pct(m['acc5'])} ({_pct(chance['acc5'])})",
            _pct(m["mean_per_class_recall"]),
        ]
        t.add_row(*row, *([str(k["fallback_names"])] if fallbacks else []))
    return t


def retrieval_table(results: Sequence[dict[str, Any]]) -> Table:
    """One row per retrieval result: every recall@k with chance beside it."""
    title = "zero-shot retrieval (recall@k; text->image is image retrieval)"
    return _metric_table(title, results, ("images", "texts"))


def ovad_table(results: Sequence[dict[str, Any]]) -> Table:
    """One row per OVAD result: mAP and the head/medium/tail means with chance beside them."""
    return _metric_table("OVAD attributes (box-oracle mAP)", results, ("prompts", "boxes"))


def _metric_table(title: str, results: Sequence[dict[str, Any]], fields: tuple[str, ...]) -> Table:
    """The set, the given `kgclip` fields (numbers right-aligned), then every metric with its chance."""
    t = Table(title=title)
    metrics = list(dict.fromkeys(m for r in results for m in r["metrics"]))
    t.add_column("set", overflow="fold")
    for key in fields:
        numeric = bool(results) and isinstance(results[0]["kgclip"][key], int)
        t.add_column(key, justify="right" if numeric else "left", overflow="fold")
    for m in metrics:
        t.add_column(m, overflow="fold")
    for r in results:
        k = r["kgclip"]
        given = [f"{k[key]:,}" if isinstance(k[key], int) else str(k[key]) for key in fields]
        cells = [_with_chance(r["metrics"].get(m), k["chance"].get(m)) for m in metrics]
        t.add_row(r["dataset"], *given, *cells)
    return t


def _with_chance(value: float | None, chance: float | None) -> str:
    return f"{_pct(value)} ({_pct(chance)})"


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}%"
