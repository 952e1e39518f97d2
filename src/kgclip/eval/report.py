"""`kgclip report`: evaluation results of runs and checkpoints side by side, with plots.

Reads the results JSONs `kgclip eval` and validation during training write (CLIP_benchmark's
shape plus the `kgclip` object) and writes `report.md` and `report.csv`: one row per checkpoint
and benchmark, a benchmark being (set, name style, prompt set); "best over prompts" is its own
benchmark, labelled with the prompt set that won, never folded into the others. Chance stands
beside every number. Plots (matplotlib, Agg): the headline metric against samples seen per
benchmark (from results at several steps of a run), per-rank bars where a result has ranks
(iNaturalist), and the most confused class pairs with thumbnails from the set's own images.

Torch-free: it reads JSON and images only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from kgclip.eval.sets import RANKS, EvalSet
from kgclip.workdir import atomic_path, atomic_write_bytes

RESULT_KEYS = ("dataset", "model", "pretrained", "task", "metrics")
FIRST_METRICS = ("acc1", "acc5", "mean_per_class_recall")
THUMB = 128


class ReportError(ValueError):
    """Inputs that hold no results, or a file given by name that is not a result."""


@dataclass(frozen=True)
class Result:
    """One results JSON, with the labels the report groups it by."""

    path: Path
    data: dict[str, Any]

    @property
    def k(self) -> dict[str, Any]:
        return self.data.get("kgclip") or {}

    @property
    def metrics(self) -> dict[str, float]:
        return self.data["metrics"]

    @property
    def run(self) -> str | None:
        return self.k.get("run")

    @property
    def step(self) -> int | None:
        return self.k.get("step")

    @property
    def samples_seen(self) -> int | None:
        return self.k.get("samples_seen")

    @property
    def series(self) -> str:
        """What a curve follows across steps: the run, else the model and its weights."""
        if self.run:
            return Path(self.run).name
        return f"{self.data['model']}:{Path(str(self.data['pretrained'])).name}"

    @property
    def checkpoint(self) -> str:
        if self.run:
            return f"{self.series}@{'final' if self.step is None else self.step}"
        return self.series

    @property
    def best(self) -> bool:
        return bool(self.k.get("best_over_prompts"))

    @property
    def prompts(self) -> str:
        prompts = str(self.k.get("prompts", "?"))
        return f"best over prompts ({prompts})" if self.best else prompts

    @property
    def benchmark(self) -> str:
        """The column a result belongs to; a best-over-prompts result's is its own."""
        prompts = "best over prompts" if self.best else self.k.get("prompts", "?")
        return f"{self.data['dataset']} [{self.k.get('names', '?')}/{prompts}]"

    @property
    def headline(self) -> str:
        """acc1, else the smallest-k image retrieval recall, else the first metric."""
        if "acc1" in self.metrics:
            return "acc1"
        pattern = re.compile(r"image_retrieval_recall@(\d+)")
        recalls = sorted((int(m[1]), m[0]) for m in map(pattern.fullmatch, self.metrics) if m)
        return recalls[0][1] if recalls else next(iter(self.metrics))

    def chance(self, metric: str) -> float | None:
        value = (self.k.get("chance") or {}).get(metric)
        return None if value is None else float(value)


def collect(paths: Sequence[Path]) -> tuple[list[Result], int]:
    """The results under `paths` (a results file, a folder of them, or a run folder: its eval/),
    duplicates (the same checkpoint and benchmark) kept once; and how many JSONs were not results."""
    found: list[Result] = []
    ignored = 0
    for path in paths:
        files = _json_files(Path(path))
        for file in files:
            result = load_result(file, strict=Path(path).is_file())
            if result is None:
                ignored += 1
            else:
                found.append(result)
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise ReportError(f"no results JSONs in {where} (they are written by `kgclip eval`)")
    unique: dict[tuple[str, str, str], Result] = {}
    for r in sorted(found, key=lambda r: str(r.path)):
        unique.setdefault((r.checkpoint, r.benchmark, r.data["task"]), r)
    return sorted(unique.values(), key=_order), ignored


