"""`kgclip eval` against `clip_benchmark eval` on the same model, wds folder, batch and workers.

Both classify the same CLIP_benchmark wds folder (synthetic photos: coloured shapes on noisy
backgrounds, 320x240 JPEG, 8 classes, 3 templates) with the same checkpoint (a bundled model trained
briefly on other such photos, saved as an open_clip `local-dir:` folder), batch size and
decoding-worker count, one tool after the other (never two torch processes at once), each in a
fresh process with a fresh embedding cache (kgclip is timed computing, not reading its
cache). CPU: both in fp32
(CLIP_benchmark `--no_amp`); CUDA: both under autocast (kgclip bf16, CLIP_benchmark its default).

Printed: the conditions, per round each tool's wall time (start-up included) and images/s, the
medians, the ratio kgclip / CLIP_benchmark of images/s (goal >= 1.0), and both tools' metrics,
which must be equal.

CLIP_benchmark 1.6.2's `accuracy` fails under numpy >= 2.4 (`float()` of a 1-element array); it is
run with that one conversion fixed, as in tests/test_eval_parity.py.

Run: `.venv/bin/python benchmarks/eval_vs_clip_benchmark.py [--images 2000] [--batch 128]
[--train-steps 60] [--workers 1] [--model kgclip-tiny] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 200), "green": (40, 170, 60), "yellow": (220, 200, 40)}
CLASSES = [f"{c} {s}" for c in COLOURS for s in ("circle", "square")]
TEMPLATES = ("a photo of a {c}.", "a drawing of a {c}.", "{c}")
CLIP_BENCHMARK = Path(__file__).resolve().parent / "clip_benchmark_numpy2.py"  # its numpy-2.4 fix
METRICS = ("acc1", "acc5", "mean_per_class_recall")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--model", default="kgclip-tiny", help="a bundled model or an open_clip model name")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=60, help="brief training first (0: random init)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_folder(root / "shapes", args.images)
        model_dir = make_model(root / "model", args.model, args.train_steps)
        conditions(args)
        rounds = []
        for i in range(args.rounds):
            ours = run_kgclip(args, folder, model_dir, root / f"k{i}")
            theirs = run_clip_benchmark(args, folder, model_dir, root / f"c{i}.json")
            rounds.append((ours, theirs))
            print(f"round {i + 1}: kgclip {ours['rate']:.1f} images/s ({ours['wall']:.2f} s), "
                  f"clip_benchmark {theirs['rate']:.1f} images/s ({theirs['wall']:.2f} s)")
    ours_rate = statistics.median(r[0]["rate"] for r in rounds)
    theirs_rate = statistics.median(r[1]["rate"] for r in rounds)
    ratios = ", ".join(f"{a['rate'] / b['rate']:.2f}" for a, b in rounds)
    print(
        f"median: kgclip {ours_rate:.1f} images/s, clip_benchmark {theirs_rate:.1f} images/s: "
        f"ratio {ours_rate / theirs_rate:.2f}x (rounds {ratios})"
    )
    mine, ref = rounds[0][0]["metrics"], rounds[0][1]["metrics"]
    same = all(abs(mine[k] - ref[k]) <= 1e-9 or (mine[k] != mine[k] and ref[k] != ref[k]) for k in METRICS)
    print(f"metrics kgclip {fmt(mine)} | clip_benchmark {fmt(ref)}: {'equal' if same else 'DIFFERENT'}")


def fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in METRICS)


def conditions(args: argparse.Namespace) -> None:
    import open_clip
    import torch

    import kgclip

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(
        f"kgclip {kgclip.__version__}, clip_benchmark {version('clip-benchmark')}, "
        f"open_clip {open_clip.__version__}, torch {torch.__version__} (threads {torch.get_num_threads()}), "
        f"Python {platform.python_version()}; {device}"
    )
    print(
        f"model {args.model} ({args.train_steps} training steps), {args.images} images 320x240 JPEG, "
        f"{len(CLASSES)} classes x {len(TEMPLATES)} templates, batch {args.batch}, "
        f"{args.workers} decoding worker(s), "
        f"{args.rounds} alternating rounds, fresh process and cache each run, wall time includes start-up"
    )


def make_folder(out: Path, n: int) -> Path:
    """A CLIP_benchmark wds folder written by kgclip's own writer (JPEG bytes kept as they are)."""
    from kgclip.eval.sets import CLASSIFICATION, ClassInfo, EvalSet, Item, fingerprint_of
    from kgclip.eval.wds import write_wds

    def items():
        for i in range(n):
            data = photo(i % len(CLASSES), i)
            yield Item(f"{i:06d}", lambda data=data: data, label=i % len(CLASSES))

    evalset = EvalSet("shapes", CLASSIFICATION, [ClassInfo(c) for c in CLASSES], items,
                      fingerprint_of("bench", n), "bench", TEMPLATES)
    write_wds(evalset, out)
    return out


