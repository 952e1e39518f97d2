"""`kgclip train` end to end on the demo shards with the bundled tiny model (torch; runs serially)."""

import csv
import io
import os
import socket
import subprocess
import sys
import tarfile

import open_clip
import orjson
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kgclip.cli import app
from kgclip.config import load
from kgclip.train import checkpoint
from kgclip.train.errors import TrainError
from kgclip.train.models import build, register
from resume import kill_when

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _config(tmp_path, **train):
    settings = {
        "batch_size": 16,
        "workers": 0,
        "lr": 1e-3,
        "warmup_epochs": 1,
        "shuffle_buffer": 64,
        "log_every_steps": 5,
        **train,
    }
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
    path = tmp_path / "t.toml"
    path.write_text('extends = "demo"\n[train]\n' + body)
    return path


def _toml(value):
    return str(value).lower() if isinstance(value, bool) else repr(value).replace("'", '"')


def _losses(run):
    with open(run / "log.csv", newline="") as fh:
        return [(int(r["step"]), float(r["loss"]), float(r["lr"])) for r in csv.DictReader(fh)]


@pytest.fixture
def work(demo_copy):
    """The demo's harvest, a private copy (it has no runs yet)."""
    return demo_copy


def test_a_tiny_model_learns_and_its_checkpoint_loads_in_stock_open_clip(work, tmp_path):
    cfg = _config(tmp_path, max_steps=120, batch_size=32, save_every_steps=60, tensorboard=True)
    result = invoke("train", str(cfg), "-w", str(work), "--run", "tiny")
    assert result.exit_code == 0, result.output
    run = work / "runs" / "tiny"
    assert "train: step 120/120" in result.output and "samples/s" in result.output and "ETA" in result.output
    losses = [loss for _, loss, _ in _losses(run)]
    assert len(losses) == 120
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.4  # it learns
    meta = orjson.loads((run / "run.json").read_bytes())
    assert meta["finished"] and meta["steps_done"] == 120 and meta["samples_seen"] == 3840
    assert meta["dataset"].startswith("samples.parquet:")
    assert (run / "loss.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000060.pt", "step_00000120.pt"]

    # kgclip's own embeddings from the last checkpoint ...
    train_cfg = load(cfg).train
    ours = build(train_cfg).model.eval()
    ours.load_state_dict(checkpoint.load(run / "checkpoints" / "step_00000120.pt")["state_dict"])
    # ... equal stock open_clip's, loading the same file by name and the run folder by local-dir:
    register(train_cfg.model)
    stock, _, preprocess = open_clip.create_model_and_transforms(
        "kgclip-tiny", pretrained=str(run / "checkpoints" / "step_00000120.pt")
    )
    folder, _, _ = open_clip.create_model_and_transforms(f"local-dir:{run}")
    tokenizer = open_clip.get_tokenizer("kgclip-tiny")
    image = preprocess(Image.new("RGB", (80, 60), (200, 120, 40))).unsqueeze(0)
    text = tokenizer(["a red fox", "an oak tree"])
    with torch.no_grad():
        for other in (stock.eval(), folder.eval()):
            assert torch.allclose(ours.encode_image(image), other.encode_image(image), atol=1e-5)
            assert torch.allclose(ours.encode_text(text), other.encode_text(text), atol=1e-5)


