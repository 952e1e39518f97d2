"""Memory and time of every harvest stage as the number of images grows (issue 17).

For each size N (`--sizes 100000,300000,1000000` by default) the script

1. makes N distinct small JPEGs (96-160 px; a random 6x6 colour grid per image, smoothed up, so
   every picture has its own perceptual hash: no exact or near duplicates), in a process pool,
   cached under `--cache` so a rerun or a larger size reuses them (`images/NNNN/NNNNNNN.jpg`);
2. writes a corpus table for them (`corpus-N.csv`, the `table` importer: path, caption), each
   caption "A photo of a <query>, number <i>." for the entity queries of the config below, dealt
   round robin, so each entity query finds about N / queries pictures (the vocabulary comes from
   the queries stage, run once under `--cache/vocabulary`);
3. harvests them in `--work/nN` with entity captions, entity queries and the default curate
   (`[search] top_k` twice the pictures per query, fetch at 64 px), running every stage as its own
   process: `kgclip corpus index` (stage `corpus`) then `kgclip harvest --only STAGE` for the
   entities, filter, types, attributes, queries, search, fetch and curate stages;
4. prints per stage: wall seconds, CPU seconds (user + system, the stage and every process it
   waited for), CPU ms per image, peak RSS of the process tree (the sum over the stage's
   processes, sampled every 50 ms from /proc), peak RSS of the stage's main process (VmHWM,
   sampled) and of its largest process (wait4), and the rows it wrote.

After the last size: the extra RSS per image between the two largest sizes (tree and main
process), the straight-line figure at 9M images, and flags for the issue's goals: every stage
<= 2 GiB at 1M (straight line when 1M did not run), <= 0.1 KiB extra per image, CPU time per
image flat (+-15%): the CPU per extra image between the last two sizes within 15% of that between
the first two (fixed costs such as start-up and the per-query work of search cancel out).

`--stages curate` reruns only the named stages on the existing work directories (the other
stages' outputs must be there); `--keep` keeps work directories between runs (the default starts
each size afresh). Results also go to `--json FILE`.

    python benchmarks/scale.py --sizes 20000,50000 --cache /tmp/kgclip-scale
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import describe

STAGES = ("corpus", "entities", "filter", "types", "attributes", "queries", "search", "fetch", "curate")
BY_ENTITIES = ("entities", "filter", "types", "attributes", "queries")  # no image reaches them
PER_FOLDER = 1000
GOAL_MIB_AT_1M = 2048
GOAL_KIB_PER_IMAGE = 0.1
GOAL_FLAT = 0.15
PAGE = os.sysconf("SC_PAGE_SIZE")
# the rows each stage writes (its main output)
OUTPUTS = {
    "entities": "entities.parquet",
    "filter": "filter.parquet",
    "types": "types.parquet",
    "attributes": "attributes.parquet",
    "queries": "queries.parquet",
    "search": "hits.parquet",
    "fetch": "fetched.parquet",
    "curate": "samples.parquet",
}

CONFIG = """\
# benchmarks/scale.py: entity captions, entity queries, the default curate
extends = "livingthings"
name = "scale"

[queries]
kinds = ["entity"]

[search]
backend = "corpus"
top_k = {top_k}

[search.corpus]
index = "{index}"
source = "{source}"
importer = "table"
match_categories = false

[fetch]
size = 64
"""


# ---------------------------------------------------------------- images and corpus


def _make_folder(args: tuple[str, int]) -> int:
    """Images folder*PER_FOLDER .. +PER_FOLDER-1 (skipped when the folder's marker is there)."""
    import numpy as np
    from PIL import Image

    root, folder = args
    out = Path(root) / "images" / f"{folder:04d}"
    if (out / ".done").exists():
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for i in range(folder * PER_FOLDER, (folder + 1) * PER_FOLDER):
        rng = np.random.default_rng(i)
        grid = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        w, h = int(rng.integers(96, 161)), int(rng.integers(96, 161))
        image = Image.fromarray(grid, "RGB").resize((w, h), Image.Resampling.BICUBIC)
        image.save(out / f"{i:07d}.jpg", "JPEG", quality=85)
    (out / ".done").touch()
    return PER_FOLDER


def make_images(cache: Path, n: int, processes: int) -> float:
    began = time.monotonic()
    folders = math.ceil(n / PER_FOLDER)
    with ProcessPoolExecutor(processes) as pool:
        made = sum(pool.map(_make_folder, [(str(cache), f) for f in range(folders)], chunksize=4))
    if made:
        print(f"made {made:,} images in {time.monotonic() - began:.0f} s", flush=True)
    return time.monotonic() - began


def vocabulary(cache: Path, kgclip: list[str]) -> list[str]:
    """The entity queries' texts of the scale config, from a queries stage run once."""
    out = cache / "vocabulary.json"
    if out.exists():
        return orjson.loads(out.read_bytes())
    work = cache / "vocabulary"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "empty.csv").write_text("path,caption\n")
    config = work / "scale.toml"
    config.write_text(CONFIG.format(top_k=1, index=work / "corpus.sqlite", source=work / "empty.csv"))
    for stage in ("entities", "filter", "types", "attributes", "queries"):
        subprocess.run([*kgclip, "harvest", str(config), "-w", str(work / "w"), "--only", stage], check=True)
    import pyarrow.parquet as pq

    texts = sorted(set(pq.read_table(work / "w" / "queries.parquet", columns=["text"])["text"].to_pylist()))
    out.write_bytes(orjson.dumps(texts))
    return texts


