"""`kgclip eval` end to end on the two tasks beside classification: retrieval (a retrieval wds folder,
`harvest:WORKDIR`) and OVAD attribute mAP (`ovad:ROOT`), with a tiny random-init model on the CPU.

The numbers are checked against independent computations: the retrieval recalls against a plain
numpy ranking of embeddings computed by calling the model directly, the OVAD mAP against
`evaluate_ovad` called directly with encoders written out here.
"""

from __future__ import annotations

import io
import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from eval_fixtures import CLASSES, shape_png, tiny_checkpoint
from kgclip.cli import app
from kgclip.eval.harvest_set import open_harvest
from kgclip.eval.model import load_model
from kgclip.eval.ovad import evaluate_ovad
from kgclip.eval.retrieval import retrieval_chance
from kgclip.eval.run import EvalOptions, evaluate
from kgclip.eval.sets import RETRIEVAL, EvalSet, Item, fingerprint_of
from kgclip.eval.wds import write_wds
from kgclip.progress import console, results
from test_eval_harvest_set import split_run  # noqa: F401 (the harvest-with-a-split fixture)
from test_eval_ovad import make_ovad

runner = CliRunner()
CLIP_BENCHMARK_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language"}
RECALLS = {f"{way}_retrieval_recall@{k}" for way in ("image", "text") for k in (1, 5, 10)}
# Per image: 1 to 3 captions, so images differ in how many texts can find them.
CAPTION_FORMS = ("a photo of a {c}.", "{c}", "a {c} drawn on a speckled background")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.bin")


def captions_set(n: int = 16) -> EvalSet:
    rows = [(i % len(CLASSES), 7000 + i) for i in range(n)]

    def items():
        for i, (label, seed) in enumerate(rows):
            data = shape_png(label, seed)
            texts = tuple(f.format(c=CLASSES[label]) for f in CAPTION_FORMS[: 1 + i % 3])
            yield Item(f"cap{i:03d}", lambda data=data: data, texts=texts)

    return EvalSet(
        name="captions", task=RETRIEVAL, classes=(), items=items,
        fingerprint=fingerprint_of("captions", n), source="captions",
    )


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args], catch_exceptions=False)