def test_sigkill_then_resume_continues_the_same_curve(work, tmp_path):
    # 17 steps per epoch and two loader workers: the resume starts at an odd batch of the workers'
    # round-robin, and the run crosses an epoch boundary after it
    cfg = _config(tmp_path, max_steps=24, save_every_steps=9, workers=2)
    reference = invoke("train", str(cfg), "-w", str(work), "--run", "straight")
    assert reference.exit_code == 0, reference.output

    cmd = [sys.executable, "-m", "kgclip.cli", "train", str(cfg), "-w", str(work), "--run", "killed"]
    log = work / "runs" / "killed" / "log.csv"
    kill_when(cmd, lambda: log.is_file() and len(log.read_text().splitlines()) > 11)  # step 11 or later
    kept = sorted(p.name for p in (work / "runs" / "killed" / "checkpoints").iterdir())
    assert kept == ["step_00000009.pt"]
    resumed = invoke("train", str(cfg), "-w", str(work), "--run", "killed", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "from step 9" in resumed.output

    straight, again = _losses(work / "runs" / "straight"), _losses(work / "runs" / "killed")
    assert [s for s, _, _ in again] == list(range(1, 25))  # no step lost or logged twice
    assert [lr for _, _, lr in again] == [lr for _, _, lr in straight]  # the schedule continues
    for (_, a, _), (_, b, _) in zip(straight, again, strict=True):
        assert abs(a - b) < 1e-4  # the same data order, weights, optimiser state and RNG


def test_accumulation_equals_the_larger_batch(work, tmp_path):
    big = _config(tmp_path, max_steps=3, batch_size=16)
    assert invoke("train", str(big), "-w", str(work), "--run", "big").exit_code == 0
    acc = tmp_path / "acc"
    acc.mkdir()
    small = _config(acc, max_steps=3, batch_size=8, accum_steps=2)
    assert invoke("train", str(small), "-w", str(work), "--run", "acc").exit_code == 0
    big_run, acc_run = _losses(work / "runs" / "big"), _losses(work / "runs" / "acc")
    for (_, a, _), (_, b, _) in zip(big_run, acc_run, strict=True):
        assert abs(a - b) < 1e-4


def test_two_processes_under_torchrun(work, tmp_path):
    cfg = _config(tmp_path, max_steps=3, batch_size=8, threads=1, loss="multi_positive")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", port, "-m", "kgclip.cli", "train", str(cfg), "-w", str(work),
    ]  # the run is named after the model: torchrun's own parser takes --run for its --run-path
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = orjson.loads((work / "runs" / "kgclip-tiny" / "run.json").read_bytes())
    assert meta["world_size"] == 2 and meta["global_batch"] == 16 and meta["finished"]
    assert len(_losses(work / "runs" / "kgclip-tiny")) == 3
    assert done.stderr.count("train: step 3/3") == 1  # rank 0 alone reports


def test_config_errors_are_one_clear_line(work, tmp_path):
    bad_model = _config(tmp_path, model="ViT-Nope-99")
    got = invoke("train", str(bad_model), "-w", str(work))
    assert got.exit_code == 2 and "unknown model 'ViT-Nope-99'" in got.output

    bad_weights = _config(tmp_path, pretrained=str(tmp_path / "missing.pt"))
    got = invoke("train", str(bad_weights), "-w", str(work))
    assert got.exit_code == 2 and "no such file, and not a pretrained tag of kgclip-tiny" in got.output

    uncached = _config(tmp_path, model="RN50", pretrained="openai")
    got = invoke("train", str(uncached), "-w", str(work))
    assert got.exit_code == 2 and "not in the local cache and kgclip never downloads them" in got.output

    empty = tmp_path / "empty-work"
    got = invoke("train", str(_config(tmp_path)), "-w", str(empty))
    assert got.exit_code == 2 and "no shards under" in got.output

    hollow = tmp_path / "hollow"
    hollow.mkdir()
    with tarfile.open(hollow / "000.tar", "w") as tar:
        info = tarfile.TarInfo("a.txt")
        tar.addfile(info)
    got = invoke("train", str(_config(tmp_path)), "-w", str(work), "--data", str(hollow))
    assert got.exit_code == 2 and "hold no image samples" in got.output

    existing = invoke("train", str(_config(tmp_path, max_steps=1)), "-w", str(work), "--run", "once")
    assert existing.exit_code == 0
    again = invoke("train", str(_config(tmp_path, max_steps=1)), "-w", str(work), "--run", "once")
    assert again.exit_code == 2 and "continue it with --resume" in again.output


