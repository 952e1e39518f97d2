#!/usr/bin/env bash
# Training speed on a GPU machine: ViT-B-32 at 224 px, bf16, batch 256, a few hundred steps on the
# demo shards (resampled; the data is small, the point is the step rate). Prints samples/s, the
# share of each step spent waiting for data, and peak GPU memory. Needs a CUDA torch (the pinned one
# is) and nothing from the network.
#   bash benchmarks/gpu_train.sh [STEPS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
BATCH=${2:-256}
WORK=${WORK:-/tmp/kgclip-gpu-bench}
[[ -x .venv/bin/kgclip ]] || bash scripts/setup.sh > /dev/null
.venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
[[ -f "$WORK/samples.parquet" ]] || .venv/bin/kgclip demo -w "$WORK" --train-steps 0 > /dev/null
CFG=$(mktemp --suffix .toml)
cat > "$CFG" <<TOML
extends = "demo"
[train]
model = "ViT-B-32"
precision = "bf16"
batch_size = $BATCH
max_steps = $STEPS
workers = 8
shuffle_buffer = 1000
lr = 5e-4
warmup_epochs = 1
log_every_steps = 50
save_every_steps = 100000
TOML
RUN="gpu-$(date +%s)"
.venv/bin/kgclip train "$CFG" -w "$WORK" --run "$RUN"
.venv/bin/python - "$WORK/runs/$RUN" <<'PY'
import csv, json, statistics, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.DictReader(open(run / "log.csv")))[20:]
meta = json.loads((run / "run.json").read_text())
rate = statistics.median(float(r["samples_per_second"]) for r in rows)
wait = statistics.median(float(r["data_wait_share"]) for r in rows)
print(f"ViT-B-32 224px bf16 batch {meta['global_batch']}, {meta['steps_done']} steps: "
      f"{rate:,.0f} samples/s (median after step 20), data wait {wait:.1%}, "
      f"peak GPU memory {meta.get('peak_gpu_memory_gib', float('nan')):.1f} GiB")
PY