def _order(r: Result) -> tuple:
    return (r.series, -1 if r.step is None else r.step, r.benchmark)


def _json_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ReportError(f"{path}: no such file or folder")
    root = path / "eval" if (path / "run.json").is_file() else path
    if not root.is_dir():
        raise ReportError(f"{path}: a run without an eval/ folder; evaluate it first (kgclip eval {path})")
    return sorted(p for p in root.rglob("*.json") if "cache" not in p.relative_to(root).parts)


def load_result(path: Path, strict: bool) -> Result | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if strict:
            raise ReportError(f"{path}: not readable JSON ({exc})") from None
        return None
    if isinstance(data, dict) and all(k in data for k in RESULT_KEYS) and isinstance(data["metrics"], dict):
        return Result(path, data)
    if strict:
        raise ReportError(f"{path}: not a results file (needs {', '.join(RESULT_KEYS)})")
    return None


def write_report(
    results: Sequence[Result], out: Path, evalset: EvalSet | None = None, top: int = 8, ignored: int = 0
) -> list[Path]:
    """report.md, report.csv and the plots into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(results, out)
    ranks = [p for r in results if (p := plot_ranks(r, out)) is not None]
    confused = plot_confused(results, evalset, out, top) if evalset is not None else []
    csv_path = write_csv(results, out / "report.csv")
    md = out / "report.md"
    atomic_write_bytes(md, markdown(results, curves, ranks, confused, ignored).encode())
    return [md, csv_path, *curves, *ranks, *confused]


def metric_names(results: Iterable[Result]) -> list[str]:
    """acc1, acc5, mean per-class recall first, then every other metric by name."""
    seen = {m for r in results for m in r.metrics}
    return [m for m in FIRST_METRICS if m in seen] + sorted(seen - set(FIRST_METRICS))


CSV_HEAD = (
    "checkpoint",
    "run",
    "step",
    "samples_seen",
    "model",
    "pretrained",
    "dataset",
    "task",
    "names",
    "prompts",
    "best_over_prompts",
    "images",
    "classes",
)


def write_csv(results: Sequence[Result], path: Path) -> Path:
    """One row per checkpoint and benchmark: every metric, and chance beside each metric that has one."""
    metrics = metric_names(results)
    chances = sorted({m for r in results for m in (r.k.get("chance") or {})})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*CSV_HEAD, *metrics, *(f"chance_{m}" for m in chances), "file"])
        for r in results:
            k = r.k
            writer.writerow(
                [
                    r.checkpoint,
                    r.run or "",
                    _blank(r.step),
                    _blank(r.samples_seen),
                    r.data["model"],
                    r.data["pretrained"],
                    r.data["dataset"],
                    r.data["task"],
                    k.get("names", ""),
                    k.get("prompts", ""),
                    r.best,
                    _blank(k.get("images")),
                    _blank(k.get("classes")),
                    *(_blank(r.metrics.get(m)) for m in metrics),
                    *(_blank(r.chance(m)) for m in chances),
                    str(r.path),
                ]
            )
    return path


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}"


def markdown(
    results: Sequence[Result], curves: list[Path], ranks: list[Path], confused: list[Path], ignored: int
) -> str:
    checkpoints = list(dict.fromkeys(r.checkpoint for r in results))
    benchmarks = sorted({r.benchmark for r in results})
    lines = [
        "# Evaluation report",
        "",
        f"{len(results)} results: {len(checkpoints)} checkpoints x {len(benchmarks)} benchmarks. "
        "Numbers are percentages; chance (what guessing scores) is given with each. A benchmark is a "
        "set with a class-name style and a prompt set; **best over prompts** takes, per checkpoint, "
        "the prompt set that scored highest on that very set (named in brackets), so it is an upper "
        "bound chosen on the test data, not a number to compare with single-prompt results.",
        "",
    ]
    if ignored:
        lines += [f"{ignored} JSON file(s) in the inputs were not results and were left out.", ""]
    lines += ["## Headline metric per checkpoint and benchmark", ""]
    lines += [_summary(results, checkpoints, benchmarks)]
    lines += ["## Every result", "", _details(results)]
    if curves:
        lines += ["## Headline metric against samples seen", ""]
        lines += [f"![{p.stem}]({p.name})" for p in curves] + [""]
    if ranks:
        lines += ["## Accuracy per taxonomic rank", "", _rank_table(results), ""]
        lines += [f"![{p.stem}]({p.name})" for p in ranks] + [""]
    if confused:
        lines += ["## Most confused class pairs", ""]
        lines += [f"![{p.stem}]({p.name})" for p in confused] + [""]
    return "\n".join(lines)


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _summary(results: Sequence[Result], checkpoints: list[str], benchmarks: list[str]) -> str:
    cell = {(r.checkpoint, r.benchmark): r for r in results}
    any_of = {r.benchmark: r for r in results}
    head = ["checkpoint", "samples seen"]
    for b in benchmarks:
        r = any_of[b]
        metric = r.headline
        head.append(f"{b}: {metric} (chance {_pct(r.chance(metric))})")
    rows = []
    for c in checkpoints:
        seen = next((n for r in results if r.checkpoint == c and (n := r.samples_seen) is not None), None)
        row: list[Any] = [c, "" if seen is None else f"{seen:,}"]
        for b in benchmarks:
            r = cell.get((c, b))
            if r is None:
                row.append("")
            else:
                won = f" ({r.k.get('prompts')})" if r.best else ""
                row.append(_pct(r.metrics.get(r.headline)) + won)
        rows.append(row)
    return _table(head, rows)


def _details(results: Sequence[Result]) -> str:
    metrics = metric_names(results)
    head = ["checkpoint", "set", "names", "prompts", "images", "classes", *metrics]
    rows = []
    for r in results:
        k = r.k
        cells = [
            f"{_pct(r.metrics[m])} ({_pct(r.chance(m))})" if m in r.metrics and r.chance(m) is not None
            else (_pct(r.metrics[m]) if m in r.metrics else "")
            for m in metrics
        ]
        images, classes = k.get("images"), k.get("classes")
        rows.append(
            [
                r.checkpoint,
                r.data["dataset"],
                k.get("names", ""),
                r.prompts,
                "" if images is None else f"{images:,}",
                "" if classes is None else f"{classes:,}",
                *cells,
            ]
        )
    return "metric (chance)\n\n" + _table(head, rows)


def _rank_table(results: Sequence[Result]) -> str:
    rows = []
    for r in results:
        for rank in RANKS:
            got = (r.k.get("ranks") or {}).get(rank)
            if got:
                summed, direct = got.get("summed") or {}, got.get("direct") or {}
                rows.append(
                    [r.checkpoint, r.benchmark, rank, _pct(summed.get("acc1")), _pct(direct.get("acc1"))]
                )
    return _table(["checkpoint", "benchmark", "rank", "acc1 summed", "acc1 direct"], rows)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> Path:
    """PNG without a date or software stamp, so the same results give the same file."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    pyplot().close(fig)
    return path


