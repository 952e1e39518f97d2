"""Checkpoints in open_clip's layout, written atomically, the last K kept.

A checkpoint is what open_clip_train saves (`epoch`, `name`, `state_dict`, `optimizer`, and
`scaler` under fp16), so `open_clip.create_model_and_transforms(model, pretrained=PATH)` loads it
unchanged; kgclip adds `step`, the RNG states and its version, which open_clip ignores. Only plain
tensors, numbers and strings are stored, so `torch.load(weights_only=True)` (open_clip's default)
reads them.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import torch

from kgclip import __version__
from kgclip.workdir import atomic_path

STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")
WEIGHTS = "open_clip_pytorch_model.bin"  # the final weights, found by open_clip's `local-dir:`


def bare(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP and torch.compile wrappers: its state_dict keys are open_clip's."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save(
    folder: Path,
    *,
    step: int,
    epoch: int,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    keep: int,
) -> Path:
    state: dict[str, Any] = {
        "epoch": epoch,
        "step": step,
        "name": name,
        "state_dict": bare(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_python": list(random.getstate()[1]),
        "kgclip_version": __version__,
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    path = folder / f"step_{step:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in sorted(_steps(folder))[:-keep]:
        (folder / f"step_{old:08d}.pt").unlink()
    return path


def latest(folder: Path) -> Path | None:
    found = sorted(_steps(folder))
    return folder / f"step_{found[-1]:08d}.pt" if found else None


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng_torch"])
    random.setstate((3, (*state["rng_python"],), None))


def save_weights(folder: Path, model: torch.nn.Module) -> Path:
    path = folder / WEIGHTS
    with atomic_path(path) as tmp:
        torch.save(bare(model).state_dict(), tmp)
    return path


def _steps(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return [int(m.group(1)) for p in folder.iterdir() if (m := STEP_FILE.match(p.name))]
