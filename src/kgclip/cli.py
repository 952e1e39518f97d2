"""The `kgclip` command line: parses, calls a stage or a command, prints. No logic of its own.

Results (a status table, search hits, evaluation tables, a config) go to stdout; progress, logs
and errors to stderr.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup

from kgclip import __version__
from kgclip.config import Config, ConfigError, builtin_names, load, resolve
from kgclip.pipeline import STAGES
from kgclip.progress import console, results

STAGE_NAMES = ", ".join(stage.name for stage in STAGES)


class Argument(TyperArgument):
    """An argument shown by its name alone: `kgclip harvest CONFIG`, not `{config}` and `<str>`."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        return self.display_name_raw + ("..." if self.nargs != 1 else "")


def _for_users(params: list[Any]) -> list[Any]:
    """Help shows a flag bare (no `<bool>`) and a value by its name (CONFIG, not `<str>`)."""
    for param in params:
        if param.metavar is None:
            param.metavar = "" if getattr(param, "is_flag", False) else (param.name or "").upper()
        if type(param) is TyperArgument:
            param.__class__ = Argument
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _for_users(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _for_users(super().get_params(ctx))


def _group(help_text: str, **kwargs: Any) -> typer.Typer:
    # No rich markup: help texts name config sections such as [search.corpus], shown as written.
    return typer.Typer(
        cls=Group,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        help=help_text,
        **kwargs,
    )


app = _group(
    "Harvest image-text datasets for CLIP training from knowledge graphs.\n\n"
    "Results go to stdout; progress, logs and errors to stderr. `kgclip demo` runs the offline "
    "example; `kgclip COMMAND --help` tells more."
)
corpus_app = _group("Build and search local image-text collections (corpora).")
config_app = _group("Show the bundled configs, or any config with every default filled in.")
decontam_app = _group("Keep evaluation images out of the training set.")
evalset_app = _group("Build evaluation sets from local sources.")
app.add_typer(corpus_app, name="corpus")
app.add_typer(decontam_app, name="decontam")
app.add_typer(config_app, name="config")
app.add_typer(evalset_app, name="evalset")

F = TypeVar("F", bound=Callable[..., Any])
RESOLVED_CONFIG = "config.json"


class UserError(Exception):
    """Raised by commands for a condition the user can fix; printed without a traceback."""


def friendly(fn: F) -> F:
    """Known failures become one clear line and exit code 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from kgclip.audit import AuditError
        from kgclip.curate.decontam import DecontamError
        from kgclip.eval.classtexts import ClassTextsError
        from kgclip.eval.sets import EvalSetError
        from kgclip.kg.merge import BridgeError
        from kgclip.kg.wikidata.dump import DumpError
        from kgclip.kg.wikidata.sparql import SparqlError
        from kgclip.kg.wordnet import WordNetNotFound
        from kgclip.pipeline import PipelineError
        from kgclip.raycluster import RayUnavailable
        from kgclip.search.corpus import CorpusError
        from kgclip.search.importers import CorpusSourceError
        from kgclip.search.web import SearchError
        from kgclip.text.llm import LLMError
        from kgclip.train.errors import TrainError
        from kgclip.workdir import WorkdirError

        known = (
            UserError,
            ConfigError,
            PipelineError,
            WordNetNotFound,
            CorpusError,
            CorpusSourceError,
            DumpError,
            SparqlError,
            BridgeError,
            SearchError,
            LLMError,
            RayUnavailable,
            DecontamError,
            WorkdirError,
            TrainError,
            EvalSetError,
            ClassTextsError,
            AuditError,
        )
        try:
            return fn(*args, **kwargs)
        except known as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted; rerun to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        results.print(f"kgclip {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Harvest image-text datasets for CLIP training from knowledge graphs."""


WorkdirOpt = Annotated[
    Path, typer.Option("-w", "--workdir", metavar="WORKDIR", help="work directory of the harvest")
]
WorkdirArg = Annotated[Path, typer.Argument(metavar="WORKDIR", help="work directory of a harvest")]
ConfigArg = Annotated[
    str, typer.Argument(metavar="CONFIG", help="a config file, or the name of a bundled config (demo, ...)")
]


@app.command(cls=Command)
@friendly
def harvest(
    config: ConfigArg,
    workdir: WorkdirOpt,
    only: Annotated[
        str | None,
        typer.Option(
            "--only", metavar="STAGE", help=f"run just this stage (its inputs must exist): {STAGE_NAMES}"
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from", metavar="STAGE", help=f"run this stage and every one after it again: {STAGE_NAMES}"
        ),
    ] = None,
    max_requests: Annotated[
        int | None,
        typer.Option(
            "--max-requests", min=0, metavar="N", help="at most N requests per web search backend in this run"
        ),
    ] = None,
) -> None:
    """Run every stage of a harvest that is not up to date (a rerun resumes where it stopped)."""
    cfg = load(config)
    if max_requests is not None:
        cfg = with_request_budget(cfg, max_requests)
    ran = _run(cfg, workdir, only=only, start=start)
    console.print(f"harvest: {'ran ' + ', '.join(ran) if ran else 'nothing to do, all stages up to date'}")


def with_request_budget(cfg: Config, budget: int) -> Config:
    """The config with `max_requests` set on every web search backend it uses; what is left
    unanswered is recorded as retry_later and asked on the next run."""
    search = cfg.search
    updates = {
        name: getattr(search, name).model_copy(update={"max_requests": budget})
        for name in search.active
        if name != "corpus"
    }
    return cfg.model_copy(update={"search": search.model_copy(update=updates)})


def missing_keys(cfg: Config) -> list[str]:
    """Environment variables the config names for keys that are not set: checked before any stage
    runs, so a harvest does not stop at the search stage after hours of work."""
    named = [getattr(cfg.search, n).api_key_env for n in cfg.search.active if n != "corpus"]
    llms = [
        *([cfg.filter.llm] if cfg.filter.method == "llm" else []),
        *([cfg.types.llm] if cfg.types.method == "llm" else []),
        *(cfg.attributes.llm if cfg.attributes.method == "llm" else []),
    ]
    named += [llm.api_key_env for llm in llms if llm is not None]
    return sorted({name for name in named if name and not os.environ.get(name)})


def _run(cfg: Config, workdir: Path, only: str | None = None, start: str | None = None) -> list[str]:
    """Record the resolved config beside the manifest (for `status`), then harvest."""
    missing = missing_keys(cfg)
    if missing:
        raise UserError(f"set the API key variable(s) the config names: {', '.join(missing)}")
    from kgclip.curate.stage import index_paths
    from kgclip.pipeline import harvest as run_harvest
    from kgclip.search.corpus import missing_corpus
    from kgclip.workdir import Workdir, atomic_write_bytes

    wd = Workdir(workdir)
    absent = [str(p) for p in index_paths(cfg, wd) if not p.is_file()]
    if absent:  # found now, not after hours of fetching
        raise UserError(
            f"no decontamination index at {', '.join(absent)} (build it with `kgclip decontam index`)"
        )
    no_corpus = missing_corpus(cfg, wd)
    if no_corpus:  # found now, not when the search stage comes to it
        raise UserError(no_corpus)
    wd.create()
    dumped = orjson.dumps(cfg.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    atomic_write_bytes(wd.path(RESOLVED_CONFIG), dumped)
    return run_harvest(cfg, wd, only=only, start=start)


def _workdir_config(workdir: Path, config: str | None) -> Config:
    if config is not None:
        return load(config)
    path = workdir / RESOLVED_CONFIG
    if not path.is_file():
        raise UserError(
            f"{workdir} is not a kgclip work directory (no {RESOLVED_CONFIG}); run `kgclip harvest` first"
        )
    from kgclip.config import parse

    return parse(orjson.loads(path.read_bytes()), source=str(path))


@app.command(cls=Command)
@friendly
def fetch(
    workdir: WorkdirArg,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="also retry URLs refused for good (404, too small, blocked, ...)"
        ),
    ] = False,
) -> None:
    """Run fetch (and curate) again with the config last run: URLs that failed for a passing reason
    (timeouts, server errors) are always retried."""
    from kgclip.fetch.ledger import FetchLedger
    from kgclip.fetch.stage import LEDGER

    cfg = _workdir_config(workdir, None)
    if retry_failed and (workdir / LEDGER).exists():
        ledger = FetchLedger(workdir / LEDGER, params="")
        try:
            console.print(f"fetch: {ledger.forget_unstored():,} earlier failures will be retried")
        finally:
            ledger.close()
    ran = _run(cfg, workdir, start="fetch")
    console.print(f"fetch: ran {', '.join(ran)}")


