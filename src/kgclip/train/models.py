"""Model creation: any open_clip model, a model JSON of the user's, or a bundled tiny config.

Models are built by open_clip itself, so a checkpoint written here is an open_clip checkpoint and
loads in stock open_clip. Bundled configs (`model_configs/*.json`) are registered with open_clip under
their file names; the run folder gets an `open_clip_config.json`, so stock open_clip can load a run
with `local-dir:` too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import torch

from kgclip.config import TrainConfig
from kgclip.train.errors import ModelError
from kgclip.train.loss import model_init_kwargs

BUNDLED = resources.files("kgclip.train") / "model_configs"


@dataclass
class Built:
    model: torch.nn.Module
    train_transform: Any
    eval_transform: Any
    tokenizer: Any
    name: str  # the open_clip name the model was created under
    model_cfg: dict[str, Any]


def bundled_names() -> list[str]:
    files = BUNDLED.iterdir()
    return sorted(p.name.removesuffix(".json") for p in files if p.name.endswith(".json"))


def register(model: str) -> str:
    """The open_clip name for `model`: bundled and JSON-file configs are registered first."""
    if model in bundled_names():
        open_clip.add_model_config(Path(str(BUNDLED / f"{model}.json")))
        return model
    path = Path(model)
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelError(f"model config {path}: no such file")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"model config {path}: not a readable JSON file ({exc})") from None
        if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise ModelError(f"model config {path}: needs embed_dim, vision_cfg and text_cfg")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise ModelError(
            f"unknown model {model!r}: use a bundled one ({', '.join(bundled_names())}), an open_clip "
            "model name (`python -c 'import open_clip; print(open_clip.list_models())'`) or a model JSON"
        )
    return model


def build(cfg: TrainConfig) -> Built:
    """The model with its train and eval transforms and tokenizer, from `cfg` (random init unless
    `pretrained` names a local checkpoint or a cached open_clip tag)."""
    name = register(cfg.model)
    pretrained = _pretrained(name, cfg.pretrained)
    extra = model_init_kwargs(cfg.loss)  # SigLIP's learnable bias and initial scale
    try:
        model, train_tf, eval_tf = open_clip.create_model_and_transforms(
            name,
            pretrained=pretrained,
            force_image_size=cfg.image_size,
            force_patch_dropout=cfg.patch_dropout or None,
            output_dict=True,
            **extra,
        )
    except RuntimeError as exc:
        raise ModelError(f"model {cfg.model}: {exc}") from None
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model_cfg = open_clip.get_model_config(name)
    if cfg.image_size:
        model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    return Built(model, train_tf, eval_tf, open_clip.get_tokenizer(name), name, model_cfg)


def _pretrained(name: str, pretrained: str | None) -> str | None:
    """A local file as it is; a tag only when its weights are already on disk (no download, ever)."""
    if pretrained is None:
        return None
    if Path(pretrained).is_file():
        return pretrained
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise ModelError(
            f"pretrained {pretrained!r}: no such file, and not a pretrained tag of {name}"
            + (f" (tags: {', '.join(tags)})" if tags else "")
        )
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    cached = _cached_weights(tag_cfg)
    if cached is None:
        raise ModelError(
            f"pretrained {name}/{pretrained}: its weights are not in the local cache and kgclip never "
            "downloads them; fetch them once with open_clip, or give a checkpoint file"
        )
    return cached


def _cached_weights(tag_cfg: dict[str, Any]) -> str | None:
    """The weights of a pretrained tag where open_clip's own download would have left them."""
    hf_hub = tag_cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hf_hub)
        for name in (filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors"):
            found = try_to_load_from_cache(repo_id, name)
            if isinstance(found, str):
                return found
        return None
    url = tag_cfg.get("url", "")
    cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    return str(cached) if url and cached.is_file() else None


def open_clip_config(built: Built) -> dict[str, Any]:
    """What `open_clip_config.json` holds, so `local-dir:RUN` rebuilds the model in stock open_clip."""
    pp = getattr(built.model.visual, "preprocess_cfg", {}) or {}
    return {"model_cfg": built.model_cfg, "preprocess_cfg": dict(pp)}