def photo(label: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    colour, shape = CLASSES[label].split()
    im = Image.effect_noise((320, 240), rnd.randint(20, 60)).convert("RGB")
    draw = ImageDraw.Draw(im)
    r = rnd.randint(25, 80)
    x, y = rnd.randint(r, 320 - r), rnd.randint(r, 240 - r)
    box = (x - r, y - r, x + r, y + r)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_model(folder: Path, model: str, steps: int) -> Path:
    """The model, trained `steps` steps on other photos of the same classes (so its predictions are
    spread over the classes, not one guess), saved as open_clip's `local-dir:` layout."""
    import open_clip
    import torch

    from kgclip.train.models import register

    name = register(model)
    torch.manual_seed(0)
    net, _, transform = open_clip.create_model_and_transforms(name, output_dict=True)
    if steps:
        seeds = range(10**6, 10**6 + 256)
        pixels = [transform(Image.open(io.BytesIO(photo(s % len(CLASSES), s))).convert("RGB")) for s in seeds]
        images = torch.stack(pixels)
        texts = open_clip.get_tokenizer(name)([f"a photo of a {CLASSES[s % len(CLASSES)]}." for s in seeds])
        loss_fn, optimizer = open_clip.loss.ClipLoss(), torch.optim.AdamW(net.parameters(), lr=1e-3)
        for _ in range(steps):
            pick = torch.randperm(len(seeds))[:32]
            out = net(images[pick], texts[pick])
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    folder.mkdir(parents=True)
    config = {"model_cfg": open_clip.get_model_config(name), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(net.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def _timed(cmd: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


def run_kgclip(args: argparse.Namespace, folder: Path, model_dir: Path, out: Path) -> dict:
    wall = _timed([
        str(Path(sys.executable).with_name("kgclip")), "eval", str(model_dir / "open_clip_pytorch_model.bin"),
        "--model", args.model, "--set", f"wds:{folder}", "--prompts", "set", "-o", str(out),
        "--cache", str(out / "cache"), "--batch-size", str(args.batch), "--workers", str(args.workers),
    ])
    (result,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    return {"wall": wall, "rate": args.images / wall, "metrics": result["metrics"]}


def run_clip_benchmark(args: argparse.Namespace, folder: Path, model_dir: Path, out: Path) -> dict:
    import torch

    amp = [] if torch.cuda.is_available() else ["--no_amp"]
    wall = _timed([
        sys.executable, str(CLIP_BENCHMARK), "eval",
        "--model", f"local-dir:{model_dir}", "--pretrained", "x",
        "--dataset", "wds/shapes", "--dataset_root", str(folder), "--task", "zeroshot_classification",
        "--batch_size", str(args.batch), "--num_workers", str(args.workers), *amp, "--output", str(out),
    ])
    return {"wall": wall, "rate": args.images / wall, "metrics": json.loads(out.read_text())["metrics"]}


if __name__ == "__main__":
    main()