@app.command(cls=Command)
@friendly
def train(
    config: Annotated[
        str,
        typer.Argument(metavar="CONFIG", help="a config file or bundled config name; its [train] section"),
    ],
    workdir: WorkdirOpt,
    run: Annotated[
        str | None,
        typer.Option(
            "--run", metavar="NAME", help="run folder name under WORKDIR/runs (default: the model's)"
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run from its last checkpoint")] = (
        False
    ),
    data: Annotated[
        str | None,
        typer.Option(
            "--data", metavar="SHARDS", help="other WebDataset shards: a folder, a tar or a brace pattern"
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, metavar="N", help="stop after N optimiser steps")
    ] = None,
) -> None:
    """Train (or fine-tune) a CLIP model on the harvest's shards; writes WORKDIR/runs/RUN."""
    cfg = load(config)
    if steps is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": steps})})
    run_dir = _train(cfg, workdir, run or _run_name(cfg), resume=resume, data=data)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        console.print(f"train: done; run folder {run_dir}")


def _run_name(cfg: Config) -> str:
    model = cfg.train.model
    return Path(model).stem if model.endswith(".json") else model.replace("/", "-")


def _train(cfg: Config, workdir: Path, run: str, *, resume: bool = False, data: str | None = None) -> Path:
    try:
        from kgclip.train.loop import train as run_training
    except ImportError as exc:
        raise UserError(
            f"kgclip train needs torch and open_clip ({exc.name} is missing): run `bash scripts/setup.sh` "
            "or `pip install 'kgclip[train]'`"
        ) from None
    from kgclip.workdir import Workdir

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run) or run in (".", ".."):
        raise UserError(f"--run {run!r}: use letters, digits, '.', '_' and '-'")
    Workdir(workdir).create()
    return run_training(cfg, workdir / "runs" / run, workdir=workdir, data=data, resume=resume)


