"""`kgclip report`: results JSONs in the agreed shape, written here, become a checkpoint x benchmark
table (markdown and CSV) with chance beside each number and best-over-prompts labelled, plus PNG
plots: curves against samples seen, per-rank bars, confused pairs with the set's own thumbnails."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kgclip.cli import app
from kgclip.eval.report import ReportError, collect, curves, write_report
from kgclip.eval.sets import CLASSIFICATION, ClassInfo, EvalSet, Item
from kgclip.eval.wds import write_wds

COLOURS = {"crow": (200, 20, 20), "raven": (20, 200, 20), "rook": (20, 20, 200)}


def result(dataset, acc1, *, run=None, step=None, seen=None, names="name", prompts="openai_imagenet",
           best=False, classes=200, model="kgclip-tiny", pretrained="w.pt", **extra):
    """A result in the agreed shape (issue13.md); acc5 and mean per-class recall derived from acc1."""
    metrics = {"acc1": acc1, "acc5": min(1.0, acc1 * 2), "mean_per_class_recall": acc1 * 0.9}
    return {
        "dataset": dataset, "model": model, "pretrained": pretrained, "task": "zeroshot_classification",
        "metrics": metrics, "language": "en",
        "kgclip": {
            "version": "0", "names": names, "prompts": prompts, "best_over_prompts": best, "images": 1000,
            "skipped": {"unreadable": 0}, "classes": classes,
            "chance": {"acc1": 1 / classes, "acc5": 5 / classes}, "fallback_names": 0, "run": run,
            "step": step, "samples_seen": seen, "set_fingerprint": "f", "model_digest": "d",
            **extra,
        },
    }


def put(folder, name, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))


@pytest.fixture
def inputs(tmp_path):
    run = tmp_path / "work/runs/tiny"
    (run / "eval").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    for step, acc in ((100, 0.05), (200, 0.125), (300, 0.25)):
        put(run / "eval" / f"step_{step:08d}", "cub.json",
            result("cub", acc, run=str(run), step=step, seen=step * 64))
    put(run / "eval" / "step_00000300", "cub_simple.json",
        result("cub", 0.2, run=str(run), step=300, seen=300 * 64, prompts="simple_imagenet"))
    put(run / "eval" / "step_00000300", "cub_best.json",
        result("cub", 0.25, run=str(run), step=300, seen=300 * 64, best=True))
    put(run / "eval" / "cache", "index.json", {"not": "a result"})
    ranks = {"genus": {"summed": {"acc1": 0.5}, "direct": {"acc1": 0.4}},
             "species": {"summed": {"acc1": 0.25}, "direct": {"acc1": 0.25}}}
    others = tmp_path / "others"
    put(others, "inat.json", result("inat2021", 0.25, model="ViT-B-32", pretrained="openai", classes=4,
                                   ranks=ranks))
    put(others, "cub.json", result("cub", 0.5, model="ViT-B-32", pretrained="openai"))
    (others / "notes.json").write_text("[1, 2]")
    return run, others


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_table_has_every_checkpoint_and_benchmark_with_chance_and_best_labelled(inputs, tmp_path):
    run, others = inputs
    results, ignored = collect([run, others])
    assert ignored == 1  # notes.json; the run's cache/ is not even read
    written = write_report(results, tmp_path / "out", ignored=ignored)
    table = rows(tmp_path / "out/report.csv")
    got = {(r["checkpoint"], r["dataset"], r["prompts"], r["best_over_prompts"]): r for r in table}
    assert len(table) == 7
    assert float(got[("tiny@200", "cub", "openai_imagenet", "False")]["acc1"]) == 0.125
    assert got[("tiny@200", "cub", "openai_imagenet", "False")]["samples_seen"] == "12800"
    assert float(got[("tiny@300", "cub", "simple_imagenet", "False")]["acc1"]) == 0.2
    assert float(got[("tiny@300", "cub", "openai_imagenet", "True")]["acc1"]) == 0.25
    assert float(got[("ViT-B-32:openai", "inat2021", "openai_imagenet", "False")]["chance_acc1"]) == 0.25
    assert float(got[("ViT-B-32:openai", "cub", "openai_imagenet", "False")]["chance_acc5"]) == 0.025

    md = (tmp_path / "out/report.md").read_text()
    assert "cub [name/best over prompts]: acc1 (chance 0.50)" in md
    assert "| tiny@300 | 19,200 |" in md and "25.00 (openai_imagenet)" in md  # the winner named in the cell
    assert "| tiny@300 | cub | name | best over prompts (openai_imagenet) |" in md
    assert "| ViT-B-32:openai | inat2021 [name/openai_imagenet] | genus | 50.00 | 40.00 |" in md
    assert "1 JSON file(s) in the inputs were not results" in md
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name.split("_")[0] for p in pngs} == {"curve", "ranks"}
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
            assert im.format == "PNG"
        assert f"]({png.name})" in md


def test_curve_has_a_point_per_step(inputs, tmp_path):
    run, others = inputs
    results, _ = collect([run, others])
    found = curves(results)
    prompt_sets = ("openai_imagenet", "simple_imagenet", "best over prompts")
    assert set(found) == {f"cub [name/{p}]" for p in prompt_sets}
    metric, series, chance = found["cub [name/openai_imagenet]"]
    assert (metric, chance) == ("acc1", 1 / 200)
    assert series == {"tiny": [(6400, 0.05), (12800, 0.125), (19200, 0.25)]}  # ViT-B-32 has no samples seen
    written = write_report(results, tmp_path / "out")
    assert sorted(p.name for p in written if p.name.startswith("curve_")) == [
        "curve_cub-name-best-over-prompts.png",
        "curve_cub-name-openai-imagenet.png",
        "curve_cub-name-simple-imagenet.png",
    ]


def test_duplicates_are_kept_once(inputs, tmp_path):
    run, _ = inputs
    put(run / "eval", "again.json", result("cub", 0.25, run=str(run), step=300, seen=300 * 64))
    results, _ = collect([run])
    same = [r for r in results if r.checkpoint == "tiny@300" and r.benchmark == "cub [name/openai_imagenet]"]
    assert len(same) == 1


def _evalset(unreadable=True):
    classes = [ClassInfo(n) for n in COLOURS]

    def image(colour):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
        return buf.getvalue()

    def items():
        if unreadable:  # the class's next image is shown instead
            yield Item("bad", lambda: b"not an image", label=0)
        for i, colour in enumerate(COLOURS.values()):
            yield Item(f"k{i}", lambda c=colour: image(c), label=i)

    return EvalSet("birds", CLASSIFICATION, classes, items, "fp", "wds:/birds")


def test_confused_pairs_show_the_sets_own_images(tmp_path):
    put(tmp_path / "res", "birds.json",
        result("birds", 0.3, classes=3, confused=[["crow", "raven", 7], ["rook", "crow", 2]]))
    results, _ = collect([tmp_path / "res"])
    written = write_report(results, tmp_path / "out", _evalset())
    confused = [p for p in written if p.name.startswith("confused_")]
    assert len(confused) == 1
    pixels = np.asarray(Image.open(confused[0]).convert("RGB")).reshape(-1, 3).astype(int)
    for name, colour in COLOURS.items():  # each thumbnail drawn: its flat colour covers many pixels
        near = (np.abs(pixels - np.array(colour)).sum(axis=1) < 30).sum()
        assert near > 500, name
    assert f"]({confused[0].name})" in (tmp_path / "out/report.md").read_text()


def test_cli_draws_confused_pairs_from_a_set_spec(tmp_path):
    write_wds(_evalset(unreadable=False), tmp_path / "birds")
    put(tmp_path / "res", "birds.json", result("birds", 0.3, classes=3, confused=[["crow", "raven", 7]]))
    out = tmp_path / "out"
    args = ["report", str(tmp_path / "res"), "-o", str(out), "--set", f"wds:{tmp_path / 'birds'}"]
    got = CliRunner().invoke(app, args, catch_exceptions=False)
    assert got.exit_code == 0, got.output
    assert len(list(out.glob("confused_*.png"))) == 1
    args[-1] = f"wds:{tmp_path / 'nowhere'}"
    bad = CliRunner().invoke(app, args, catch_exceptions=False)
    assert bad.exit_code == 2 and "nowhere" in bad.output


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ReportError, match="no such file or folder"):
        collect([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no results JSONs"):
        collect([tmp_path / "empty"])
    (tmp_path / "x.json").write_text('{"dataset": "cub"}')
    with pytest.raises(ReportError, match=r"x.json: not a results file"):
        collect([tmp_path / "x.json"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(ReportError, match="a run without an eval/ folder"):
        collect([run])


def test_cli_writes_the_report(inputs, tmp_path):
    run, others = inputs
    out = tmp_path / "cli"
    got = CliRunner().invoke(app, ["report", str(run), str(others), "-o", str(out)], catch_exceptions=False)
    assert got.exit_code == 0, got.output
    assert (out / "report.md").is_file() and len(rows(out / "report.csv")) == 7
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")], catch_exceptions=False)
    assert bad.exit_code == 2 and "no such file or folder" in bad.output
