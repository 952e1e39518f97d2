"""Validation during training: `[train] eval_sets` every `eval_every_steps` steps and at the end.

Rank 0 runs the evaluation runner (`kgclip.eval.run.evaluate`, what `kgclip eval` runs) in-process
on the model as it is at that step, switched to eval mode and back; the other ranks wait for it at
their next gradient exchange. Each evaluation writes its results JSONs to
`RUN/eval/step_XXXXXXXX/` (`kgclip report RUN` draws them against samples seen) and appends one
row per metric to `RUN/eval.csv`. Embeddings go to a temporary cache removed after each
evaluation: the weights change every step, so no later evaluation could reuse them.
"""

from __future__ import annotations

import csv
import math
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from kgclip.config import TrainConfig
from kgclip.eval.model import EvalModel
from kgclip.eval.open import open_set
from kgclip.eval.run import EvalOptions, evaluate
from kgclip.progress import console
from kgclip.train import checkpoint
from kgclip.train.models import Built
from kgclip.workdir import atomic_path, digest_of

EVAL_COLUMNS = ("step", "samples_seen", "set", "names", "prompts", "metric", "value")


class Validator:
    """Evaluates the training model on the configured sets when a step is due (rank 0 only)."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        workdir: Path | None,
        built: Built,
        device: torch.device,
        resume_at: int | None,
    ) -> None:
        self.cfg, self.run_dir, self.workdir, self.built, self.device = cfg, run_dir, workdir, built, device
        self.csv = run_dir / "eval.csv"
        _start_csv(self.csv, resume_at)

    @staticmethod
    def check_sets(cfg: TrainConfig) -> None:
        """Open every set once before the run folder is made: a wrong spec fails at once, not
        after hours of training, and leaves no run to --resume."""
        if Validator.wanted(cfg):
            for spec in cfg.eval_sets:
                open_set(spec)

    @staticmethod
    def wanted(cfg: TrainConfig) -> bool:
        return bool(cfg.eval_sets) and cfg.eval_every_steps > 0

    def due(self, step: int, total: int) -> bool:
        return step % self.cfg.eval_every_steps == 0 or step == total

    def run(self, model: torch.nn.Module, step: int, samples_seen: int) -> list[dict[str, Any]]:
        """Evaluate the model as it is now. Afterwards it is back in training mode and the random
        states are as they were (the evaluation's data loaders draw seeds), so training goes on
        exactly as without validation, and a resumed run as the uninterrupted one."""
        bare = checkpoint.bare(model)
        was_training = bare.training
        python_rng = random.getstate()
        devices = [self.device] if self.device.type == "cuda" else []
        bare.eval()
        try:
            (self.run_dir / "eval").mkdir(parents=True, exist_ok=True)
            with (
                torch.random.fork_rng(devices=devices),
                tempfile.TemporaryDirectory(prefix=".cache-", dir=self.run_dir / "eval") as cache,
            ):
                live = self._eval_model(bare, step, samples_seen)
                found = evaluate(live, self.cfg.eval_sets, self._opts(step, cache))
        finally:
            bare.train(was_training)
            random.setstate(python_rng)
        self._append(found, step, samples_seen)
        for r in found:
            console.print(_summary(r, step))
        return found

    def _opts(self, step: int, cache: str) -> EvalOptions:
        return EvalOptions(
            names=tuple(self.cfg.eval_names),
            prompts=tuple(self.cfg.eval_prompts),
            workdir=self.workdir,
            out=self.run_dir / "eval" / f"step_{step:08d}",
            cache=Path(cache),
            batch_size=self.cfg.batch_size,
            workers=self.cfg.workers,
            examples=0,  # a check during training: the final `kgclip eval` keeps example images
        )

    def _eval_model(self, model: torch.nn.Module, step: int, samples_seen: int) -> EvalModel:
        """The live model as the runner's EvalModel: named by run and step, since no weights file
        holds exactly these weights (a checkpoint is saved on its own cadence)."""
        tf = self.built.eval_transform
        name = Path(self.cfg.model).stem if self.cfg.model.endswith(".json") else self.cfg.model
        return EvalModel(
            model=model,
            transform=tf,
            tokenizer=self.built.tokenizer,
            name=name,
            pretrained=f"{self.run_dir}@step_{step:08d}",
            weights=self.run_dir,
            digest=digest_of("training", str(self.run_dir), str(step)),
            preprocess=digest_of(repr(tf)),
            device=self.device,
            run=self.run_dir,
            step=step,
            samples_seen=samples_seen,
        )

    def _append(self, found: list[dict[str, Any]], step: int, samples_seen: int) -> None:
        with open(self.csv, "a", newline="") as fh:
            writer = csv.writer(fh)
            for r in found:
                k = r["kgclip"]
                prompts = f"best-over-prompts:{k['prompts']}" if k.get("best_over_prompts") else k["prompts"]
                for metric, value in r["metrics"].items():
                    writer.writerow([step, samples_seen, r["dataset"], k["names"], prompts, metric, value])


def _start_csv(path: Path, resume_at: int | None) -> None:
    """A new run starts the file; a resumed one keeps the rows up to its checkpoint's step."""
    kept: list[list[str]] = []
    if resume_at is not None and path.is_file():
        with open(path, newline="") as fh:
            kept = [r for r in list(csv.reader(fh))[1:] if r and r[0].isdigit() and int(r[0]) <= resume_at]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(EVAL_COLUMNS)
        writer.writerows(kept)


def _summary(r: dict[str, Any], step: int) -> str:
    k, m = r["kgclip"], r["metrics"]
    prompts = f"best over prompts ({k['prompts']})" if k.get("best_over_prompts") else k["prompts"]
    chance = k.get("chance") or {}
    shown = ", ".join(
        f"{name} {_pct(v)}" + (f" (chance {_pct(chance[name])})" if name in chance else "")
        for name, v in m.items()
    )
    return f"eval: step {step:,}: {r['dataset']} [{k['names']}/{prompts}]: {shown}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}%"