EVAL_NAMES = "class-name style(s): name, lemma, lemmas, common, scientific, taxonomic, scicom"
EVAL_PROMPTS = (
    "prompt set(s): default (the set's own, else openai_imagenet), set, none, openai_imagenet, "
    "simple_imagenet, inat, cub, a file"
)


@app.command("eval", cls=Command)
@friendly
def eval_(
    model_or_run: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="a run folder (WORKDIR/runs/NAME), a checkpoint file, or an open_clip pretrained tag",
        ),
    ],
    sets: Annotated[
        list[str],
        typer.Option(
            "--set",
            metavar="SET",
            help="an evaluation set: wds:PATH, harvest:WORKDIR, ovad:ROOT, ... (repeatable)",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="ARCH",
            help="the architecture of a checkpoint or tag: a bundled model, an open_clip name or a JSON file",
        ),
    ] = None,
    names: Annotated[list[str] | None, typer.Option("--names", metavar="STYLE", help=EVAL_NAMES)] = None,
    prompts: Annotated[
        list[str] | None, typer.Option("--prompts", metavar="PROMPTS", help=EVAL_PROMPTS)
    ] = None,
    ovad_prompts: Annotated[
        str,
        typer.Option(
            "--ovad-prompts", metavar="SET", help="OVAD's prompt set: none, a, the, photo or all (every one)"
        ),
    ] = "all",
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", "-w", metavar="WORKDIR", help="a harvest whose entities give class names"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", metavar="DIR", help="results folder (a run's: RUN/eval)")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", metavar="DIR", help="embedding cache: RUN/eval/cache or ~/.cache/kgclip/eval"
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, metavar="N", help="images embedded at once")
    ] = 128,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, metavar="N", help="image-decoding processes (default: CPUs - 1)"),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device", metavar="DEVICE", help="cuda, cuda:1 or cpu (default: cuda if there is one)"
        ),
    ] = None,
) -> None:
    """Zero-shot classification, retrieval and OVAD attribute mAP of a model; writes JSON shaped
    like CLIP_benchmark's and prints the tables."""
    try:
        from kgclip.eval.model import load_model
        from kgclip.eval.run import EvalOptions, default_workers, evaluate, folders
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "torchvision", "open_clip"):
            raise
        raise UserError(
            f"kgclip eval needs torch and open_clip ({exc.name} is missing): run `bash scripts/setup.sh`"
        ) from None
    from kgclip.eval.results import tables

    loaded = load_model(model_or_run, model, device)
    opts = EvalOptions(
        names=names or ("name",),
        prompts=prompts or ("default",),
        workdir=workdir,
        out=out,
        cache=cache,
        batch_size=batch_size,
        workers=default_workers() if workers is None else workers,
        ovad_prompts=ovad_prompts,
    )
    where = loaded.pretrained if loaded.step is None else f"{loaded.run} at step {loaded.step:,}"
    console.print(f"eval: {loaded.name} ({where}) on {loaded.device}")
    found = evaluate(loaded, sets, opts)
    for shown in tables(found):
        results.print(shown)
    console.print(f"eval: {len(found)} result file(s) in {folders(loaded, opts)[0]}")


@app.command(cls=Command)
@friendly
def sweep(
    sweep_file: Annotated[
        str,
        typer.Argument(metavar="SWEEP", help="a config file with a [sweep] table, or a bundled sweep (demo)"),
    ],
    workdir: WorkdirOpt,
    show_status: Annotated[
        bool, typer.Option("--status", help="show each cell (done, running, partial, missing); run nothing")
    ] = False,
) -> None:
    """Train and evaluate every cell of a grid over [train] keys; done cells are skipped, killed ones
    resume; then the sweep's table and plots (kgclip report WORKDIR/sweeps/NAME)."""
    from kgclip.sweep.grid import load_sweep
    from kgclip.sweep.run import SweepError, cell_state, run_sweep

    grid = load_sweep(sweep_file, workdir)
    try:
        states = [cell_state(c, workdir) for c in grid.cells] if show_status else run_sweep(grid, workdir)
    except SweepError as exc:
        raise UserError(str(exc)) from None
    table = Table(*grid.spec.axes, "state", "detail", "run", title=f"sweep {grid.spec.name}")
    colours = {"done": "green", "running": "cyan", "trained": "yellow", "partial": "magenta"}
    for st in states:
        values = [str(v) for v in st.cell.values.values()]
        table.add_row(*values, Text(st.state, style=colours.get(st.state, "red")), st.detail, st.cell.run)
    results.print(table)
    if not show_status:
        _sweep_report(grid, workdir)


