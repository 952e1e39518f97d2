"""The evaluation runner: sets x name styles x prompt sets for one model, results written and returned.

Each set's images are embedded once (or read from the cache); every (name style, prompt set) then
costs only its class texts and a matrix product. With more than one prompt set, each (set, name
style) also gets its best-over-prompts result, written as its own, labelled file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kgclip import __version__
from kgclip.eval import results
from kgclip.eval.classtexts import ClassTexts, KGNames, class_texts
from kgclip.eval.embed import DEFAULT_CACHE, ImageEmbeddings, image_embeddings
from kgclip.eval.metrics import chance, classification_metrics
from kgclip.eval.model import EvalModel
from kgclip.eval.open import open_set
from kgclip.eval.ranks import complete_ranks, rank_groups, rank_metrics, rank_view, topk_metrics
from kgclip.eval.sets import CLASSIFICATION, EvalSet, EvalSetError
from kgclip.eval.zeroshot import classifier, probabilities, scores
from kgclip.progress import console


@dataclass
class EvalOptions:
    names: Sequence[str] = ("name",)
    prompts: Sequence[str] = ("set",)
    workdir: Path | None = None  # a harvest whose entities.parquet adds KG names
    out: Path | None = None  # results folder; a run's default is RUN/eval
    cache: Path | None = None  # embedding cache; a run's default is RUN/eval/cache
    batch_size: int = 128
    workers: int = 0


def default_workers() -> int:
    """Decoders for all CPUs but one (up to 8): the model runs in the main process meanwhile."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def folders(m: EvalModel, opts: EvalOptions) -> tuple[Path, Path]:
    """(results folder, cache folder): a run keeps both under RUN/eval; otherwise -o is needed."""
    out = opts.out or (m.run / "eval" if m.run is not None else None)
    if out is None:
        raise EvalSetError(f"{m.pretrained} is not a kgclip run: say where the results go with -o DIR")
    cache = opts.cache or (m.run / "eval" / "cache" if m.run is not None else DEFAULT_CACHE.expanduser())
    return out, cache


def evaluate(m: EvalModel, specs: Sequence[str], opts: EvalOptions) -> list[dict[str, Any]]:
    """Evaluate `m` on every set; returns the results (best-over-prompts ones included), written."""
    out, cache = folders(m, opts)
    kg = KGNames.load(opts.workdir)
    done: list[dict[str, Any]] = []
    for spec in specs:
        evalset = open_set(spec)
        for found in evaluate_set(m, evalset, kg, opts, cache):
            results.write(found, out)
            done.append(found)
    return done


def evaluate_set(
    m: EvalModel, evalset: EvalSet, kg: KGNames, opts: EvalOptions, cache: Path
) -> list[dict[str, Any]]:
    if evalset.task != CLASSIFICATION:
        raise EvalSetError(f"{evalset.source}: a {evalset.task} set; kgclip eval classifies (zero-shot)")
    began = time.perf_counter()
    emb = image_embeddings(m, evalset, cache, batch_size=opts.batch_size, workers=opts.workers)
    if not emb.keys:
        why = f"all {len(emb.skipped)} images unreadable" if emb.skipped else "the split holds no images"
        raise EvalSetError(f"{evalset.source}: nothing to evaluate ({why})")
    embed_seconds = time.perf_counter() - began
    say = "read from the cache" if emb.cached else f"embedded at {emb.images_per_second:,.0f} images/s"
    skipped = f", {len(emb.skipped)} unreadable skipped" if emb.skipped else ""
    console.print(f"eval: {evalset.name}: {len(emb.keys):,} images {say}{skipped}")
    found: list[dict[str, Any]] = []
    for style in opts.names:
        per_prompt = []
        for prompts in opts.prompts:
            t0 = time.perf_counter()
            texts = class_texts(evalset, style, prompts, kg)
            logits = scores(emb.features, classifier(m, texts.texts, cache))
            metrics = classification_metrics(logits, emb.labels, [c.name for c in evalset.classes])
            ranks = _ranks(m, evalset, emb, logits, style, prompts, kg, cache)
            seconds = embed_seconds + time.perf_counter() - t0
            per_prompt.append(_result(m, evalset, emb, texts, metrics, seconds, emb.cached))
            if ranks:
                per_prompt[-1]["kgclip"]["ranks"] = ranks
        found += per_prompt
        if len(per_prompt) > 1:
            found.append(results.best_over_prompts(per_prompt))
    return found


def _ranks(
    m: EvalModel,
    evalset: EvalSet,
    emb: ImageEmbeddings,
    logits: np.ndarray,
    style: str,
    prompts: str,
    kg: KGNames,
    cache: Path,
) -> dict[str, dict[str, dict[str, float]]]:
    """For a set with a taxonomy: each complete rank scored by summing the species probabilities per
    rank value, and by classifying the rank's names directly (the same images, no new embedding)."""
    ranks = complete_ranks(evalset.classes)
    if not ranks:
        return {}
    summed = rank_metrics(probabilities(logits, m.logit_scale), emb.labels, evalset.classes, ranks)
    out = {}
    for rank in ranks:
        view = rank_view(evalset, rank)  # its classes only: its images are ours, relabelled
        texts = class_texts(view, style, prompts, kg)
        direct = scores(emb.features, classifier(m, texts.texts, cache))
        labels = rank_groups(evalset.classes, rank).group_of[emb.labels]
        out[rank] = {"summed": summed[rank], "direct": topk_metrics(direct, labels)}
    return out


def _result(
    m: EvalModel,
    evalset: EvalSet,
    emb: ImageEmbeddings,
    texts: ClassTexts,
    metrics: dict[str, Any],
    seconds: float,
    cached: bool,
) -> dict[str, Any]:
    """CLIP_benchmark's result object plus kgclip's fields (issue13.md's agreed shape)."""
    n_classes = len(evalset.classes)
    return {
        "dataset": evalset.name,
        "model": m.name,
        "pretrained": m.pretrained,
        "task": evalset.task,
        "metrics": {k: metrics[k] for k in results.HEADLINE},
        "language": results.LANGUAGE,
        "kgclip": {
            "version": __version__,
            "names": texts.style,
            "prompts": texts.prompts,
            "best_over_prompts": False,
            "images": len(emb.keys),
            "skipped": {"unreadable": len(emb.skipped)},
            "classes": n_classes,
            "chance": chance(n_classes),
            "fallback_names": texts.fallbacks,
            "run": str(m.run) if m.run is not None else None,
            "step": m.step,
            "samples_seen": m.samples_seen,
            "set_source": evalset.source,
            "set_fingerprint": evalset.fingerprint,
            "model_digest": m.digest,
            "embeddings_cached": cached,
            "seconds": round(seconds, 3),
            "images_per_second": round(emb.images_per_second, 1),
            "per_class_recall": metrics["per_class_recall"],
            "confused": metrics["confused"],
        },
    }
