"""`kgclip eval` with the bundled tiny model on a synthetic shapes set: results, cache, model sources,
and the errors for bad input (torch; run under the shared torch lock)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile

import numpy as np
import orjson
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from eval_fixtures import CLASSES, TEMPLATES, add_corrupt, shapes_set, tiny_checkpoint, write_shapes
from kgclip.cli import app
from kgclip.eval.embed import image_embeddings
from kgclip.eval.metrics import classification_metrics
from kgclip.eval.model import load_model
from kgclip.eval.run import EvalOptions, evaluate
from kgclip.eval.sets import ClassInfo
from kgclip.eval.wds import read_wds, write_wds
from kgclip.eval.zeroshot import class_means, classifier
from kgclip.progress import console, results
from kgclip.train.errors import ModelError
from kgclip.train.models import BUNDLED

runner = CliRunner()
CLIP_BENCHMARK_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("sets") / "shapes")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.bin")


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args], catch_exceptions=False)


def test_a_checkpoint_file_gives_clip_benchmark_shaped_results_and_a_labelled_best(
    shapes, weights, tmp_path, monkeypatch
):
    monkeypatch.setattr(console, "width", 200)
    monkeypatch.setattr(results, "width", 200)  # the tables go to stdout
    out = tmp_path / "out"
    result = invoke(
        str(weights), "--model", "kgclip-tiny", "--set", f"wds:{shapes}", "--prompts", "set",
        "--prompts", "none", "-o", str(out), "--cache", str(tmp_path / "cache"), "--workers", "0",
    )
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == [
        "shapes_name_best-over-prompts_kgclip-tiny_en_zeroshot_classification.json",
        "shapes_name_none_kgclip-tiny_en_zeroshot_classification.json",
        "shapes_name_set_kgclip-tiny_en_zeroshot_classification.json",
    ]
    rows = {name: json.loads((out / name).read_text()) for name in files}
    plain = rows[files[2]]
    assert set(plain) == CLIP_BENCHMARK_KEYS | {"kgclip"}
    assert plain["task"] == "zeroshot_classification" and plain["pretrained"] == str(weights)
    k = plain["kgclip"]
    assert (k["images"], k["classes"], k["best_over_prompts"]) == (40, 8, False)
    assert k["skipped"] == {"unreadable": 0}
    assert k["chance"] == {"acc1": 1 / 8, "acc5": 5 / 8}
    assert len(k["per_class_recall"]) == 8 and k["model_digest"] and k["run"] is None
    best = rows[files[0]]
    assert best["kgclip"]["best_over_prompts"] is True and best["kgclip"]["prompts"] in ("set", "none")
    winner = rows[files[1] if best["kgclip"]["prompts"] == "none" else files[2]]
    assert best["metrics"] == winner["metrics"]
    assert "best over prompts" in result.output and "(12.50%)" in result.output  # acc1 beside chance
    # what the viewer reads: class names and counts, and the confused pairs' example images
    assert k["class_names"] == CLASSES and k["class_images"] == [5] * 8
    assert len(k["confused_examples"]) == len(k["confused"]) > 0
    label_of = {item.key: item.label for item in read_wds(shapes).items()}
    for (true, taken, count), shown in zip(k["confused"], k["confused_examples"], strict=True):
        assert 0 < len(shown["mistakes"]) <= min(3, count) and len(shown["taken_for"]) == 1
        assert {label_of[e["key"]] for e in shown["mistakes"]} == {CLASSES.index(true)}
        assert label_of[shown["taken_for"][0]["key"]] == CLASSES.index(taken)
        for e in shown["mistakes"] + shown["taken_for"]:
            with Image.open(out / "examples" / e["file"]) as im:
                assert im.format == "JPEG" and max(im.size) <= 256


def test_a_second_eval_of_the_same_pair_is_served_from_the_cache(shapes, weights, tmp_path):
    m = load_model(str(weights), "kgclip-tiny", "cpu")
    opts = EvalOptions(prompts=("set",), out=tmp_path / "out", cache=tmp_path / "cache")
    first = evaluate(m, [f"wds:{shapes}"], opts)

    def refuse(*_args, **_kwargs):
        raise AssertionError("the cache should have answered")

    m.model.encode_image = refuse
    m.model.encode_text = refuse
    again = evaluate(m, [f"wds:{shapes}"], opts)
    assert again[0]["metrics"] == first[0]["metrics"]
    assert (first[0]["kgclip"]["embeddings_cached"], again[0]["kgclip"]["embeddings_cached"]) == (False, True)
    other = evaluate(load_model(str(weights), "kgclip-tiny", "cpu"), [f"wds:{shapes}"], opts)
    assert other[0]["kgclip"]["embeddings_cached"]  # a fresh load of the same weights finds it too


def test_workers_keep_the_set_order_and_corrupt_images_are_skipped_and_counted(shapes, weights, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shapes, broken)
    add_corrupt(broken, 3)
    m = load_model(str(weights), "kgclip-tiny", "cpu")
    evalset = read_wds(broken)
    serial = image_embeddings(m, evalset, tmp_path / "c0", batch_size=8, workers=0)
    parallel = image_embeddings(m, evalset, tmp_path / "c2", batch_size=8, workers=2)
    expected = [item.key for item in evalset.items() if not item.key.startswith("bad")]
    assert serial.keys == parallel.keys == expected
    assert serial.skipped == parallel.skipped == ["bad0000", "bad0001", "bad0002"]
    np.testing.assert_allclose(serial.features, parallel.features, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(serial.features, axis=1), 1.0, atol=1e-5)
    result = invoke(
        str(weights), "--model", "kgclip-tiny", "--set", f"wds:{broken}", "-o", str(tmp_path / "o"),
        "--cache", str(tmp_path / "c0"),
    )
    assert result.exit_code == 0, result.output
    assert "3 unreadable skipped" in result.output
    (row,) = [json.loads(p.read_text()) for p in (tmp_path / "o").glob("*.json")]
    assert row["kgclip"]["skipped"] == {"unreadable": 3} and row["kgclip"]["images"] == 40


def test_a_checkpoint_for_another_model_is_named_not_a_traceback(shapes, weights, tmp_path):
    result = invoke(str(weights), "--model", "kgclip-tiny-a", "--set", f"wds:{shapes}", "-o", str(tmp_path))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"{weights}: a checkpoint for another model than kgclip-tiny-a" in text
    assert "in the checkpoint" in text and "--model" in text
    result = invoke(str(weights), "--set", f"wds:{shapes}", "-o", str(tmp_path))
    assert result.exit_code == 2 and "needs --model" in result.output
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        load_model(str(garbage), "kgclip-tiny", "cpu")


def test_an_empty_split_is_a_clear_error(weights, tmp_path):
    empty = tmp_path / "empty"
    (empty / "test").mkdir(parents=True)
    (empty / "classnames.txt").write_text("a\nb\n")
    (empty / "test" / "nshards.txt").write_text("1\n")
    tarfile.open(empty / "test" / "0.tar", "w").close()
    result = invoke(str(weights), "--model", "kgclip-tiny", "--set", f"wds:{empty}", "--prompts", "none",
                    "-o", str(tmp_path / "o"), "--cache", str(tmp_path / "c"))
    assert result.exit_code == 2 and "the split holds no images" in result.output


def _fake_run(tmp_path, weights):
    """A run folder as `kgclip train` leaves it midway: run.json, open_clip_config.json, two steps."""
    run = tmp_path / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    model_cfg = json.loads((BUNDLED / "kgclip-tiny.json").read_text())
    (run / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    meta = {"model": "kgclip-tiny", "global_batch": 16, "steps_done": 20, "samples_seen": 320}
    (run / "run.json").write_bytes(orjson.dumps(meta))
    state = torch.load(weights, weights_only=True)
    for step in (10, 20):
        torch.save({"step": step, "epoch": 0, "name": "r1", "state_dict": state}, run / "checkpoints"
                   / f"step_{step:08d}.pt")
    return run


def test_a_run_folder_evaluates_its_latest_checkpoint_into_the_run(shapes, weights, tmp_path):
    run = _fake_run(tmp_path, weights)
    result = invoke(str(run), "--set", f"wds:{shapes}", "--prompts", "none")
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(p.read_text()) for p in (run / "eval").glob("*.json")]
    k = row["kgclip"]
    assert (k["run"], k["step"], k["samples_seen"]) == (str(run), 20, 320)
    assert row["model"] == "kgclip-tiny" and row["pretrained"].endswith("step_00000020.pt")
    assert list((run / "eval" / "cache" / "images").glob("*.npy"))
    earlier = load_model(str(run / "checkpoints" / "step_00000010.pt"), None, "cpu")
    assert (earlier.run, earlier.step, earlier.samples_seen) == (run, 10, 160)
    with pytest.raises(ModelError, match="a run of kgclip-tiny; --model kgclip-tiny-a does not apply"):
        load_model(str(run), "kgclip-tiny-a", "cpu")


def test_the_classifier_averages_normalised_text_embeddings(weights, tmp_path):
    # by hand: unit rows (1, 0) and (0, 1) average to (0.5, 0.5), which normalises to (0.7071, 0.7071)
    means = class_means(np.array([[1, 0], [0, 1], [0, 3]], dtype=np.float32), [2, 1])
    np.testing.assert_allclose(means, [[2**-0.5, 2**-0.5], [0, 1]], atol=1e-6)
    m = load_model(str(weights), "kgclip-tiny", "cpu")
    texts = [[f"a photo of a {c}.", f"{c}"] for c in CLASSES[:3]]
    got = classifier(m, texts, tmp_path)
    with torch.no_grad():
        for c, per in enumerate(texts):
            e = torch.nn.functional.normalize(m.model.encode_text(m.tokenizer(per)), dim=-1).mean(0)
            np.testing.assert_allclose(got[c], (e / e.norm()).numpy(), atol=1e-5)


def test_a_set_with_a_taxonomy_gets_summed_and_direct_rank_accuracy(weights, tmp_path):
    base = shapes_set(per_class=3)
    classes = [ClassInfo(c, taxonomy={"genus": c.split()[0], "species": c}) for c in CLASSES]
    write_wds(dataclasses.replace(base, classes=classes), tmp_path / "taxa")
    m = load_model(str(weights), "kgclip-tiny", "cpu")
    opts = EvalOptions(prompts=("set",), out=tmp_path / "out", cache=tmp_path / "cache")
    (row,) = evaluate(m, [f"wds:{tmp_path / 'taxa'}"], opts)
    ranks = row["kgclip"]["ranks"]
    assert set(ranks) == {"genus", "species"}
    # direct: the four colour names classified on the same images, computed here independently
    emb = image_embeddings(m, read_wds(tmp_path / "taxa"), tmp_path / "cache")
    colours = sorted({c.split()[0] for c in CLASSES})
    weights_ = classifier(m, [[t.replace("{c}", c) for t in TEMPLATES] for c in colours], tmp_path / "c2")
    colour_of = np.array([colours.index(c.split()[0]) for c in CLASSES])
    direct = classification_metrics(100 * emb.features @ weights_.T, colour_of[emb.labels], colours)
    assert ranks["genus"]["direct"]["acc1"] == pytest.approx(direct["acc1"])
    assert ranks["genus"]["direct"]["mean_per_class_recall"] == pytest.approx(direct["mean_per_class_recall"])
    # summed: the species probabilities at the model's temperature, added up per colour
    logits = 100 * emb.features @ classifier(m, [[t.replace("{c}", c) for t in TEMPLATES] for c in CLASSES],
                                             tmp_path / "c3").T
    p = np.exp(m.logit_scale / 100 * (logits - logits.max(axis=1, keepdims=True)))
    p /= p.sum(axis=1, keepdims=True)
    per_colour = np.stack([p[:, colour_of == i].sum(axis=1) for i in range(len(colours))], axis=1)
    hits = per_colour.argmax(axis=1) == colour_of[emb.labels]
    assert ranks["genus"]["summed"]["acc1"] == pytest.approx(hits.mean())
    assert ranks["species"]["summed"]["acc1"] == pytest.approx(row["metrics"]["acc1"])


def test_on_the_cpu_the_model_leaves_a_core_to_each_decoding_worker(monkeypatch):
    from kgclip.eval import embed

    monkeypatch.setattr(embed.os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with embed._threads_beside(1, torch.device("cpu")):
            assert torch.get_num_threads() == 3
        with embed._threads_beside(0, torch.device("cpu")):
            assert torch.get_num_threads() == 4  # no workers: every core computes
        with embed._threads_beside(6, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 4  # given back
    finally:
        torch.set_num_threads(before)