def _sweep_report(grid: Any, workdir: Path) -> None:
    from kgclip.sweep.report import write_sweep_report

    folder = workdir / "sweeps" / grid.spec.name
    written = write_sweep_report(folder, [c.run for c in grid.cells])
    console.print(f"sweep {grid.spec.name}: report in {folder / 'report'} (open {written[0]})")


@app.command(cls=Command)
@friendly
def status(
    workdir: Annotated[Path, typer.Argument(metavar="WORKDIR", help="work directory of a harvest")],
    config: Annotated[
        str | None,
        typer.Option(
            "-c", "--config", metavar="CONFIG", help="compare with this config, not the one last run"
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON for scripts: the work directory, config and stages")
    ] = False,
) -> None:
    """Each stage: done, pending, partial, stale or missing, and why, with row counts and time taken."""
    from kgclip.pipeline import status as pipeline_status
    from kgclip.workdir import Workdir

    cfg = _workdir_config(workdir, config)
    states = pipeline_status(cfg, Workdir(workdir))
    if as_json:
        shown = {"workdir": str(workdir), "config": cfg.name, "stages": [st.as_dict() for st in states]}
        typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("stage", "state", "why", "rows", "seconds", title=f"{workdir} ({cfg.name})")
    colours = {"done": "green", "pending": "cyan", "partial": "magenta", "stale": "yellow", "missing": "red"}
    for st in states:
        rec = st.record
        table.add_row(
            st.stage.name,
            Text(st.state, style=colours[st.state]),
            Text(st.why),
            f"{rec.rows:,}" if rec else "",
            f"{rec.seconds:.1f}" if rec else "",
        )
    results.print(table)


@app.command(cls=Command)
@friendly
def demo(
    workdir: Annotated[
        Path, typer.Option("-w", "--workdir", metavar="WORKDIR", help="where the demo harvest goes")
    ] = Path("kgclip-demo"),
    keep: Annotated[
        bool, typer.Option("--keep", help="reuse an earlier demo: run only what is not up to date")
    ] = False,
    train_steps: Annotated[
        int | None,
        typer.Option(
            "--train-steps",
            min=0,
            metavar="N",
            help="training steps (default: the demo config's; 0: harvest only)",
        ),
    ] = None,
) -> None:
    """Harvest the embedded offline default (WordNet living things x Tux Paint stamps), train a tiny
    CLIP model on it, and evaluate it zero-shot on real animal photos it never saw."""
    from kgclip.workdir import Workdir

    wd = Workdir(workdir)
    start = None
    if wd.is_ours():
        made_for = _workdir_config(workdir, None).name if (workdir / RESOLVED_CONFIG).is_file() else None
        if made_for not in (None, "demo"):
            raise UserError(
                f"{workdir} is the work directory of the harvest {made_for!r}; the demo will not touch it. "
                "Choose another with -w"
            )
        if not keep:
            console.print(f"demo: {workdir} is an earlier demo; running every stage again (--keep reuses it)")
            start = "entities"
    elif workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise UserError(
            f"{workdir} exists and was not made by kgclip; kgclip never deletes or overwrites what it did "
            "not write. Choose another with -w"
        )
    cfg = load("demo")
    _run(cfg, workdir, start=start)
    _describe_shards(workdir)
    if train_steps != 0:
        _train_demo(cfg, workdir, train_steps, keep)


def _train_demo(cfg: Config, workdir: Path, steps: int | None, keep: bool) -> None:
    """A new run each time (`demo`, `demo-2`, ...), so no earlier run is overwritten; with --keep an
    unfinished demo run is resumed and a finished one kept."""
    try:
        import open_clip  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        console.print("demo: training skipped: torch and open_clip are not installed (bash scripts/setup.sh)")
        return
    if steps is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": steps})})
    photos = _demo_evalset(workdir)
    if photos is not None:  # validation during training gives the report its curve
        every = max(1, (cfg.train.max_steps or 1) // 3)
        checks = {"eval_sets": [f"wds:{photos}"], "eval_every_steps": every, "eval_names": ["lemmas"]}
        checks["eval_prompts"] = ["openai_imagenet"]
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=checks)})
    runs = workdir / "runs"
    name, n = "demo", 1
    while (runs / name).exists():
        meta = runs / name / "run.json"
        if keep and meta.is_file() and orjson.loads(meta.read_bytes()).get("finished"):
            console.print(f"\ndemo: {runs / name} is trained already (--keep)")
            _eval_demo(runs / name, photos)
            return
        if keep and any((runs / name / "checkpoints").glob("step_*.pt")):
            console.print(f"\ndemo: resuming the unfinished run {runs / name}")
            _eval_demo(_train(cfg, workdir, name, resume=True), photos)
            return
        n += 1
        name = f"demo-{n}"
    console.print(f"\nTraining {cfg.train.model} on the demo shards (CPU; --train-steps N sets the length):")
    run_dir = _train(cfg, workdir, name)
    console.print(
        f"Run folder: {run_dir} (log.csv, loss.png, checkpoints/; open_clip loads it as local-dir:{run_dir})"
    )
    _eval_demo(run_dir, photos)


