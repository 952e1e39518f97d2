"""A sweep file: a harvest config (it may `extends` one) plus a `[sweep]` table naming the axes.

Every axis is a `[train]` key, dotted for nested ones (`captions.sources`), with the values to try;
the grid is their product, each cell one training run and its evaluations. A cell is named by its
values (`data_fraction-0.5_sources-kg`) and identified by the digest of its resolved config and
evaluation settings: change either and the cell is another one, in a folder of its own, so no
result is ever overwritten by a different experiment's.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kgclip.config import Config, ConfigError, format_errors, load_raw, parse
from kgclip.workdir import digest_of

GRIDS = "kgclip.sweep.grids"
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SweepSpec(BaseModel):
    """The `[sweep]` table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME.pattern, description="the sweep's name; its runs: runs/NAME__CELL__DIGEST")
    axes: dict[str, list[Any]] = Field(min_length=1, description="[train] key (dotted) -> values to try")
    eval_sets: list[str] = Field(
        default_factory=list, description="sets every cell is evaluated on (`kgclip eval --set`); {workdir}"
    )
    eval_names: list[str] = Field(default_factory=lambda: ["name"])
    eval_prompts: list[str] = Field(default_factory=lambda: ["default"])
    executor: Literal["local", "ray"] = Field(default="local", description="cells in turn here, or Ray tasks")
    gpus_per_cell: float = Field(default=0, ge=0, description="GPUs each Ray task asks for")
    cpus_per_cell: float = Field(default=1, gt=0, description="CPUs each Ray task asks for")

    @field_validator("axes")
    @classmethod
    def _values(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in axes.items():
            if not values:
                raise ValueError(f"axis {key}: no values")
            if len({orjson.dumps(v) for v in values}) != len(values):
                raise ValueError(f"axis {key}: a value is listed twice")
        return axes


@dataclass(frozen=True)
class Cell:
    sweep: str
    values: dict[str, Any]  # axis -> value
    config: Config
    eval_sets: tuple[str, ...]
    eval_names: tuple[str, ...]
    eval_prompts: tuple[str, ...]
    digest: str

    @property
    def label(self) -> str:
        """The values, short: the last part of each axis name with its value."""
        return "_".join(f"{axis.rsplit('.', 1)[-1]}-{_slug(v)}" for axis, v in self.values.items())

    @property
    def run(self) -> str:
        return f"{self.sweep}__{self.label}__{self.digest[:8]}"


@dataclass(frozen=True)
class Sweep:
    spec: SweepSpec
    cells: list[Cell]
    source: Path


def resolve_sweep(ref: str | Path) -> Path:
    """A sweep file, or the name of a bundled one (`demo`: the paper's grid on the demo harvest)."""
    path = Path(ref)
    if path.is_file():
        return path
    bundled = resources.files(GRIDS) / f"{path.name.removesuffix('.toml')}.toml"
    if path.parent == Path(".") and bundled.is_file():
        return Path(str(bundled))
    files = resources.files(GRIDS).iterdir()
    names = sorted(p.name.removesuffix(".toml") for p in files if p.name.endswith(".toml"))
    raise ConfigError(f"no sweep file {ref!s} (bundled sweeps: {', '.join(names)})")


def load_sweep(ref: str | Path, workdir: Path) -> Sweep:
    """The sweep file's grid, every cell's config validated (an error names the cell and the key)."""
    path = resolve_sweep(ref)
    raw = load_raw(path)
    table = raw.pop("sweep", None)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: no [sweep] table (name, axes, ...): see docs/sweep.md")
    try:
        spec = SweepSpec.model_validate(table)
    except ValidationError as exc:  # the axes' own checks raise inside it too
        raise ConfigError(format_errors(exc, f"{path} [sweep]")) from None
    sets = tuple(s.replace("{workdir}", str(workdir)) for s in spec.eval_sets)
    cells = []
    for combo in itertools.product(*spec.axes.values()):
        values = dict(zip(spec.axes, combo, strict=True))
        data = orjson.loads(orjson.dumps(raw))
        train = data.setdefault("train", {})
        for axis, value in values.items():
            _set(train, axis.split("."), value)
        where = f"{path} [sweep] cell " + ", ".join(f"{k}={v}" for k, v in values.items())
        config = parse(data, source=where)
        resolved = {
            "config": config.model_dump(mode="json"),
            "eval": [sets, spec.eval_names, spec.eval_prompts],
        }
        digest = digest_of(orjson.dumps(resolved, option=orjson.OPT_SORT_KEYS).decode())
        cells.append(
            Cell(spec.name, values, config, sets, tuple(spec.eval_names), tuple(spec.eval_prompts), digest)
        )
    return Sweep(spec, cells, path)


def _set(table: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[sweep] axis {'.'.join(keys)}: {key} is not a table")
    table[keys[-1]] = value


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"

