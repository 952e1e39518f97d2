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
from kgclip.progress import console
from kgclip.workdir import StageRecord, Workdir


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
    """One step of a harvest. `external` fingerprints inputs that live outside the workdir."""

    name: str
    module: str
    sections: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    external: str | None = None

    def _attr(self, name: str) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), name)

    def run(self, ctx: StageContext) -> StageResult:
        return self._attr("run")(ctx)

    def external_fingerprint(self, config: Config, workdir: Workdir) -> str | None:
        return None if self.external is None else self._attr(self.external)(config, workdir)


STAGES: tuple[Stage, ...] = (
    Stage(
        "entities",
        "kgclip.kg.entities",
        ("entities",),
        (),
        ("entities.parquet", "rejects/entities.parquet", "entity_links.parquet"),
        external="source_fingerprint",
    ),
    Stage(
        "filter",
        "kgclip.text.filter",
        ("filter",),
        ("entities",),
        ("filter.parquet", "rejects/filter.parquet"),
    ),
    Stage("types", "kgclip.text.types", ("types",), ("entities", "filter"), ("types.parquet",)),
    Stage(
        "attributes",
        "kgclip.text.attributes",
        ("attributes",),
        ("entities", "filter", "types"),
        ("attributes.parquet",),
    ),
    Stage(
        "queries",
        "kgclip.text.queries",
        ("queries",),
        ("entities", "filter", "types", "attributes"),
        ("queries.parquet", "rejects/queries.parquet"),
    ),
    Stage(
        "search",
        "kgclip.search.stage",
        ("search",),
        ("queries",),
        ("hits.parquet", "rejects/search.parquet"),
        external="backend_fingerprint",
    ),
    Stage("fetch", "kgclip.fetch.stage", ("fetch",), ("search",), ("fetched.parquet",)),
    Stage(
        "curate",
        "kgclip.curate.stage",
        ("curate",),
        ("entities", "types", "queries", "search", "fetch"),
        ("samples.parquet", "rejected.parquet", "shards/sizes.json", "card/README.md"),
        external="decontam_fingerprint",
    ),
)


class PipelineError(RuntimeError):
    """A harvest request that cannot be carried out (unknown stage, missing input)."""


@dataclass
class StageState:
    stage: Stage
    state: str  # done / stale / missing
    why: str
    record: StageRecord | None


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
        return StageState(stage, "missing", "never run", None)
    digests = workdir.output_digests(stage.outputs)
    if digests is None:
        return StageState(stage, "missing", "an output file is gone", rec)
    if digests != rec.outputs:
        return StageState(stage, "stale", "outputs changed since the run", rec)
    if rec.config_hash != config.section_hash(*stage.sections):
        return StageState(stage, "stale", f"config [{', '.join(stage.sections)}] changed", rec)
    inputs = _current_inputs(stage, config, workdir, records)
    changed = [name for name, fp in inputs.items() if rec.inputs.get(name) != fp]
    if changed:
        return StageState(stage, "stale", f"inputs changed: {', '.join(changed)}", rec)
    left = rec.stats.get("retry_later", 0)
    if left:
        return StageState(stage, "stale", f"{left:,} requests left to retry (quota or failures)", rec)
    return StageState(stage, "done", "up to date", rec)


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
        missing = [
            name
            for name in stage.inputs
            if state_of(stage_by_name(name, stages), config, workdir, records).state != "done"
        ]
        if missing:
            raise PipelineError(f"{stage.name} needs {', '.join(missing)} first (run without --only)")
        _run_stage(stage, config, workdir, records)
        ran.append(stage.name)
    return ran


def _run_stage(stage: Stage, config: Config, workdir: Workdir, records: dict[str, StageRecord]) -> None:
    console.print(f"[bold]{stage.name}[/bold]: running", markup=True)
    workdir.drop_record(stage.name)
    began = time.monotonic()
    result = stage.run(StageContext(config, workdir))
    seconds = time.monotonic() - began
    # Taken after the run: a stage may create its outside input (the search stage builds its corpus).
    inputs = _current_inputs(stage, config, workdir, records)
    digests = workdir.output_digests(stage.outputs)
    if digests is None:
        raise PipelineError(f"stage {stage.name} finished without writing all of {stage.outputs}")
    record = StageRecord(
        config_hash=config.section_hash(*stage.sections),
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