DEMO_NAMES = ("name", "lemmas")  # the set's class names; WordNet's lemmas as an ensemble
DEMO_PROMPTS = ("none", "openai_imagenet")


def _demo_evalset(workdir: Path) -> Path | None:
    """GCompris' photos as a wds folder in the demo's workdir, built once; None without the package."""
    from kgclip.eval.gcompris import RCC_DIR, write_gcompris

    if not RCC_DIR.is_dir():
        console.print(f"\ndemo: evaluation skipped: no {RCC_DIR} (apt-get install gcompris-qt-data)")
        return None
    photos = workdir / "evalsets" / "gcompris"
    if not (photos / "test" / "nshards.txt").is_file():
        write_gcompris(photos)
    return photos


def _eval_demo(run_dir: Path, photos: Path | None) -> None:
    """Zero-shot on real photos the demo never trained on (GCompris' animals, disjoint from the Tux
    Paint corpus), with chance beside every number, then a report with plots."""
    from kgclip.eval.model import load_model
    from kgclip.eval.report import collect, write_report
    from kgclip.eval.results import table
    from kgclip.eval.run import EvalOptions, default_workers, evaluate
    from kgclip.eval.wds import read_wds

    if photos is None:
        return
    spec = f"wds:{photos}"
    console.print(f"\nEvaluating {run_dir.name} zero-shot on GCompris' animal photos ({photos}):")
    opts = EvalOptions(names=DEMO_NAMES, prompts=DEMO_PROMPTS, workers=min(1, default_workers()))
    found = evaluate(load_model(str(run_dir)), [spec], opts)
    console.print(table(found))
    results, ignored = collect([run_dir])
    written = write_report(results, run_dir / "report", read_wds(photos), top=6, ignored=ignored)
    console.print(
        f"Report: {written[0]} (plots beside it). Again, from the embedding cache: "
        f"kgclip eval {run_dir} --set {spec} --names lemmas --prompts openai_imagenet"
    )


