"""CLIP_benchmark 1.6.2's own CLI with one fix: its `accuracy` ends in `float(<1-element array>)`,
which numpy >= 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars").

The replacement divides the same sum by the same count; nothing else is touched (same model loader,
data pipeline, classifier, logits and balanced accuracy). Used by eval_vs_clip_benchmark.py and
tests/test_eval_parity.py: `python benchmarks/clip_benchmark_numpy2.py eval --model ...`.
"""

import sys

import clip_benchmark.metrics.zeroshot_classification as zeroshot
from clip_benchmark.cli import main


def accuracy(output, target, topk=(1,)):  # CLIP_benchmark's signature
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum(0, keepdim=True)) / len(target) for k in topk]


zeroshot.accuracy = accuracy

if __name__ == "__main__":
    sys.argv[0] = "clip_benchmark"
    sys.exit(main())
