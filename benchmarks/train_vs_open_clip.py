"""kgclip train against open_clip_train on the same shards, model, batch, precision and workers.

Both train the bundled tiny model (kgclip-tiny: 8M parameters, 64 px) from random init on a
harvested work directory's shards (the demo's by default), resampling shards, for the same number
of steps, with the same batch size, precision, learning rate and data-loader worker count, on the
CPU, one tool after the other (never two torch processes at once). open_clip_train reads the
`.txt` caption; kgclip samples a caption per image from the sample's JSON (the method's mix), so
kgclip does a little more work per sample.

Printed per tool: samples/s over the steps after the first few (samples over the summed step times,
so slow steps count in full; start-up excluded), the share of that time spent waiting for data, and
the wall time including start-up; then the ratio kgclip / open_clip_train of the steady samples/s
(goal: at least 1.0).

Run: `bash benchmarks/setup_peers.sh` once (pandas, which open_clip_train imports), a harvested
work directory (`kgclip demo --train-steps 0`), then
`.venv/bin/python benchmarks/train_vs_open_clip.py [-w kgclip-demo] [--steps 40] [--batch 64]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_JSON = HERE.parent / "src" / "kgclip" / "train" / "model_configs" / "kgclip-tiny.json"
SKIP = 5  # steps left out of the steady-state medians (start-up, first batches)
STEP_LINE = re.compile(r"Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+), ([\d.]+)/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-w", "--workdir", type=Path, default=Path("kgclip-demo"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    args = ap.parse_args()
    shards = sorted((args.workdir / "shards").glob("*.tar"))
    if not shards:
        sys.exit(f"no shards under {args.workdir / 'shards'}: run `kgclip demo --train-steps 0` first")
    rounds: list[tuple[dict[str, float], dict[str, float]]] = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_kgclip(args, Path(tmp))
            peer = run_open_clip(args, shards, Path(tmp))
        rounds.append((ours, peer))
        print(f"round {i + 1}: kgclip {ours['rate']:.1f}, open_clip_train {peer['rate']:.1f} samples/s")
    ours = {k: statistics.median(r[0][k] for r in rounds) for k in rounds[0][0]}
    peer = {k: statistics.median(r[1][k] for r in rounds) for k in rounds[0][1]}
    ratios = sorted(r[0]["rate"] / r[1]["rate"] for r in rounds)
    print(
        f"conditions: kgclip-tiny (64 px), {len(shards)} shards of {args.workdir}, batch {args.batch}, "
        f"{args.steps} steps, {args.precision}, {args.workers} loader worker(s), CPU, one tool at a time"
    )
    for name, got in (("kgclip train", ours), ("open_clip_train", peer)):
        print(
            f"{name:16s} {got['rate']:8.1f} samples/s (steps {SKIP + 1}-{args.steps}), "
            f"data wait {got['wait']:.1%}, wall {got['wall']:.1f} s with start-up"
        )
    print(
        f"ratio kgclip / open_clip_train (steady samples/s), median of {args.rounds} rounds: "
        f"{statistics.median(ratios):.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


def run_kgclip(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    config = tmp / "bench.toml"
    config.write_text(
        'extends = "demo"\n[train]\nmodel = "kgclip-tiny"\n'
        f'batch_size = {args.batch}\nmax_steps = {args.steps}\nworkers = {args.workers}\n'
        f'precision = "{args.precision}"\nlr = 1e-3\nwarmup_epochs = 1\nlog_every_steps = 1000\n'
        f"save_every_steps = {args.steps * 10}\n"
    )
    run = f"bench-{int(time.time())}"
    began = time.monotonic()
    cmd = [sys.executable, "-m", "kgclip.cli", "train", str(config), "-w", str(args.workdir), "--run", run]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - began
    with open(args.workdir / "runs" / run / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[SKIP:]
    batch = [float(r["batch_time"]) for r in rows]
    spent = sum(batch)
    return {
        "rate": sum(float(r["samples_per_second"]) * t for r, t in zip(rows, batch, strict=True)) / spent,
        "wait": sum(float(r["data_time"]) for r in rows) / spent,
        "wall": wall,
    }


def run_open_clip(args: argparse.Namespace, shards: list[Path], tmp: Path) -> dict[str, float]:
    model_dir = tmp / "model"
    model_dir.mkdir()
    cfg = json.loads(MODEL_JSON.read_text())
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    first, last = shards[0].stem, shards[-1].stem
    prefix = first.rsplit("-", 1)[0]
    pattern = str(shards[0].parent / f"{prefix}-{{{first.rsplit('-', 1)[1]}..{last.rsplit('-', 1)[1]}}}.tar")
    cmd = [
        sys.executable, "-m", "open_clip_train.main",
        "--dataset-type", "webdataset", "--train-data", pattern, "--dataset-resampled",
        "--train-num-samples", str(args.steps * args.batch), "--batch-size", str(args.batch),
        "--epochs", "1", "--workers", str(args.workers), "--warmup", "2", "--lr", "1e-3",
        "--device", "cpu", "--precision", "amp_bf16" if args.precision == "bf16" else "fp32",
        "--model", f"local-dir:{model_dir}", "--save-frequency", "0", "--report-to", "",
        "--log-every-n-steps", "1", "--logs", str(tmp / "logs"), "--seed", "0",
    ]  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - began
    if done.returncode != 0:
        sys.exit(f"open_clip_train failed:\n{done.stderr[-3000:]}")
    steps = [tuple(map(float, m.groups())) for m in STEP_LINE.finditer(done.stdout + done.stderr)][SKIP:]
    if not steps:
        sys.exit("open_clip_train printed no step lines")
    spent = sum(s[1] for s in steps)
    return {
        "rate": sum(s[2] * s[1] for s in steps) / spent,
        "wait": sum(s[0] for s in steps) / spent,
        "wall": wall,
    }


if __name__ == "__main__":
    main()