def _describe_shards(root: Path) -> None:
    import pyarrow.parquet as pq

    samples = pq.read_table(root / "samples.parquet").to_pylist()
    shards = sorted({s["shard"] for s in samples})
    entities = {e for s in samples for e in s["entity_ids"]}
    console.print(
        f"\nDone. {len(samples):,} image-text samples for {len(entities):,} entities in "
        f"{len(shards)} WebDataset shards under {root / 'shards'}"
    )
    console.print(
        "Each sample is KEY.jpg, KEY.txt (default caption) and KEY.json (all texts by kind). Examples:"
    )
    for s in samples[:: max(1, len(samples) // 4)][:4]:
        console.print(f"  {s['shard']}/{s['key']}: {s['caption']!r}  queries: {len(s['query_ids'])}")
    console.print(f"Dataset card: {root / 'card' / 'README.md'}; inspect with: kgclip status {root}")


@app.command(cls=Command)
@friendly
def captions(
    workdir: WorkdirArg,
    samples: Annotated[
        int, typer.Option("--samples", min=1, metavar="N", help="how many images to show")
    ] = 20,
    epoch: Annotated[
        int, typer.Option("--epoch", min=0, metavar="N", help="the first epoch to draw for")
    ] = 0,
    draws: Annotated[
        int, typer.Option("--draws", min=1, metavar="N", help="captions per image: one per epoch")
    ] = 5,
    config: Annotated[
        str | None,
        typer.Option(
            "-c",
            "--config",
            metavar="CONFIG",
            help="draw with this config's [train.captions], not the last run's",
        ),
    ] = None,
) -> None:
    """Show the captions training pairs with the first images of the shards, epoch by epoch."""
    from kgclip.train.captions import CaptionSampler, caption_of, read_samples

    cfg = _workdir_config(workdir, config)
    shards = sorted((workdir / "shards").glob("*.tar"))
    if not shards:
        raise UserError(f"no shards under {workdir / 'shards'}; run `kgclip harvest` first")
    sampler = CaptionSampler(cfg.train.captions, cfg.seed)
    shown = 0
    for key, files in read_samples(shards):
        if shown == samples:
            break
        shown += 1
        for line in _texts_summary(sampler, key, files):
            typer.echo(line)
        for e in range(epoch, epoch + draws):
            cap = caption_of(sampler, files, e)
            if cap is None:
                typer.echo(f"  epoch {e:<3d} (none: the config leaves this image no text; training skips it)")
            else:
                typer.echo(f"  epoch {e:<3d} {cap.kind:<22s} {cap.text}")
    console.print(
        f"captions: {shown} images from {len(shards)} shards, epochs {epoch}-{epoch + draws - 1}, "
        f"seed {cfg.seed}, sources {cfg.train.captions.sources}"
    )


def _texts_summary(sampler: Any, key: str, files: dict[str, bytes]) -> list[str]:
    """What an image's texts are: alt texts and queries by kind, and each caption kind's chance."""
    from kgclip.train.captions import is_kgclip_meta

    try:
        meta = orjson.loads(files.get("json", b""))
    except orjson.JSONDecodeError:
        meta = None
    if not is_kgclip_meta(meta):
        text = files.get("txt", b"").decode("utf-8", errors="replace")
        return [f"{key}  plain sample, .txt caption {text!r}"]
    kinds = Counter(q["kind"] for q in meta["queries"])
    queries = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    first = f" (first: {meta['alt_texts'][0]!r})" if meta["alt_texts"] else ""
    examples = "; ".join(q["text"] for q in meta["queries"][:3])
    shares = sorted(sampler.kind_shares(meta).items(), key=lambda kv: -kv[1])
    return [
        f"{key}  alt texts: {len(meta['alt_texts'])}{first}; queries: {queries or 'none'} ({examples})",
        "  chances: " + (", ".join(f"{k} {v:.0%}" for k, v in shares) or "none"),
    ]


@app.command("export-eval", cls=Command)
@friendly
def export_eval(
    spec: Annotated[
        str,
        typer.Argument(
            metavar="SET", help="an evaluation set: wds:PATH, folder:PATH, imagenet:ROOT, cub:ROOT, ..."
        ),
    ],
    out: Annotated[
        Path, typer.Option("-o", "--out", metavar="DIR", help="the CLIP_benchmark wds folder to write")
    ],
    split: Annotated[
        str, typer.Option("--split", metavar="NAME", help="the split name to write it under")
    ] = "test",
) -> None:
    """Write an evaluation set as a CLIP_benchmark wds folder (with kgclip's class metadata)."""
    from kgclip.eval.open import open_set
    from kgclip.eval.wds import write_wds

    evalset = open_set(spec)
    count = write_wds(evalset, out, split)
    classes = f" of {len(evalset.classes):,} classes" if evalset.classes else ""
    console.print(f"wrote {count:,} images{classes} of {evalset.name} to {out / split}")
    for line in evalset.skipped[:20]:
        console.print(f"  left out: {line}")
    if len(evalset.skipped) > 20:
        console.print(f"  … and {len(evalset.skipped) - 20:,} more left out")
    console.print(
        f"CLIP_benchmark reads it as: --dataset wds/{evalset.name} --dataset_root {out} --split {split}"
    )


@corpus_app.command("index", cls=Command)
@friendly
def corpus_index(
    src: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCE", help="a folder of images with sidecar captions, Tux Paint's stamps, or a table"
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", metavar="FILE", help="the SQLite index to write")],
    importer: Annotated[
        str,
        typer.Option(
            metavar="IMPORTER", help="auto (guess from SOURCE), folder, table or tuxpaint (see above)"
        ),
    ] = "auto",
    skip_report: Annotated[
        Path | None,
        typer.Option("--report", metavar="FILE", help="list every skipped file and its reason in a CSV"),
    ] = None,
) -> None:
    """Build an SQLite full-text index over a local image-text collection, for [search.corpus] index.

    folder: every image (PNG, JPEG, WebP, GIF, BMP, TIFF, ICO, AVIF) with a sidecar NAME.txt beside it
    holding its caption; an optional NAME.json holds {"license": ..., "attribution": ..., "page_url": ...}.
    The folder path below SOURCE is the image's category (animals/birds).

    table: a parquet or CSV file with a location column (path, url, uri or image), a text column
    (text, caption or alt_text), and optional license, attribution, page_url and category columns.

    tuxpaint: Tux Paint's stamps (/usr/share/tuxpaint/stamps), each NAME.png with NAME.txt.

    Files that cannot be indexed are counted by reason (no caption, vector image, ...); --report lists them.
    """
    from kgclip.search.corpus import build_index, write_skip_report

    report = build_index(src, out, importer)
    console.print(
        f"indexed {report.items:,} items into {out} in {report.seconds:.1f}s (corpus id {report.corpus_id})"
    )
    for reason, count in sorted(report.skipped.items()):
        console.print(f"  skipped {count:,}: {reason}")
    if skip_report is not None:
        listed = write_skip_report(out, skip_report)
        console.print(f"  {listed:,} skipped files listed in {skip_report}")
    elif report.skipped:
        console.print("  (--report FILE lists them with their reasons)")


@decontam_app.command("index", cls=Command)
@friendly
def decontam_index(
    evalsets: Annotated[
        list[str],
        typer.Argument(
            metavar="SETS",
            help="evaluation image sets: folders (any layout) or WebDataset tars, as PATH or NAME=PATH",
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", metavar="FILE", help="the index to write (parquet)")],
    workers: Annotated[int, typer.Option(metavar="N", help="hashing processes; 0 = one per core")] = 0,
) -> None:
    """Hash evaluation images so that the curate stage can drop their copies from a harvest."""
    from kgclip.curate.decontam import build_index, parse_source

    report = build_index([parse_source(spec) for spec in evalsets], out, workers)
    console.print(
        f"indexed {report.images:,} evaluation images ({report.hashes:,} hashes) into {out} "
        f'in {report.seconds:.1f}s; use it with [curate] decontaminate = ["{out}"]'
    )
    for item in report.unreadable[:20]:
        console.print(f"  unreadable, not indexed: {item}")
    if len(report.unreadable) > 20:
        console.print(f"  … and {len(report.unreadable) - 20:,} more unreadable")


@evalset_app.command("gcompris", cls=Command)
@friendly
def evalset_gcompris(
    out: Annotated[
        Path, typer.Option("-o", "--out", metavar="DIR", help="the CLIP_benchmark wds folder to write")
    ],
    rcc_dir: Annotated[
        Path,
        typer.Option(
            "--rcc-dir", metavar="DIR", help="GCompris' Qt resource files (Debian: gcompris-qt-data)"
        ),
    ] = Path("/usr/share/gcompris-qt/rcc"),
    disjoint_from: Annotated[
        str | None,
        typer.Option(
            "--disjoint-from",
            metavar="CONFIG",
            help="a config whose [search.corpus] images must not be in the set",
        ),
    ] = None,
) -> None:
    """The real animal photos of GCompris, labelled with WordNet synsets, as a zero-shot set."""
    from kgclip.eval.gcompris import load_mapping, write_gcompris

    count = write_gcompris(out, rcc_dir)
    classes = len({p.wnid for p in load_mapping()})
    console.print(f"wrote {count} photos in {classes} classes to {out} (licences in {out}/LICENSES.md)")
    if disjoint_from is not None:
        _check_disjoint(out, disjoint_from)


def _check_disjoint(out: Path, config: str) -> None:
    from kgclip.eval.gcompris import corpus_images, disjointness
    from kgclip.fetch.images import ImageOptions

    cfg = load(config)
    corpus = cfg.search.corpus
    if corpus is None or corpus.source is None:
        raise UserError(f"{config}: no [search.corpus] source to compare with")
    images, skipped = corpus_images(corpus.source, corpus.importer)
    result = disjointness(out, images, cfg.curate.decontam_distance, ImageOptions.from_config(cfg.fetch))
    console.print(
        f"disjointness from {config}'s corpus {corpus.source}: {result.compared:,} images compared "
        f"(the importer skips {skipped:,}, the fetch stage rejects {len(result.rejected)}) with "
        f"{result.indexed} set images; {len(result.matches)} within {result.distance} bits "
        f"(the nearest pair is {result.nearest} bits apart)"
    )
    for corpus_image, set_image, bits in result.matches:
        console.print(f"  copy: {corpus_image} ~ {set_image} ({bits} bits)")
    if result.matches:
        raise typer.Exit(1)


@corpus_app.command("search", cls=Command)
@friendly
def corpus_search(
    index: Annotated[Path, typer.Argument(metavar="INDEX", help="a corpus index (`kgclip corpus index`)")],
    text: Annotated[str, typer.Argument(metavar="TEXT", help="what to search for, as a query would")],
    k: Annotated[int, typer.Option("-k", min=1, metavar="N", help="show at most N hits")] = 10,
    match: Annotated[
        str,
        typer.Option(
            "--match",
            metavar="MODE",
            help="where the words must be: subject (the caption's head noun phrase), subject_first or "
            "anywhere; as [search.corpus] match",
        ),
    ] = "subject",
    categories: Annotated[
        bool,
        typer.Option(
            "--categories", help="let folder categories match too ([search.corpus] match_categories)"
        ),
    ] = False,
) -> None:
    """Search a corpus index the way the search stage does; each hit shows what matched.

    Hits go to stdout; with none, a line on stderr says so and the exit code is 1.
    """
    from kgclip.search.corpus import MATCH_MODES, CorpusBackend
    from kgclip.tables import Query, QueryParams

    if match not in MATCH_MODES:
        raise UserError(f"--match must be one of {', '.join(MATCH_MODES)}")
    backend = CorpusBackend(index, match, categories)
    try:
        outcome = backend.search_now(Query("-", "entity", text, None, None, QueryParams()), k)
    finally:
        backend.close()
    if outcome.failure:
        raise UserError(outcome.failure)
    if not outcome.results:
        hint = "" if match == "anywhere" else "; --match anywhere looks in the whole caption"
        console.print(f"corpus search: nothing in {index} matches {text!r} (--match {match}{hint})")
        raise typer.Exit(1)
    for rank, found in enumerate(outcome.results, start=1):
        results.print(
            Text.assemble(f"{rank:3d}. {found.alt_text}  ", (found.url, "dim"), f"  {found.evidence}")
        )


@app.command(cls=Command)
@friendly
def report(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RESULTS",
            help="run folders (their eval/), results folders or JSON files; or a sweep: WORKDIR/sweeps/NAME",
        ),
    ],
    out: Annotated[
        Path, typer.Option("-o", "--out", metavar="DIR", help="where report.md, report.csv and the plots go")
    ] = Path("report"),
    evalset: Annotated[
        str | None,
        typer.Option(
            "--set",
            metavar="SET",
            help="an evaluation set (wds:PATH, ...): show its most confused class pairs",
        ),
    ] = None,
    top: Annotated[
        int, typer.Option("--top", min=1, metavar="N", help="confused pairs shown per result")
    ] = 8,
) -> None:
    """A table across runs, checkpoints and benchmarks (markdown and CSV), with plots; for a sweep,
    its cells x benchmarks and the metric against the data fraction (docs/sweep.md)."""
    from kgclip.eval.report import ReportError, collect, write_report
    from kgclip.eval.sets import EvalSetError

    if any((p / "cells").is_dir() for p in inputs):
        from kgclip.sweep.report import write_sweep_report

        if len(inputs) > 1:
            raise UserError("a sweep folder is reported on its own: kgclip report WORKDIR/sweeps/NAME")
        try:
            written = write_sweep_report(inputs[0], out=out)
        except ReportError as exc:
            raise UserError(str(exc)) from None
        console.print(f"report: sweep {inputs[0].name}; {len(written)} files in {out} (open {written[0]})")
        return
    try:
        results, ignored = collect(inputs)
        chosen = None
        if evalset is not None:
            from kgclip.eval.open import open_set

            chosen = open_set(evalset)
        written = write_report(results, out, chosen, top, ignored)
    except (ReportError, EvalSetError) as exc:
        raise UserError(str(exc)) from None
    console.print(f"report: {len(results)} results; {len(written)} files in {out} (open {written[0]})")


@app.command(cls=Command)
@friendly
def audit(
    workdir: WorkdirArg,
    sample: Annotated[
        int | None,
        typer.Option("--sample", min=1, metavar="N", help="draw this many (picture, entity) links to mark"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="the draw's seed")] = 0,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", metavar="FILE", help="the audit CSV to write (--sample)")
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", metavar="DIR", help="where the pictures go (default: OUT-STEM_images/)"),
    ] = None,
    exclude: Annotated[
        list[Path] | None,
        typer.Option("--exclude", metavar="FILE", help="an earlier audit CSV: do not draw its links again"),
    ] = None,
    score: Annotated[
        Path | None,
        typer.Option("--score", metavar="FILE", help="a marked audit CSV: report precision on WORKDIR"),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="also write the score as JSON")
    ] = None,
) -> None:
    """Draw (picture, entity) links for a person to mark correct or wrong, or score the marks."""
    from kgclip import audit as audit_mod

    if (sample is None) == (score is None):
        raise UserError("give either --sample N (with -o audit.csv) or --score audit.csv")
    if sample is not None:
        if out is None:
            raise UserError("--sample needs -o audit.csv")
        written, population = audit_mod.draw(workdir, sample, seed, out, exclude or [], images)
        console.print(
            f"audit: {written} of {population} links (seed {seed}) in {out}; mark each correct or wrong"
        )
        return
    assert score is not None
    result = audit_mod.score(score, audit_mod.link_ids(workdir))
    for line in audit_mod.describe(result):
        typer.echo(line)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))


