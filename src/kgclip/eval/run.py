"""The evaluation runner: every set's task for one model, results written and returned.

Three tasks. Classification: each set's images are embedded once (or read from the cache); every
(name style, prompt set) then costs only its class texts and a matrix product, and with more than one
prompt set each (set, name style) also gets its best-over-prompts result, its own labelled file.
Retrieval (`harvest:`, a retrieval wds folder): the images' own texts, used raw, one result per set.
OVAD (`ovad:ROOT`, not an EvalSet): box-oracle attribute mAP with the model's towers as encoders.
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
from kgclip.eval import examples, results
from kgclip.eval.classtexts import ClassTexts, KGNames, class_texts
from kgclip.eval.embed import DEFAULT_CACHE, ImageEmbeddings, encode_pil, image_embeddings, text_embeddings
from kgclip.eval.metrics import chance, classification_metrics
from kgclip.eval.model import EvalModel
from kgclip.eval.open import open_set, resolve
from kgclip.eval.ovad import evaluate_ovad
from kgclip.eval.ranks import complete_ranks, rank_groups, rank_metrics, rank_view, topk_metrics
from kgclip.eval.retrieval import retrieval_chance, retrieval_recall
from kgclip.eval.sets import CLASSIFICATION, RETRIEVAL, EvalSet, EvalSetError
from kgclip.eval.zeroshot import classifier, probabilities, scores
from kgclip.progress import console


@dataclass
class EvalOptions:
    names: Sequence[str] = ("name",)
    prompts: Sequence[str] = ("default",)
    workdir: Path | None = None  # a harvest whose entities.parquet adds KG names
    out: Path | None = None  # results folder; a run's default is RUN/eval
    cache: Path | None = None  # embedding cache; a run's default is RUN/eval/cache
    batch_size: int = 128
    workers: int = 0
    ovad_prompts: str = "all"  # OVAD's own prompt sets (ovad.PROMPT_SETS); a spec's prompts= overrides it
    examples: int = 3  # mistaken images kept per confused pair (eval/examples.py); 0: none


OVAD_METRICS = ("mAP", "head", "medium", "tail")
RAW_TEXTS = ("texts", "none")  # a retrieval result's (names, prompts): the set's own texts, no templates


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
        kind, path, options = resolve(spec, prompts=opts.ovad_prompts)
        if kind == "ovad":
            found_here = [_ovad(m, path, options["prompts"], opts, cache)]
        else:
            found_here = evaluate_set(m, open_set(spec), kg, opts, cache, out)
        for found in found_here:
            results.write(found, out)
            done.append(found)
    return done


def evaluate_set(
    m: EvalModel, evalset: EvalSet, kg: KGNames, opts: EvalOptions, cache: Path, out: Path
) -> list[dict[str, Any]]:
    if evalset.task not in (CLASSIFICATION, RETRIEVAL):
        raise EvalSetError(f"{evalset.source}: a {evalset.task} set, which kgclip eval does not score")
    began = time.perf_counter()
    emb = image_embeddings(m, evalset, cache, batch_size=opts.batch_size, workers=opts.workers)
    if not emb.keys:
        why = f"all {len(emb.skipped)} images unreadable" if emb.skipped else "the split holds no images"
        raise EvalSetError(f"{evalset.source}: nothing to evaluate ({why})")
    embed_seconds = time.perf_counter() - began
    say = "read from the cache" if emb.cached else f"embedded at {emb.images_per_second:,.0f} images/s"
    skipped = f", {len(emb.skipped)} unreadable skipped" if emb.skipped else ""
    console.print(f"eval: {evalset.name}: {len(emb.keys):,} images {say}{skipped}")
    if evalset.task == RETRIEVAL:
        return [_retrieval(m, evalset, emb, cache, embed_seconds)]
    found: list[dict[str, Any]] = []
    names = [c.name for c in evalset.classes]
    for style in opts.names:
        per_prompt, picks = [], []
        for prompts in opts.prompts:
            t0 = time.perf_counter()
            texts = class_texts(evalset, style, prompts, kg)
            logits = scores(emb.features, classifier(m, texts.texts, cache))
            metrics = classification_metrics(logits, emb.labels, names)
            ranks = _ranks(m, evalset, emb, logits, style, prompts, kg, cache)
            seconds = embed_seconds + time.perf_counter() - t0
            per_prompt.append(_result(m, evalset, emb, texts, metrics, seconds, emb.cached))
            if ranks:
                per_prompt[-1]["kgclip"]["ranks"] = ranks
            if opts.examples:
                predicted = logits.argmax(axis=1)
                confused = metrics["confused"]
                picks.append(examples.pick(predicted, emb.labels, emb.keys, confused, names, opts.examples))
        if picks:
            wanted = {k for picked in picks for pair in picked for ks in pair.values() for k in ks}
            examples.attach(per_prompt, picks, examples.write(evalset, wanted, out / examples.FOLDER))
        found += per_prompt
        if len(per_prompt) > 1:
            found.append(results.best_over_prompts(per_prompt))
    return found


def _retrieval(
    m: EvalModel, evalset: EvalSet, emb: ImageEmbeddings, cache: Path, embed_seconds: float
) -> dict[str, Any]:
    """CLIP_benchmark's recall@k both ways, each image's texts used as they are (no templates)."""
    t0 = time.perf_counter()
    counts = [len(texts) for texts in emb.texts]
    flat = [text for texts in emb.texts for text in texts]
    if not flat:
        raise EvalSetError(f"{evalset.source}: a retrieval set whose images have no texts")
    text_image = np.repeat(np.arange(len(counts)), counts)
    sim = emb.features @ text_embeddings(m, flat, cache).T
    metrics = retrieval_recall(sim, text_image)
    seconds = embed_seconds + time.perf_counter() - t0
    extra = {
        "images": len(emb.keys),
        "texts": len(flat),
        "skipped": {"unreadable": len(emb.skipped)},
        "chance": retrieval_chance(counts),
        "set_source": evalset.source,
        "set_fingerprint": evalset.fingerprint,
        "embeddings_cached": emb.cached,
        "images_per_second": round(emb.images_per_second, 1),
    }
    return _shaped(m, evalset.name, RETRIEVAL, metrics, RAW_TEXTS, seconds, extra)


def _ovad(m: EvalModel, root: Path, prompts: str, opts: EvalOptions, cache: Path) -> dict[str, Any]:
    """OVAD's box-oracle mAP, the crops through the model's eval transform, the prompts its text tower."""
    t0 = time.perf_counter()
    found = evaluate_ovad(
        root,
        lambda crops: encode_pil(m, crops),
        lambda texts: text_embeddings(m, texts, cache),
        prompts=prompts,
        batch_size=opts.batch_size,
    )
    console.print(f"eval: ovad: {found['boxes']:,} boxes of {found['images']:,} images, prompts {prompts}")
    metrics = {k: found.pop(k) for k in OVAD_METRICS}
    found["set_source"] = f"ovad:{root}"
    return _shaped(m, "ovad", results.OVAD, metrics, ("synonyms", prompts), time.perf_counter() - t0, found)


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
    """A classification result: the headline metrics, and per-class recall and confusions to read it."""
    n_classes = len(evalset.classes)
    extra = {
        "images": len(emb.keys),
        "skipped": {"unreadable": len(emb.skipped)},
        "classes": n_classes,
        "chance": chance(n_classes),
        "fallback_names": texts.fallbacks,
        "set_source": evalset.source,
        "set_fingerprint": evalset.fingerprint,
        "embeddings_cached": cached,
        "images_per_second": round(emb.images_per_second, 1),
        "class_names": [c.name for c in evalset.classes],
        "class_images": np.bincount(emb.labels, minlength=n_classes).tolist(),
        "per_class_recall": metrics["per_class_recall"],
        "confused": metrics["confused"],
    }
    headline = {k: metrics[k] for k in results.HEADLINE}
    return _shaped(m, evalset.name, evalset.task, headline, (texts.style, texts.prompts), seconds, extra)


def _shaped(
    m: EvalModel,
    dataset: str,
    task: str,
    metrics: dict[str, Any],
    names_prompts: tuple[str, str],
    seconds: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """CLIP_benchmark's result object plus kgclip's fields (issue13.md's agreed shape), any task."""
    names, prompts = names_prompts
    model = {
        "run": str(m.run) if m.run is not None else None,
        "step": m.step,
        "samples_seen": m.samples_seen,
        "model_digest": m.digest,
        "seconds": round(seconds, 3),
    }
    return {
        "dataset": dataset,
        "model": m.name,
        "pretrained": m.pretrained,
        "task": task,
        "metrics": metrics,
        "language": results.LANGUAGE,
        "kgclip": {
            "version": __version__,
            "names": names,
            "prompts": prompts,
            "best_over_prompts": False,
            **extra,
            **model,
        },
    }