def write_corpus(cache: Path, n: int, words: list[str]) -> Path:
    out = cache / f"corpus-{n}.csv"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption"])
        for i in range(n):
            path = f"images/{i // PER_FOLDER:04d}/{i:07d}.jpg"
            writer.writerow([path, f"A photo of a {words[i % len(words)]}, number {i}."])
    tmp.rename(out)
    return out


# ---------------------------------------------------------------- measuring a stage


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class TreeSampler(threading.Thread):
    """Peak of the summed RSS of a process and its descendants, and the root's VmHWM, sampled."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.tree_peak = self.main_peak = self.most_processes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            kids = _children()
            tree, todo = [], [self.pid]
            while todo:
                pid = todo.pop()
                tree.append(pid)
                todo.extend(kids.get(pid, ()))
            self.tree_peak = max(self.tree_peak, sum(_rss(p) for p in tree))
            self.main_peak = max(self.main_peak, _hwm(self.pid))
            self.most_processes = max(self.most_processes, len(tree))
            self.stop.wait(self.every)


def run_stage(cmd: list[str], log: Path) -> dict[str, float]:
    began = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); {log}:\n" + "\n".join(tail))
    return {
        "seconds": time.monotonic() - began,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "tree_mib": sampler.tree_peak / 2**20,
        "main_mib": sampler.main_peak / 2**20,
        "largest_mib": usage.ru_maxrss / 1024,
        "processes": sampler.most_processes,
    }


def rows_of(stage: str, work: Path, index: Path) -> int:
    if stage == "corpus":
        import sqlite3

        db = sqlite3.connect(index)
        try:
            return int(db.execute("SELECT count(*) FROM items").fetchone()[0])
        finally:
            db.close()
    import pyarrow.parquet as pq

    path = work / OUTPUTS[stage]
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


# ---------------------------------------------------------------- the harvest at one size


def harvest(n: int, args: argparse.Namespace, words: list[str], kgclip: list[str]) -> dict[str, dict]:
    work = args.work / f"n{n}"
    stages = args.stages
    if stages == list(STAGES) and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    source = write_corpus(args.cache, n, words)
    index = work / "corpus.sqlite"
    top_k = 2 * math.ceil(n / len(words))
    config = work / "scale.toml"
    config.write_text(CONFIG.format(top_k=top_k, index=index, source=source))
    log = work / "stages.log"
    results: dict[str, dict] = {}
    for stage in stages:
        if stage == "corpus":
            cmd = [*kgclip, "corpus", "index", str(source), "-o", str(index), "--importer", "table"]
        else:
            cmd = [*kgclip, "harvest", str(config), "-w", str(work / "w"), "--only", stage]
        figures = run_stage(cmd, log)
        figures["rows"] = rows_of(stage, work / "w", index)
        figures["cpu_ms_per_image"] = 1000 * figures["cpu_s"] / n
        figures["s_per_image"] = figures["seconds"] / n
        results[stage] = figures
        print(_row(n, stage, figures), flush=True)
    return results


HEADER = (
    f"{'N':>9} {'stage':<10} {'wall s':>8} {'CPU s':>8} {'CPU ms/img':>10} {'tree MiB':>9} "
    f"{'main MiB':>9} {'largest':>8} {'procs':>5} {'rows':>10}"
)


def _row(n: int, stage: str, f: dict) -> str:
    return (
        f"{n:>9,} {stage:<10} {f['seconds']:>8.1f} {f['cpu_s']:>8.1f} {f['cpu_ms_per_image']:>10.3f} "
        f"{f['tree_mib']:>9.0f} {f['main_mib']:>9.0f} {f['largest_mib']:>8.0f} {f['processes']:>5} "
        f"{f['rows']:>10,}"
    )


def summary(results: dict[int, dict[str, dict]]) -> list[str]:
    """Extra RSS per image between the two largest sizes, the 9M and 1M straight lines, flags."""
    sizes = sorted(results)
    lines = ["", HEADER]
    for n in sizes:
        lines += [_row(n, stage, f) for stage, f in results[n].items()]
    if len(sizes) < 2:
        return [*lines, "(one size only: no per-image slope)"]
    a, b = sizes[-2], sizes[-1]
    lines += [
        "",
        f"between N = {a:,} and {b:,} (straight line through the two):",
        f"{'stage':<10} {'tree KiB/img':>12} {'tree @1M':>9} {'tree @9M':>9} {'main KiB/img':>12} "
        f"{'main @9M':>9} {'CPU ms/extra img':>17} {'flags'}",
    ]
    for stage in results[b]:
        if stage not in results[a]:
            continue
        fa, fb = results[a][stage], results[b][stage]
        flags = []
        by_entities = stage in BY_ENTITIES
        slopes = {}
        for key in ("tree_mib", "main_mib"):
            slopes[key] = (fb[key] - fa[key]) * 1024 / (b - a)  # KiB per image
        at = {m: fb["tree_mib"] + slopes["tree_mib"] * (m - b) / 1024 for m in (1_000_000, 9_000_000)}
        main9 = fb["main_mib"] + slopes["main_mib"] * (9_000_000 - b) / 1024
        if by_entities:
            flags.append("n/a (its work depends on the entities, not the images)")
        elif max(at[1_000_000], fb["tree_mib"] if b >= 1_000_000 else 0) > GOAL_MIB_AT_1M:
            flags.append("> 2 GiB at 1M")
        if max(slopes.values()) > GOAL_KIB_PER_IMAGE and not by_entities:
            flags.append("> 0.1 KiB/image")
        per_image = ""
        if not by_entities:
            # CPU per extra image between consecutive sizes: fixed costs (start-up, per-query work)
            # cancel out; flat means the last step costs what the first did (+-15%)
            steps = [_marginal(results, x, y, stage) for x, y in itertools.pairwise(sizes)]
            steps = [m for m in steps if m is not None]
            per_image = "->".join(f"{m:.3f}" for m in steps)
            if len(steps) > 1 and steps[0] > 0 and abs(steps[-1] / steps[0] - 1) > GOAL_FLAT:
                flags.append(f"CPU per extra image x{steps[-1] / steps[0]:.2f} (not flat)")
        lines.append(
            f"{stage:<10} {slopes['tree_mib']:>12.3f} {_gib(at[1_000_000]):>9} {_gib(at[9_000_000]):>9} "
            f"{slopes['main_mib']:>12.3f} {_gib(main9):>9} {per_image:>17} {', '.join(flags) or 'ok'}"
        )
    return lines


def _marginal(results: dict[int, dict[str, dict]], a: int, b: int, stage: str) -> float | None:
    """CPU ms per image added from size a to size b."""
    if stage not in results[a] or stage not in results[b]:
        return None
    return 1000 * (results[b][stage]["cpu_s"] - results[a][stage]["cpu_s"]) / (b - a)


def _gib(mib: float) -> str:
    return f"{mib / 1024:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="numbers of images, comma-separated")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/kgclip-scale"), help="images and corpora")
    parser.add_argument("--work", type=Path, default=None, help="work directories (default CACHE/work)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"stages to run, of {','.join(STAGES)}")
    parser.add_argument("--keep", action="store_true", help="do not empty a work directory first")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="image generators")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument(
        "--kgclip", default=None, help="kgclip command (default: this Python's `-m kgclip.cli`)"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.replace("_", "").split(",") if s]
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    args.stages = [s for s in STAGES if s in args.stages]
    args.cache = args.cache.resolve()
    args.work = (args.work or args.cache / "work").resolve()
    kgclip = args.kgclip.split() if args.kgclip else [sys.executable, "-m", "kgclip.cli"]
    print(
        describe(
            sizes=", ".join(f"{n:,}" for n in sizes),
            stages=", ".join(args.stages),
            cache=args.cache,
            work=args.work,
            kgclip_command=" ".join(kgclip),
            kgclip_source=_source_of(kgclip),
        ),
        flush=True,
    )
    args.cache.mkdir(parents=True, exist_ok=True)
    make_images(args.cache, max(sizes), args.processes)
    words = vocabulary(args.cache, kgclip)
    print(f"{len(words):,} entity queries; captions dealt round robin", flush=True)
    print(HEADER, flush=True)
    results = {n: harvest(n, args, words, kgclip) for n in sizes}
    for line in summary(results):
        print(line)
    if args.json:
        args.json.write_bytes(
            orjson.dumps({str(n): r for n, r in results.items()}, option=orjson.OPT_INDENT_2)
        )
    return 0


def _source_of(kgclip: list[str]) -> str:
    out = subprocess.run(
        [*kgclip[:-2], "-c", "import kgclip, os; print(os.path.dirname(kgclip.__file__))"]
        if kgclip[-2:] == ["-m", "kgclip.cli"]
        else ["true"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    raise SystemExit(main())