@app.command(cls=Command)
@friendly
def view(
    workdir: Annotated[Path, typer.Argument(metavar="WORKDIR", help="work directory of a harvest")],
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="port to listen on")
    ] = 8765,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="address to bind; keep loopback unless you mean it")
    ] = "127.0.0.1",
) -> None:
    """Browse a harvest in a web browser: entities, pictures, texts, licences, rejections (read-only)."""
    import uvicorn

    from kgclip.view.app import create_app
    from kgclip.view.index import ViewError

    try:
        web = create_app(workdir)
    except ViewError as exc:
        raise UserError(str(exc)) from None
    console.print(f"view: http://{host}:{port}/ (Ctrl-C to stop)")
    uvicorn.run(web, host=host, port=port, log_level="warning")


@config_app.command("list", cls=Command)
def config_list() -> None:
    """Names of the bundled configs."""
    for name in builtin_names():
        typer.echo(name)


@config_app.command("show", cls=Command)
@friendly
def config_show(
    name: Annotated[str, typer.Argument(metavar="CONFIG", help="a bundled config's name, or a config file")],
    resolved: Annotated[
        bool,
        typer.Option(
            "--resolved",
            help="the whole config: `extends` applied, every default filled in, each key's meaning above it",
        ),
    ] = False,
) -> None:
    """Print a config, e.g. to start your own: `kgclip config show livingthings > my.toml`."""
    if not resolved:
        typer.echo(resolve(name).read_text(encoding="utf-8"), nl=False)
        return
    from kgclip.configdoc import resolved_toml

    typer.echo(resolved_toml(load(name), name), nl=False)


if __name__ == "__main__":
    app()
