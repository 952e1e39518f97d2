"""Validation during training: `[train] eval_sets` evaluated every N steps and at the end, rows in
RUN/eval.csv and results JSONs in RUN/eval/step_*/, the same numbers `kgclip eval` gives for the
checkpoint of that step, and training unchanged by it (torch; runs serially)."""

import csv
import json

import pytest
from typer.testing import CliRunner

from eval_fixtures import write_shapes
from kgclip.cli import app
from kgclip.eval.model import load_model
from kgclip.eval.report import collect, curves
from kgclip.eval.run import EvalOptions, evaluate

STEPS, BATCH = 4, 8


def _config(tmp_path, name, **train):
    settings = {
        "batch_size": BATCH,
        "workers": 0,
        "max_steps": STEPS,
        "warmup_epochs": 1,
        "shuffle_buffer": 16,
        "save_every_steps": 2,
        "keep_checkpoints": 2,
        "patch_dropout": 0.5,  # active in training mode only: a model left in eval mode trains otherwise
        **train,
    }
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    path = tmp_path / f"{name}.toml"
    path.write_text('extends = "demo"\n[train]\n' + body)
    return path


def _train(cfg, work, run):
    got = CliRunner().invoke(app, ["train", str(cfg), "-w", str(work), "--run", run], catch_exceptions=False)
    assert got.exit_code == 0, got.output
    return got.output


def _losses(run):
    with open(run / "log.csv", newline="") as fh:
        return [r["loss"] for r in csv.DictReader(fh)]


@pytest.fixture
def work(demo_copy):
    """The demo's harvest, a private copy (it has no runs yet)."""
    return demo_copy


def test_validation_every_n_steps_matches_kgclip_eval_and_leaves_training_unchanged(work, tmp_path):
    shapes = write_shapes(tmp_path / "shapes", per_class=2)
    spec = f"wds:{shapes}"
    cfg = _config(tmp_path, "v", eval_sets=[spec], eval_every_steps=2, eval_prompts=["set", "none"])
    output = _train(cfg, work, "v")
    run = work / "runs" / "v"
    assert "eval: step 2: shapes [name/set]: acc1" in output
    assert "eval: step 4: shapes [name/best over prompts" in output

    with open(run / "eval.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["step"], r["samples_seen"]) for r in rows} == {("2", "16"), ("4", "32")}
    prompts = {r["prompts"] for r in rows}
    assert {"set", "none"} < prompts and any(p.startswith("best-over-prompts:") for p in prompts)
    assert {r["metric"] for r in rows} == {"acc1", "acc5", "mean_per_class_recall"}
    assert len(rows) == 2 * 3 * 3  # steps x (two prompt sets and the best) x metrics

    for step in (2, 4):
        folder = run / "eval" / f"step_{step:08d}"
        results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        assert len(results) == 3
        for r in results:
            k = r["kgclip"]
            assert (k["step"], k["samples_seen"], k["run"]) == (step, step * BATCH, str(run))
            label = f"best-over-prompts:{k['prompts']}" if k["best_over_prompts"] else k["prompts"]
            csv_acc1 = [
                float(x["value"])
                for x in rows
                if (x["step"], x["metric"], x["prompts"]) == (str(step), "acc1", label)
            ]
            assert csv_acc1 == [pytest.approx(r["metrics"]["acc1"])]
        # the live model gave what `kgclip eval` gives for the checkpoint saved at the same step
        saved = load_model(str(run / "checkpoints" / f"step_{step:08d}.pt"), device="cpu")
        again = evaluate(saved, [spec], EvalOptions(prompts=("set", "none"), out=tmp_path / f"again{step}"))
        live = {(r["kgclip"]["prompts"], r["kgclip"]["best_over_prompts"]): r for r in results}
        for r in again:
            mine = live[(r["kgclip"]["prompts"], r["kgclip"]["best_over_prompts"])]
            assert mine["metrics"] == pytest.approx(r["metrics"], abs=1e-6)
            recall = r["kgclip"]["per_class_recall"]
            assert mine["kgclip"]["per_class_recall"] == pytest.approx(recall, abs=1e-6)
    assert not list((run / "eval").glob(".cache-*"))  # the temporary embeddings are gone

    # `kgclip report RUN` reads them: one point per evaluation against samples seen
    acc1 = {int(r["step"]): float(r["value"]) for r in rows if (r["prompts"], r["metric"]) == ("set", "acc1")}
    _, series, _ = curves(collect([run])[0])["shapes [name/set]"]
    assert series == {"v": [(2 * BATCH, acc1[2]), (4 * BATCH, acc1[4])]}

    _train(_config(tmp_path, "plain"), work, "plain")
    assert _losses(run) == _losses(work / "runs" / "plain")  # validation changed nothing in training
    assert not (work / "runs" / "plain" / "eval.csv").exists()


def test_a_wrong_eval_set_fails_before_training(work, tmp_path):
    cfg = _config(tmp_path, "bad", eval_sets=[f"wds:{tmp_path / 'nowhere'}"], eval_every_steps=2)
    args = ["train", str(cfg), "-w", str(work), "--run", "bad"]
    got = CliRunner().invoke(app, args, catch_exceptions=False)
    assert got.exit_code == 2 and "nowhere" in got.output
    assert not (work / "runs" / "bad").exists()  # nothing trained, no run folder left to --resume
