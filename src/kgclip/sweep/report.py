"""A sweep's table and plots: `sweeps/NAME/report/` (sweep.md, sweep.csv, PNGs).

One row per finished cell: its axis values, samples seen, the pictures its data fraction kept, and
each benchmark's headline metric beside chance. Plots follow the paper: with a `data_fraction`
axis, the metric against the fraction (log scale) with one line per setting of the other axes, one
plot per benchmark; without one, a bar per cell. Best-over-prompts results are left out (choosing
prompts on the test set flatters a model). Torch-free: it reads the cells' records and JSONs.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson

from kgclip.eval.report import ReportError, Result, load_result, pyplot, safe_name, save_png
from kgclip.workdir import atomic_write_bytes

FRACTION = "data_fraction"


@dataclass(frozen=True)
class Row:
    run: str
    values: dict[str, Any]
    samples_seen: int | None
    pictures: int | None
    results: dict[str, Result]  # benchmark -> its result


def collect(folder: Path, runs: list[str] | None = None) -> list[Row]:
    """The done cells recorded under the sweep's folder: those of `runs` in that order, when given,
    else all of them."""
    workdir = folder.parent.parent
    rows = []
    for path in sorted((folder / "cells").glob("*.json")):
        record = orjson.loads(path.read_bytes())
        if record.get("state") != "done" or (runs is not None and record["run"] not in runs):
            continue
        run_dir = workdir / "runs" / record["run"]
        meta = orjson.loads((run_dir / "run.json").read_bytes())
        loaded = (load_result(run_dir / f, strict=True) for f in record["results"])
        found = [r for r in loaded if r is not None and not r.best]
        subset = meta.get("subset") or {}
        rows.append(
            Row(
                record["run"],
                record["values"],
                meta.get("samples_seen"),
                subset.get("pictures", meta.get("samples")),
                {r.benchmark: r for r in found},
            )
        )
    if runs is not None:
        rows.sort(key=lambda r: runs.index(r.run))
    else:
        rows.sort(key=lambda r: [_order(v) for v in r.values.values()])
    return rows


def _order(value: Any) -> tuple[float, str]:
    """Numbers from the largest (a data fraction of 1 first), other values alphabetically."""
    return (-value, "") if isinstance(value, int | float) else (0, str(value))


def write_sweep_report(folder: Path, runs: list[str] | None = None, out: Path | None = None) -> list[Path]:
    """The table and plots of the sweep recorded in `folder` (WORKDIR/sweeps/NAME), into `out`
    (its report/ by default); `runs`: only those cells, in that order (the current grid's)."""
    rows = collect(folder, runs)
    if not rows:
        raise ReportError(f"{folder}: no finished cells yet (kgclip sweep runs them)")
    out = out or folder / "report"
    axes = list(dict.fromkeys(a for r in rows for a in r.values))
    benchmarks = list(dict.fromkeys(b for r in rows for b in r.results))
    header = [*axes, "samples seen", "pictures", *benchmarks]
    table = [
        [*(str(r.values.get(a, "")) for a in axes), _num(r.samples_seen), _num(r.pictures)]
        + [_with_chance(r.results[b]) if b in r.results else "" for b in benchmarks]
        for r in rows
    ]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in rows:
        writer.writerow(
            [*(r.values.get(a, "") for a in axes), r.samples_seen, r.pictures]
            + [r.results[b].metrics[r.results[b].headline] if b in r.results else "" for b in benchmarks]
        )
    atomic_write_bytes(out / "sweep.csv", buf.getvalue().encode())
    plots = [_plot(rows, b, axes, out) for b in benchmarks]
    md = [f"# Sweep {folder.name}", "", f"{len(rows)} finished cells; the headline metric (chance).", ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in table]
    md += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    atomic_write_bytes(out / "sweep.md", "\n".join(md).encode())
    return [out / "sweep.md", out / "sweep.csv", *plots]


def _plot(rows: list[Row], benchmark: str, axes: list[str], out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    mine = [r for r in rows if benchmark in r.results]
    metric = mine[0].results[benchmark].headline
    chance = mine[0].results[benchmark].chance(metric)
    if FRACTION in axes:
        others = [a for a in axes if a != FRACTION]
        lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in mine:
            label = ", ".join(f"{a.rsplit('.', 1)[-1]}={r.values.get(a)}" for a in others) or "all"
            lines[label].append((float(r.values[FRACTION]), 100 * r.results[benchmark].metrics[metric]))
        for label, points in lines.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        fractions = sorted({float(r.values[FRACTION]) for r in mine})
        ax.set_xticks(fractions, [str(Fraction(f).limit_denominator(1024)) for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("data fraction (log scale)")
    else:
        labels = [", ".join(f"{a.rsplit('.', 1)[-1]}={r.values.get(a)}" for a in axes) for r in mine]
        ax.bar(range(len(mine)), [100 * r.results[benchmark].metrics[metric] for r in mine])
        ax.set_xticks(range(len(mine)), labels, rotation=30, ha="right", fontsize=8)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(benchmark, fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, out / f"sweep_{safe_name(benchmark)}.png")


def _with_chance(r: Result) -> str:
    metric = r.headline
    chance = r.chance(metric)
    value = f"{100 * r.metrics[metric]:.2f}%"
    return value if chance is None else f"{value} ({100 * chance:.2f}%)"


def _num(value: int | None) -> str:
    return "" if value is None else f"{value:,}"
