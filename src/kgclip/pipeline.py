"""The stage graph and the runner that decides which stages are done, stale or missing.

Stage logic lives in its own module and only sees a `StageContext`; this module is the
only place that knows the order of stages and what each one reads and writes.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from kgclip.config import Config
from kgclip.progress import console, report_progress
from kgclip.stageconfig import reads_digests, reads_hash, view
from kgclip.workdir import StageRecord, Workdir, digest_of


@dataclass
class StageResult:
    rows: int
    stats: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


@dataclass
class StageContext:
    config: Config
    workdir: Workdir

    def path(self, name: str) -> Path:
        return self.workdir.path(name)


@dataclass(frozen=True)
class Stage:
    """One step of a harvest.

    `reads` are the config keys (dotted paths) the stage may read: it runs against a view that
    refuses any other key, and their values are its config digest. `runs_with` are keys it may
    also read that change how it runs but not a byte of what it writes (where curate's Ray is),
    which are not in its digest. `external` names functions
    (`name` in the stage's module, or `module:name`) that fingerprint inputs living outside the
    workdir, and `outside` says in words what they are (`status`: "corpus index changed"). `check`
    names a function that finds damage to outputs too large to digest (parts).
    """

    name: str
    module: str
    reads: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    external: tuple[str, ...] = ()
    outside: str = "an input outside the work directory"
    check: str | None = None
    runs_with: tuple[str, ...] = ()

    def _attr(self, ref: str) -> Callable[..., Any]:
        module, _, name = ref.rpartition(":")
        return getattr(importlib.import_module(module or self.module), name)

    def config_for(self, config: Config) -> Config:
        return view(config, self.reads + self.runs_with, self.name)

    def config_hash(self, config: Config) -> str:
        return reads_hash(config, self.reads)

    def changed_keys(self, config: Config, record: StageRecord) -> list[str]:
        """The declared keys whose values differ from the run's (all of them for an older record)."""
        now = reads_digests(config, self.reads)
        return [path for path in self.reads if record.config_keys.get(path) != now[path]]

    def run(self, ctx: StageContext) -> StageResult:
        return self._attr("run")(ctx)

    def external_fingerprint(self, config: Config, workdir: Workdir) -> str | None:
        if not self.external:
            return None
        seen = self.config_for(config)
        got = [fp for fp in (self._attr(ref)(seen, workdir) for ref in self.external) if fp is not None]
        if not got:
            return None
        return got[0] if len(got) == 1 else digest_of(*got)

    def damage(self, config: Config, workdir: Workdir, record: StageRecord) -> str | None:
        if self.check is None:
            return None
        return self._attr(self.check)(self.config_for(config), workdir, record)


STAGES: tuple[Stage, ...] = (
    Stage(
        "entities",
        "kgclip.kg.entities",
        ("entities",),
        (),
        ("entities.parquet", "rejects/entities.parquet", "entity_links.parquet"),
        external=("source_fingerprint",),
        outside="source files (WordNet, Wikidata dump, bridge)",
    ),
    Stage(
        "filter",
        "kgclip.text.filter",
        ("filter", "attributes.category_roots", "entities.wordnet.path"),
        ("entities",),
        ("filter.parquet", "rejects/filter.parquet"),
        external=("kgclip.text.categories:harvest_wordnet_fingerprint",),
        outside="WordNet database",
    ),
    Stage("types", "kgclip.text.types", ("types", "seed"), ("entities", "filter"), ("types.parquet",)),
    Stage(
        "attributes",
        "kgclip.text.attributes",
        ("attributes", "entities.wordnet.path"),
        ("entities", "filter", "types"),
        ("attributes.parquet",),
        external=("wordnet_fingerprint",),
        outside="WordNet database",
    ),
    Stage(
        "queries",
        "kgclip.text.queries",
        ("queries", "entities.wordnet.path"),
        ("entities", "filter", "types", "attributes"),
        ("queries.parquet", "rejects/queries.parquet"),
        external=("kgclip.text.categories:harvest_wordnet_fingerprint",),
        outside="WordNet database",
    ),
    Stage(
        "search",
        "kgclip.search.stage",
        ("search", "ray", "entities.wordnet"),
        ("queries",),
        ("hits.parquet", "rejects/search.parquet"),
        external=("backend_fingerprint",),
        outside="corpus index",
    ),
    Stage(
        "fetch",
        "kgclip.fetch.stage",
        ("fetch", "ray", "search.corpus"),
        ("search",),
        ("fetched.parquet", "parts/index.json"),
        check="parts_damage",
    ),
    Stage(
        "curate",
        "kgclip.curate.stage",
        ("curate", "seed", "name"),
        ("entities", "types", "queries", "search", "fetch"),
        ("samples.parquet", "rejected.parquet", "shards/sizes.json", "val/sizes.json", "card/README.md"),
        external=("decontam_fingerprint",),
        outside="decontamination index",
        runs_with=("ray",),
    ),
)


class PipelineError(RuntimeError):
    """A harvest request that cannot be carried out (unknown stage, missing input)."""


@dataclass
class StageState:
    """done: up to date. pending: up to date with what could be had, some requests left to retry
    (downstream stages use it; a harvest re-runs it). partial: started and not finished (running
    now, or interrupted). stale: a setting, an input or an output changed. missing: never run."""

    stage: Stage
    state: str
    why: str
    record: StageRecord | None

    @property
    def usable(self) -> bool:
        return self.state in ("done", "pending")

    def as_dict(self) -> dict[str, object]:
        """What `status --json` prints and the viewer shows for one stage."""
        rec = self.record
        return {
            "stage": self.stage.name,
            "state": self.state,
            "why": self.why,
            "rows": rec.rows if rec else None,
            "seconds": rec.seconds if rec else None,
            "finished": rec.finished if rec else None,
        }


def stage_by_name(name: str, stages: tuple[Stage, ...] = STAGES) -> Stage:
    for stage in stages:
        if stage.name == name:
            return stage
    raise PipelineError(f"unknown stage {name!r}; stages are: {', '.join(s.name for s in stages)}")


def _current_inputs(stage: Stage, config: Config, workdir: Workdir, records: dict[str, StageRecord]) -> dict:
    inputs = {name: records[name].fingerprint if name in records else "" for name in stage.inputs}
    ext = stage.external_fingerprint(config, workdir)
    if ext is not None:
        inputs["external"] = ext
    return inputs


def state_of(stage: Stage, config: Config, workdir: Workdir, records: dict[str, StageRecord]) -> StageState:
    rec = records.get(stage.name)
    if rec is None:
        running = workdir.running().get(stage.name)
        if running is not None:
            return StageState(stage, "partial", describe_partial(running), None)
        return StageState(stage, "missing", "never run", None)
    digests = workdir.output_digests(stage.outputs)
    if digests is None:
        return StageState(stage, "missing", "an output file is gone", rec)
    if digests != rec.outputs:
        return StageState(stage, "stale", "outputs changed since the run", rec)
    if rec.config_hash != stage.config_hash(config):
        keys = ", ".join(stage.changed_keys(config, rec))
        return StageState(stage, "stale", f"config [{keys}] changed", rec)
    inputs = _current_inputs(stage, config, workdir, records)
    changed = [name for name, fp in inputs.items() if rec.inputs.get(name) != fp]
    if changed:
        return StageState(stage, "stale", describe_changed(stage, changed), rec)
    damage = stage.damage(config, workdir, rec)
    if damage:
        return StageState(stage, "stale", damage, rec)
    left = rec.stats.get("retry_later", 0)
    if left:
        return StageState(stage, "pending", rec.stats.get("pending") or f"{left:,} left to retry", rec)
    return StageState(stage, "done", "up to date", rec)


def describe_changed(stage: Stage, changed: list[str]) -> str:
    """`inputs changed: queries`; an input from outside the workdir by what it is: `corpus index changed`."""
    names = [name for name in changed if name != "external"]
    why = [f"inputs changed: {', '.join(names)}"] if names else []
    if "external" in changed:
        why.append(f"{stage.outside} changed")
    return "; ".join(why)


def describe_partial(running: dict[str, Any]) -> str:
    """What an unfinished run had done, from the progress it last reported."""
    alive = running.get("alive")
    how = f"running now (pid {running.get('pid')})" if alive else "stopped before the end; rerun to resume"
    label, done, total = running.get("label"), running.get("done"), running.get("total")
    if label is None:
        return how
    progress = f"{done:,}/{total:,}" if total else f"{done:,}"
    return f"{how}: {label} {progress}"


def status(config: Config, workdir: Workdir, stages: tuple[Stage, ...] = STAGES) -> list[StageState]:
    records = workdir.load_manifest()
    return [state_of(stage, config, workdir, records) for stage in stages]


def harvest(
    config: Config,
    workdir: Workdir,
    only: str | None = None,
    start: str | None = None,
    stages: tuple[Stage, ...] = STAGES,
) -> list[str]:
    """Run what is not up to date; returns the names of the stages that ran.

    `only` runs one stage (its inputs must exist); `start` forces that stage and all after it.
    A pending stage (requests left to retry) runs again, and the stages after it use what it has.
    """
    if only and start:
        raise PipelineError("--only and --from exclude each other")
    workdir.create()
    forced: set[str] = set()
    selected = list(stages)
    if only:
        stage = stage_by_name(only, stages)
        selected, forced = [stage], {stage.name}
    elif start:
        first = stages.index(stage_by_name(start, stages))
        forced = {s.name for s in stages[first:]}
    ran = []
    for stage in selected:
        records = workdir.load_manifest()
        st = state_of(stage, config, workdir, records)
        if st.state == "done" and stage.name not in forced:
            console.print(f"{stage.name}: up to date, skipped", style="dim")
            continue
        unusable = [
            name if up.state == "missing" else f"{name} ({up.state}: {up.why})"
            for name in stage.inputs
            if not (up := state_of(stage_by_name(name, stages), config, workdir, records)).usable
        ]
        if unusable:
            hint = " (--only runs one stage; run without it to bring them up to date)" if only else ""
            raise PipelineError(f"{stage.name} needs {', '.join(unusable)} first{hint}")
        _run_stage(stage, config, workdir, records)
        ran.append(stage.name)
    return ran


def _run_stage(stage: Stage, config: Config, workdir: Workdir, records: dict[str, StageRecord]) -> None:
    console.print(f"[bold]{stage.name}[/bold]: running", markup=True)
    workdir.drop_record(stage.name)
    workdir.mark_running(stage.name)
    began = time.monotonic()
    seen = stage.config_for(config)

    def progress(label: str, done: int, total: int | None) -> None:
        workdir.note_progress(stage.name, label, done, total)

    try:
        with report_progress(progress):
            result = stage.run(StageContext(seen, workdir))
    except BaseException:
        workdir.note_stopped(stage.name)
        raise
    seconds = time.monotonic() - began
    # Taken after the run: a stage may create its outside input (the search stage builds its corpus).
    inputs = _current_inputs(stage, config, workdir, records)
    digests = workdir.output_digests(stage.outputs)
    if digests is None:
        raise PipelineError(f"stage {stage.name} finished without writing all of {stage.outputs}")
    record = StageRecord(
        config_hash=stage.config_hash(config),
        config_keys=reads_digests(config, stage.reads),
        inputs=inputs,
        outputs=digests,
        rows=result.rows,
        seconds=round(seconds, 3),
        finished=time.time(),
        stats=result.stats,
    )
    workdir.save_record(stage.name, record)
    summary = f" — {result.summary}" if result.summary else ""
    console.print(
        f"[bold]{stage.name}[/bold]: {result.rows:,} rows in {seconds:.1f}s{escape(summary)}", markup=True
    )
