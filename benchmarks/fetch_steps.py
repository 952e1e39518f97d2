"""Where fetch's per-image CPU goes: `normalize` over the fetch benchmark's images, step by step.

Each function of kgclip.fetch.images that `normalize` calls is wrapped with a CPU timer
(`time.process_time`), so the same script measures any checkout: run it with
`PYTHONPATH=<checkout>/src` for a before/after. The images are fetch_vs_img2dataset.py's (made
there once, into benchmarks/.data/fetch): 796 PNG stamps and 1,592 JPEG photos of 800-2000 px,
stored as that benchmark stores them (shorter side 256, JPEG quality 95). One process; each
group is run `--repeat` times and the pass with the median total is printed, in ms of CPU per
image for each step and in all.

Run: `.venv/bin/python benchmarks/fetch_steps.py [--repeat 3] [--limit N]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

from kgclip.fetch import images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_vs_img2dataset import SIZE, build_images  # the benchmark images, made once

# The functions of kgclip.fetch.images that `normalize` calls, in order, and what they do; a name a
# checkout lacks is skipped. Time outside all of them is printed as the rest.
STEPS = (
    ("_decode", "open, header and scan checks, draft decode"),
    ("working_mode", "mode conversion (alpha on white, ...)"),
    ("_resize", "resize"),
    ("keys", "perceptual hash + colour"),
    ("_pixel_sha256", "pixel sha256"),
    ("_encode", "JPEG encode"),
)
REST = "rest (source sha256, EXIF, transpose)"
_spent: dict[str, float] = defaultdict(float)


def _timed(label, func):
    def wrapper(*args, **kwargs):
        began = time.process_time()
        try:
            return func(*args, **kwargs)
        finally:
            _spent[label] += time.process_time() - began

    return wrapper


def _median_pass(blobs: list[bytes], opts: images.ImageOptions, repeat: int) -> tuple[float, dict]:
    passes = []
    for _ in range(repeat):
        _spent.clear()
        began = time.process_time()
        for data in blobs:
            result = images.normalize(data, opts)
            assert isinstance(result, images.Normalized), result
        passes.append((time.process_time() - began, dict(_spent)))
    return sorted(passes, key=lambda p: p[0])[len(passes) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes over each group; the median counts")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    args = parser.parse_args()
    for name, label in STEPS:
        if hasattr(images, name):
            setattr(images, name, _timed(label, getattr(images, name)))
    opts = images.ImageOptions("shorter", SIZE, 95, 1, 178_956_970, 50 * 2**20)
    files = build_images()[: args.limit or None]
    print(f"kgclip from {Path(images.__file__).parents[2]}; shorter side {SIZE}, JPEG quality 95")
    overall: dict[str, float] = defaultdict(float)
    for group, suffix in (("PNG stamps", ".png"), ("JPEG photos", ".jpg")):
        blobs = [f.read_bytes() for f in files if f.suffix == suffix]
        total, spent = _median_pass(blobs, opts, args.repeat)
        spent[REST] = total - sum(spent.values())
        _print(f"{group} ({len(blobs):,})", total, spent, len(blobs))
        for label, seconds in spent.items():
            overall[label] += seconds
        overall[""] += total
    total = overall.pop("")
    _print(f"all ({len(files):,})", total, overall, len(files))


def _print(title: str, total: float, spent: dict[str, float], n: int) -> None:
    print(f"{title}: {1000 * total / n:.2f} ms of CPU per image")
    for label, seconds in spent.items():
        print(f"  {label:<42} {1000 * seconds / n:6.2f} ms {100 * seconds / total:4.0f}%")


if __name__ == "__main__":
    main()
