"""The model under evaluation: a kgclip run, any open_clip checkpoint file, or a cached pretrained tag.

Whatever the source, the model is built by open_clip with its weights left out, then the weights are
loaded by open_clip's own `load_checkpoint` (which also converts third-party layouts), so a state
dict that belongs to another architecture is caught here and named, instead of surfacing as
open_clip's page of missing keys. The weights file's digest names the model in the embedding cache:
retraining or replacing a checkpoint can never serve stale embeddings.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import orjson
import torch

from kgclip.train import checkpoint
from kgclip.train.errors import ModelError
from kgclip.train.models import _pretrained, register
from kgclip.workdir import digest_of, file_digest

RUN_FILE = "run.json"
CONFIG_FILE = "open_clip_config.json"


@dataclass
class EvalModel:
    """A model ready to embed, with what the results and the cache need to know about it."""

    model: torch.nn.Module
    transform: Any  # the eval transform: PIL image -> tensor
    tokenizer: Any
    name: str  # the model as the user knows it ("kgclip-tiny", "ViT-B-32", a JSON's stem)
    pretrained: str  # the weights file, or the pretrained tag
    weights: Path
    digest: str  # of the weights file
    preprocess: str  # digest of the eval transform: other resizing means other embeddings
    device: torch.device
    run: Path | None = None
    step: int | None = None
    samples_seen: int | None = None

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp())


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(source: str, model: str | None = None, device: str | None = None) -> EvalModel:
    """`source` is a run folder, a checkpoint file (with `model`), or a pretrained tag (with `model`)."""
    dev = torch.device(device) if device else default_device()
    path = Path(source)
    run = _run_of(path)
    if run is not None:
        return _from_run(run, path if path.is_file() else None, model, dev)
    if path.is_dir():
        raise ModelError(f"{path}: a folder without {RUN_FILE}, so not a kgclip run folder")
    if model is None:
        what = "checkpoint file" if path.is_file() else "pretrained tag"
        raise ModelError(f"{source}: a {what} needs --model NAME (the architecture it was trained as)")
    name = register(model)
    if path.is_file():
        return _assemble(name, path, str(path), model, dev)
    weights = Path(str(_pretrained(name, source)))  # a cached tag's file, or ModelError: never downloads
    tag_cfg = open_clip.get_pretrained_cfg(name, source)
    return _assemble(name, weights, source, model, dev, preprocess=_tag_preprocess(tag_cfg))


def _run_of(path: Path) -> Path | None:
    """The run folder `path` is, or holds: the run itself, its final weights, or a step checkpoint."""
    if path.is_dir():
        return path if (path / RUN_FILE).is_file() else None
    if path.is_file() and path.name == checkpoint.WEIGHTS and (path.parent / RUN_FILE).is_file():
        return path.parent
    run = path.parent.parent
    in_run = path.parent.name == "checkpoints" and (run / RUN_FILE).is_file()
    return run if path.is_file() and checkpoint.STEP_FILE.match(path.name) and in_run else None


def _from_run(run: Path, weights: Path | None, model: str | None, dev: torch.device) -> EvalModel:
    meta = _read_json(run / RUN_FILE)
    if not (run / CONFIG_FILE).is_file():
        raise ModelError(f"{run / CONFIG_FILE}: missing; the run folder is incomplete")
    trained_as = str(meta.get("model", run.name))
    if model is not None and model != trained_as:
        raise ModelError(f"{run}: a run of {trained_as}; --model {model} does not apply (drop it)")
    weights, step = weights or _run_weights(run, meta), None
    if weights.name == checkpoint.WEIGHTS:
        step = meta.get("steps_done")
    elif match := checkpoint.STEP_FILE.match(weights.name):
        step = int(match.group(1))
    seen = step * int(meta["global_batch"]) if step is not None and "global_batch" in meta else None
    name = Path(trained_as).stem if trained_as.endswith(".json") else trained_as
    built = _assemble(f"local-dir:{run}", weights, str(weights), name, dev)
    built.run, built.step, built.samples_seen = run, step, seen
    return built


def _run_weights(run: Path, meta: dict[str, Any]) -> Path:
    """A finished run's final weights; an unfinished run's latest step checkpoint."""
    final = run / checkpoint.WEIGHTS
    if final.is_file() and meta.get("finished"):
        return final
    latest = checkpoint.latest(run / "checkpoints")
    if latest is None:
        raise ModelError(f"{run}: no weights yet ({checkpoint.WEIGHTS} or checkpoints/step_*.pt)")
    return latest


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a JSON object")
    return data


def _tag_preprocess(tag_cfg: dict[str, Any]) -> dict[str, Any]:
    """The tag's own normalisation and resizing, which open_clip applies when it loads a tag."""
    keys = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation"}
    keys["resize_mode"] = "image_resize_mode"
    return {arg: tag_cfg[k] for k, arg in keys.items() if k in tag_cfg}


def _assemble(
    arch: str,
    weights: Path,
    pretrained: str,
    display: str,
    dev: torch.device,
    preprocess: dict[str, Any] | None = None,
) -> EvalModel:
    try:
        with _quiet_open_clip():
            model, _, transform = open_clip.create_model_and_transforms(
                arch, load_weights=False, output_dict=True, **(preprocess or {})
            )
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        raise ModelError(f"model {display}: {exc}") from None
    _load_weights(model, weights, display)
    model.eval().to(dev)
    return EvalModel(
        model=model,
        transform=transform,
        tokenizer=open_clip.get_tokenizer(arch),
        name=display,
        pretrained=pretrained,
        weights=weights,
        digest=file_digest(weights),
        preprocess=digest_of(repr(transform)),
        device=dev,
    )


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip warns "initialized randomly" at every build without weights; ours come right after."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


def _load_weights(model: torch.nn.Module, weights: Path, display: str) -> None:
    """open_clip's loader, with a state dict for another architecture named as such."""
    try:
        open_clip.load_checkpoint(model, str(weights))
    except (RuntimeError, AssertionError) as exc:  # open_clip asserts on a resized positional embedding
        raise ModelError(
            f"{weights}: a checkpoint for another model than {display} ({_mismatch(model, weights, exc)}); "
            "give the model it was trained as with --model"
        ) from None
    except (ValueError, KeyError, EOFError, OSError, AttributeError, pickle.UnpicklingError) as exc:
        raise ModelError(f"{weights}: not a readable checkpoint ({exc})") from None


def _mismatch(model: torch.nn.Module, weights: Path, exc: BaseException) -> str:
    """The first tensor whose shape differs, or the first missing or extra one, in a few words."""
    try:
        theirs = open_clip.factory.load_state_dict(str(weights))
    except (RuntimeError, ValueError, KeyError, EOFError, OSError, pickle.UnpicklingError):
        return f"not a readable checkpoint: {str(exc).splitlines()[0][:200]}"
    ours = model.state_dict()
    for key, tensor in ours.items():
        if key in theirs and tuple(theirs[key].shape) != tuple(tensor.shape):
            return f"{key} is {list(theirs[key].shape)} in the checkpoint, {list(tensor.shape)} in the model"
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    if missing or extra:
        return f"{len(missing)} tensors missing ({missing[:1]}...), {len(extra)} unexpected ({extra[:1]}...)"
    return str(exc).splitlines()[0][:200]