def _direct_features(weights, images: list[bytes], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Image and text embeddings by calling the model itself, not the runner's embedding code."""
    m = load_model(str(weights), "kgclip-tiny", "cpu")
    with torch.no_grad():
        pixels = torch.stack([m.transform(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
        img = F.normalize(m.model.encode_image(pixels).float(), dim=-1).numpy()
        txt = F.normalize(m.model.encode_text(m.tokenizer(texts)).float(), dim=-1).numpy()
    return img, txt


def _plain_recalls(sim: np.ndarray, text_image: np.ndarray, slack: float = 0.0) -> dict[str, float]:
    """recall@k the slow, obvious way: count what ranks above the right answer. `slack` > 0 counts
    every competitor within it as ahead (the worst case of near-ties), < 0 none of them (the best)."""
    out = {}
    positives = [set(np.flatnonzero(text_image == i)) for i in range(sim.shape[0])]
    for k in (1, 5, 10):
        by_text = [
            int(np.sum(np.delete(sim[:, t], text_image[t]) > sim[text_image[t], t] - slack)) < k
            for t in range(sim.shape[1])
        ]
        by_image = []
        for i in range(sim.shape[0]):
            best = max(sim[i, j] for j in positives[i])
            others = [sim[i, j] for j in range(sim.shape[1]) if j not in positives[i]]
            by_image.append(int(np.sum(np.array(others) > best - slack)) < k)
        out[f"image_retrieval_recall@{k}"] = float(np.mean(by_text))
        out[f"text_retrieval_recall@{k}"] = float(np.mean(by_image))
    return out


def test_a_retrieval_wds_folder_gives_recalls_that_match_a_direct_computation(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(console, "width", 220)
    monkeypatch.setattr(results, "width", 220)  # the tables go to stdout
    evalset = captions_set()
    folder = tmp_path / "captions"
    write_wds(evalset, folder)
    out = tmp_path / "out"
    result = invoke(str(weights), "--model", "kgclip-tiny", "--set", f"wds:{folder}", "-o", str(out),
                    "--cache", str(tmp_path / "cache"), "--workers", "0", "--prompts", "set",
                    "--prompts", "none")
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.json")  # one result, whatever class-name options were given
    assert path.name == "captions_texts_none_kgclip-tiny_en_zeroshot_retrieval.json"
    row = json.loads(path.read_text())
    assert set(row) == CLIP_BENCHMARK_KEYS | {"kgclip"} and row["task"] == "zeroshot_retrieval"
    assert set(row["metrics"]) == RECALLS
    k = row["kgclip"]
    items = list(evalset.items())
    texts = [t for item in items for t in item.texts]
    text_image = np.repeat(np.arange(len(items)), [len(i.texts) for i in items])
    assert (k["images"], k["texts"], k["names"], k["prompts"]) == (16, len(texts), "texts", "none")
    assert k["chance"]["image_retrieval_recall@5"] == 5 / 16
    img, txt = _direct_features(weights, [i.read() for i in items], texts)
    sim = img @ txt.T
    # Several images share a caption ("a photo of a circle."): their texts tie exactly, and a random
    # model's near-ties may fall either way on another CPU. Each recall must lie between the worst
    # and the best case of the ties, and the range is narrow.
    low, high = _plain_recalls(sim, text_image, slack=1e-4), _plain_recalls(sim, text_image, slack=-1e-4)
    assert sum(high[k] - low[k] for k in high) < 1.0
    for key, value in row["metrics"].items():
        assert low[key] - 1e-12 <= value <= high[key] + 1e-12, (key, value, low[key], high[key])
    assert "zero-shot retrieval" in result.output and "(31.25%)" in result.output  # recall@5 beside chance


def test_retrieval_chance_is_the_probability_a_random_ranking_finds_the_answer():
    counts = [1, 2, 3, 0]
    chance = retrieval_chance(counts, ks=(1, 2, 6))
    n_texts = sum(counts)
    for k in (1, 2, 6):
        found = []
        for image in range(len(counts)):  # every k-subset of texts is equally likely on top
            mine = set(range(sum(counts[:image]), sum(counts[: image + 1])))
            subsets = list(itertools.combinations(range(n_texts), k))
            found.append(sum(bool(mine & set(s)) for s in subsets) / len(subsets))
        assert chance[f"text_retrieval_recall@{k}"] == pytest.approx(np.mean(found))
        assert chance[f"image_retrieval_recall@{k}"] == min(1.0, k / 4)


def test_the_harvest_split_is_evaluated_as_retrieval(weights, split_run, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    result = invoke(str(weights), "--model", "kgclip-tiny", "--set", f"harvest:{split_run}", "-o", str(out),
                    "--cache", str(tmp_path / "cache"), "--workers", "0")
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.json")
    row = json.loads(path.read_text())
    items = list(open_harvest(split_run).items())
    assert row["dataset"] == "harvest-demo" and row["task"] == "zeroshot_retrieval"
    assert row["kgclip"]["images"] + row["kgclip"]["skipped"]["unreadable"] == len(items)
    assert row["kgclip"]["texts"] == sum(len(i.texts) for i in items)
    assert row["kgclip"]["set_source"] == f"harvest:{split_run}"
    assert set(row["metrics"]) == RECALLS and all(0 <= v <= 1 for v in row["metrics"].values())


def test_ovad_through_kgclip_eval_matches_evaluate_ovad_called_directly(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(console, "width", 220)
    monkeypatch.setattr(results, "width", 220)  # the tables go to stdout
    root = make_ovad(tmp_path / "datasets")
    out = tmp_path / "out"
    result = invoke(str(weights), "--model", "kgclip-tiny", "--set", f"ovad:{root}", "-o", str(out),
                    "--cache", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.json")
    assert path.name == "ovad_synonyms_all_kgclip-tiny_en_ovad_attributes.json"
    row = json.loads(path.read_text())
    assert set(row) == CLIP_BENCHMARK_KEYS | {"kgclip"} and row["task"] == "ovad_attributes"
    assert list(row["metrics"]) == ["mAP", "head", "medium", "tail"]
    k = row["kgclip"]
    assert (k["boxes"], k["prompts"], k["set_source"]) == (6, "all", f"ovad:{root}")
    assert set(k["chance"]) == {"mAP", "head", "medium", "tail"} and "per_attribute" in k

    m = load_model(str(weights), "kgclip-tiny", "cpu")

    def images(crops):
        with torch.no_grad():
            return m.model.encode_image(torch.stack([m.transform(c) for c in crops])).numpy()

    def texts(prompts):
        with torch.no_grad():
            return m.model.encode_text(m.tokenizer(prompts)).numpy()

    direct = evaluate_ovad(root, images, texts, prompts="all")
    for metric in ("mAP", "head", "medium", "tail"):
        assert row["metrics"][metric] == pytest.approx(direct[metric], abs=1e-9)
    assert not math.isnan(row["metrics"]["mAP"])
    assert "OVAD attributes" in result.output


def test_ovad_prompts_come_from_the_option_and_a_spec_overrides_it(weights, tmp_path):
    root = make_ovad(tmp_path / "datasets")
    m = load_model(str(weights), "kgclip-tiny", "cpu")
    opts = EvalOptions(out=tmp_path / "out", cache=tmp_path / "cache", ovad_prompts="photo")
    by_option, by_spec = evaluate(m, [f"ovad:{root}", f"ovad:{root},prompts=none"], opts)
    assert (by_option["kgclip"]["prompts"], by_spec["kgclip"]["prompts"]) == ("photo", "none")
    assert by_spec["kgclip"]["texts"] < by_option["kgclip"]["texts"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == [
        "ovad_synonyms_none_kgclip-tiny_en_ovad_attributes.json",
        "ovad_synonyms_photo_kgclip-tiny_en_ovad_attributes.json",
    ]


def test_ovad_where_a_set_is_needed_is_a_clear_error(tmp_path):
    root = make_ovad(tmp_path / "datasets")
    result = runner.invoke(app, ["export-eval", f"ovad:{root}", "-o", str(tmp_path / "wds")])
    assert result.exit_code == 2 and not (tmp_path / "wds").exists()
    assert "`kgclip eval MODEL --set ovad:ROOT` scores" in " ".join(result.output.split())