@pytest.mark.parametrize(
    "options",
    [
        {"precision": "bf16"},
        {"precision": "fp16"},
        {"grad_checkpointing": True},
        {"patch_dropout": 0.5},
        {"image_size": 32},
        {"loss": "siglip"},
        {"loss": "multi_positive", "accum_steps": 2},
        {"compile": True},  # about 40 s of compiling on two cores
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_each_option_trains(work, tmp_path, options):
    cfg = _config(tmp_path, max_steps=2, batch_size=8, **options)
    result = invoke("train", str(cfg), "-w", str(work), "--run", "opt")
    assert result.exit_code == 0, result.output
    losses = [loss for _, loss, _ in _losses(work / "runs" / "opt")]
    assert len(losses) == 2 and all(0 < loss < 100 for loss in losses)
    if "image_size" in options:
        shipped = orjson.loads((work / "runs" / "opt" / "open_clip_config.json").read_bytes())
        assert shipped["model_cfg"]["vision_cfg"]["image_size"] == 32
    state = checkpoint.load(work / "runs" / "opt" / "checkpoints" / "step_00000002.pt")
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["state_dict"])  # open_clip's keys
    if options.get("loss") == "siglip":
        assert "logit_bias" in state["state_dict"]


def test_fine_tuning_starts_from_the_given_checkpoint(work, tmp_path):
    base = _config(tmp_path, max_steps=40, batch_size=32)
    assert invoke("train", str(base), "-w", str(work), "--run", "base").exit_code == 0
    trained = work / "runs" / "base" / "checkpoints" / "step_00000040.pt"
    tuned_dir = tmp_path / "tuned"
    tuned_dir.mkdir()
    tuned = _config(tuned_dir, max_steps=1, batch_size=32, pretrained=str(trained), warmup_epochs=0)
    assert invoke("train", str(tuned), "-w", str(work), "--run", "tuned").exit_code == 0
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    scratch = _config(scratch_dir, max_steps=1, batch_size=32, warmup_epochs=0)
    assert invoke("train", str(scratch), "-w", str(work), "--run", "scratch").exit_code == 0
    (_, from_checkpoint, _), (_, from_scratch, _) = (
        _losses(work / "runs" / "tuned")[0],
        _losses(work / "runs" / "scratch")[0],
    )
    assert from_checkpoint < from_scratch - 0.2  # the first step already sees the trained weights


def test_plain_webdataset_shards_train_on_their_txt_captions(work, tmp_path):
    """Shards of another tool (img2dataset writes KEY.jpg, KEY.txt and its own KEY.json)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for n in range(2):
        with tarfile.open(plain / f"{n:05d}.tar", "w") as tar:
            for i in range(12):
                image = io.BytesIO()
                Image.new("RGB", (96, 80), (20 * i, 100, 200 - 10 * i)).save(image, "JPEG")
                for ext, data in (
                    ("jpg", image.getvalue()),
                    ("txt", f"a photo number {i}".encode()),
                    ("json", orjson.dumps({"caption": "x", "url": f"http://e.org/{i}.jpg"})),
                ):
                    info = tarfile.TarInfo(f"{n:05d}{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    cfg = _config(tmp_path, max_steps=3, batch_size=8)
    result = invoke("train", str(cfg), "-w", str(work), "--run", "plain", "--data", str(plain))
    assert result.exit_code == 0, result.output
    meta = orjson.loads((work / "runs" / "plain" / "run.json").read_bytes())
    assert meta["samples"] == 24 and meta["dataset"].startswith("shards:") and meta["shards"] == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [("workers", 3), ("shuffle_buffer", 7), ("crop_ratio", (0.5, 2.0)), ("crop_scale", (0.9, 1.0))],
)
def test_resume_refuses_a_setting_that_changes_the_data_order(tmp_path, key, value):
    """Each of these changes which sample a step sees: the resumed curve would not continue."""
    from kgclip.train.loop import _same_run

    config = load("demo")
    (tmp_path / "config.json").write_bytes(orjson.dumps(config.model_dump(mode="json")))
    _same_run(tmp_path, config)  # the same settings resume
    other = config.model_copy(update={"train": config.train.model_copy(update={key: value})})
    with pytest.raises(TrainError, match=f"was started with other {key}"):
        _same_run(tmp_path, other)
    captions = config.train.captions.model_copy(update={"alt_text_p": 0.9})
    train = config.train.model_copy(update={"captions": captions})
    with pytest.raises(TrainError, match="other captions"):
        _same_run(tmp_path, config.model_copy(update={"train": train}))


def test_resume_refuses_other_settings(work, tmp_path):
    first = _config(tmp_path, max_steps=2, batch_size=8)
    assert invoke("train", str(first), "-w", str(work), "--run", "r").exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    changed = _config(other, max_steps=4, batch_size=16)
    got = invoke("train", str(changed), "-w", str(work), "--run", "r", "--resume")
    assert got.exit_code == 2 and "was started with other batch_size" in got.output
    longer = _config(other, max_steps=4, batch_size=8)  # a longer run is fine
    assert invoke("train", str(longer), "-w", str(work), "--run", "r", "--resume").exit_code == 0
    assert [s for s, _, _ in _losses(work / "runs" / "r")] == [1, 2, 3, 4]
