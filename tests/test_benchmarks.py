"""The benchmarks' own logic: conditions, real-like hashes, the all-pairs peer, out-of-sample tuning."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_conditions_name_versions_machine_and_extras(bench) -> None:
    text = bench("conditions").describe(rounds=3, peer_version="9.9")
    assert text.startswith("conditions:\n")
    for key in ("date (UTC)", "machine", "python", "kgclip", "numpy", "rounds", "peer version"):
        assert f"  {key}" in text
    assert "9.9" in text and "cores" in text


def test_version_of_a_missing_distribution(bench) -> None:
    assert bench("conditions").version_of("no-such-distribution-kgclip") == "not installed"
    assert bench("conditions").version_of("numpy") == np.__version__


def test_real_like_hashes_follow_the_measured_bit_frequencies(bench) -> None:
    nd = bench("near_duplicates")
    freq = np.array(nd.REAL_FREQUENCIES)
    assert len(freq) == nd.BITS == 63
    h = nd.hashes(40_000, np.random.default_rng(3), freq)
    assert int(h.max()) < 2**63
    bits = ((h[:, None] >> np.arange(63, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    assert np.abs(bits - freq).max() < 0.02  # 5% planted copies barely move the shares
    assert bits.max() > 0.85 and bits.min() < 0.4  # skewed, unlike uniform hashes


def test_measured_frequencies_from_a_phash_column(bench, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    nd = bench("near_duplicates")
    pq.write_table(pa.table({"phash": [0b01, 0b11, 0b11, None]}), tmp_path / "a.parquet")
    freq, count = nd.measure_frequencies([tmp_path / "a.parquet"])
    assert count == 2  # distinct, nulls left out
    assert freq[0] == 1.0 and freq[1] == 0.5 and freq[2:].sum() == 0


def test_all_pairs_agrees_with_the_multi_index_search(bench) -> None:
    nd = bench("near_duplicates")
    h = nd.hashes(3_000, np.random.default_rng(5), np.array(nd.REAL_FREQUENCIES))
    ours, _ = nd.mih(h)
    theirs = nd.all_pairs(h, budget=100_000)  # many small blocks
    assert np.array_equal(ours, theirs)
    assert (ours // len(h) != ours % len(h)).sum() > 100  # the planted near copies are found


def test_threshold_is_tuned_on_one_half_and_scored_on_the_other(bench) -> None:
    dr = bench("decontam_recall")
    five = len(dr.KINDS)
    d = dr.Distances(
        positives={"a": [2] * five, "b": [5] * five, "c": [9] * five},
        negatives={"x": [7] * five, "y": [20] * five, "z": [30] * five},
    )
    tuning = d.subset({"a", "b", "x", "y"})
    # thresholds 5 and 6 find a and b with no false positive (the lower is kept); 7 lets x in
    assert dr.tune(tuning, range(31)) == 5
    report = dr.score(d.subset({"c", "z"}), 5)
    assert report.recall == 0.0 and report.false_positives == 0
    assert dr.score(d, 9).recall == 1.0 and dr.score(d, 9).false_positives == five


def test_all_pairs_on_the_first_rows_is_that_share_of_the_whole(bench) -> None:
    nd = bench("near_duplicates")
    h = nd.hashes(2_000, np.random.default_rng(8), np.array(nd.REAL_FREQUENCIES))
    whole = nd.all_pairs(h, budget=50_000)
    part = nd.all_pairs(h, budget=50_000, rows=300)
    assert len(part) > 0
    assert np.array_equal(part, whole[whole // len(h) < 300])


def _figures(n: int, tree: float, main: float, cpu_s: float) -> dict:
    return {
        "seconds": 1.0,
        "cpu_s": cpu_s,
        "tree_mib": tree,
        "main_mib": main,
        "largest_mib": main,
        "processes": 1,
        "rows": 1,
        "cpu_ms_per_image": 1000 * cpu_s / n,
    }


def test_scale_summary_slopes_straight_lines_and_flags(bench) -> None:
    scale = bench("scale")
    results = {
        50_000: {"fetch": _figures(50_000, 250, 200, 210), "curate": _figures(50_000, 99, 99, 60)},
        100_000: {"fetch": _figures(100_000, 300, 200, 410), "curate": _figures(100_000, 100, 100, 110)},
        200_000: {"fetch": _figures(200_000, 500, 200, 810), "curate": _figures(200_000, 101, 101, 260)},
    }
    lines = scale.summary(results)
    fetch = next(line for line in lines if line.startswith("fetch "))
    # 200 MiB more over 100,000 images: 2.048 KiB per image; 500 MiB + 2.048 KiB x 8.8M at 9M
    assert "2.048" in fetch and f"{(500 + 2.048 * 8_800_000 / 1024) / 1024:.2f} GiB" in fetch
    assert "> 0.1 KiB/image" in fetch and "> 2 GiB at 1M" in fetch and "not flat" not in fetch
    assert "4.000->4.000" in fetch  # CPU per extra image; the 10 s of start-up cancel out
    curate = next(line for line in lines if line.startswith("curate "))
    assert "> 2 GiB" not in curate and "> 0.1 KiB/image" not in curate  # 0.010 KiB per image
    assert "1.000->1.500" in curate and "CPU per extra image x1.50 (not flat)" in curate


def test_scale_images_are_distinct_to_the_perceptual_hash(bench, tmp_path) -> None:
    from PIL import Image

    from kgclip.curate.phash import phash

    scale = bench("scale")
    assert scale._make_folder((str(tmp_path), 0)) == scale.PER_FOLDER
    assert scale._make_folder((str(tmp_path), 0)) == 0  # made once
    files = sorted((tmp_path / "images" / "0000").glob("*.jpg"))[:300]
    hashes = []
    for path in files:
        with Image.open(path) as image:
            hashes.append(int(phash(image)))
    nearest = min(bin(a ^ b).count("1") for i, a in enumerate(hashes) for b in hashes[i + 1 :])
    assert nearest > 6  # curate's near-duplicate radius


def test_scale_tree_sampler_sums_a_process_and_its_children(bench) -> None:
    import subprocess

    scale = bench("scale")
    child = "import time; b = bytearray(60 * 2**20); time.sleep(1)"
    code = (
        "import subprocess, sys; b = bytearray(60 * 2**20); "
        f"subprocess.Popen([sys.executable, '-c', {child!r}]).wait()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    sampler = scale.TreeSampler(proc.pid, every=0.02)
    sampler.start()
    proc.wait()
    sampler.stop.set()
    sampler.join()
    assert sampler.most_processes == 2
    assert sampler.tree_peak > 120 * 2**20 > sampler.main_peak > 60 * 2**20