Curve = dict[str, list[tuple[int, float]]]  # series -> (samples seen, headline metric), in order


def curves(results: Sequence[Result]) -> dict[str, tuple[str, Curve, float | None]]:
    """Per benchmark with results at a known number of samples seen: its headline metric, one
    series of points per run (or model), and chance."""
    by_benchmark: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.samples_seen is not None and r.headline in r.metrics:
            by_benchmark[r.benchmark].append(r)
    found = {}
    for benchmark, rs in sorted(by_benchmark.items()):
        metric = rs[0].headline
        series: Curve = defaultdict(list)
        for r in sorted(rs, key=lambda r: (r.series, r.samples_seen)):
            series[r.series].append((int(r.samples_seen or 0), float(r.metrics[metric])))
        chance = next((c for r in rs if (c := r.chance(metric)) is not None), None)
        found[benchmark] = (metric, dict(series), chance)
    return found


def plot_curves(results: Sequence[Result], out: Path) -> list[Path]:
    """One plot per benchmark: a line per run, chance dashed."""
    plt = pyplot()
    written = []
    for benchmark, (metric, series, chance) in curves(results).items():
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for name, points in series.items():
            ax.plot([x for x, _ in points], [100 * y for _, y in points], marker="o", label=name)
        if chance is not None:
            ax.axhline(100 * chance, linestyle="--", color="grey", label="chance")
        ax.set_xlabel("samples seen")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(benchmark, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        written.append(save_png(fig, out / f"curve_{safe_name(benchmark)}.png"))
    return written


def plot_ranks(r: Result, out: Path) -> Path | None:
    """acc1 per rank, summed species probabilities beside classifying the rank names directly."""
    ranks = [rank for rank in RANKS if (r.k.get("ranks") or {}).get(rank)]
    if not ranks:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.4
    hows = (("summed", "species probabilities summed"), ("direct", "rank names classified directly"))
    for i, (how, legend) in enumerate(hows):
        values = [100 * ((r.k["ranks"][rank].get(how) or {}).get("acc1") or 0.0) for rank in ranks]
        ax.bar([x + (i - 0.5) * width for x in range(len(ranks))], values, width, label=legend)
    ax.set_xticks(range(len(ranks)), ranks)
    ax.set_ylabel("acc1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{r.checkpoint}: {r.benchmark}", fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, out / f"ranks_{safe_name(r.checkpoint)}_{safe_name(r.benchmark)}.png")


def plot_confused(results: Sequence[Result], evalset: EvalSet, out: Path, top: int) -> list[Path]:
    """For every result on `evalset` (best-over-prompts copies left out), its `top` most confused
    (true, predicted) pairs, each with the first image of both classes in the set."""
    mine = [
        r
        for r in results
        if r.data["dataset"] == evalset.name and not r.best and r.k.get("confused")
    ]
    if not mine:
        raise ReportError(f"no results on the set {evalset.name} ({evalset.source}) with confused pairs")
    label = {c.name: i for i, c in enumerate(evalset.classes)}
    pairs = {r.path: [p for p in r.k["confused"][:top] if p[0] in label and p[1] in label] for r in mine}
    wanted = {label[name] for ps in pairs.values() for p in ps for name in p[:2]}
    thumbs = _thumbnails(evalset, wanted)
    return [_confused_figure(r, pairs[r.path], label, thumbs, out) for r in mine if pairs[r.path]]


def _thumbnails(evalset: EvalSet, labels: set[int]) -> dict[int, Image.Image]:
    """The first readable image of each class in `labels`, shrunk; stops once all are found."""
    found: dict[int, Image.Image] = {}
    for item in evalset.items():
        if item.label in labels and item.label not in found:
            try:
                with Image.open(io.BytesIO(item.read())) as im:
                    thumb = im.convert("RGB")
                thumb.thumbnail((THUMB, THUMB))
                found[item.label] = thumb
            except (OSError, SyntaxError, ValueError):
                continue  # an unreadable image: the class's next one is shown instead
            if len(found) == len(labels):
                break
    return found


def _confused_figure(
    r: Result, pairs: list[list[Any]], label: dict[str, int], thumbs: dict[int, Image.Image], out: Path
) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(len(pairs), 2, figsize=(5, 2.3 * len(pairs) + 0.6), squeeze=False)
    for row, (true, predicted, count) in zip(axes, pairs, strict=True):
        for ax, name, role in ((row[0], true, "true"), (row[1], predicted, "taken for")):
            thumb = thumbs.get(label[name])
            if thumb is not None:
                ax.imshow(thumb)
            else:
                ax.text(0.5, 0.5, "no readable image", ha="center", va="center")
            ax.set_title(f"{role}: {name}" + (f" ({count}x)" if role != "true" else ""), fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{r.checkpoint}: {r.benchmark}", fontsize=10)
    return save_png(fig, out / f"confused_{safe_name(r.checkpoint)}_{safe_name(r.benchmark)}.png")
