"""kgclip's fetch stage against img2dataset on the same URLs, served from loopback.

Images: every Tux Paint stamp PNG (transparent clip art, a few hundred px) plus JPEG "photos"
made from the same stamps, composited on white and re-encoded at 800-2000 px on the longer side,
the sizes web image hosts serve. They are generated once into benchmarks/.data/ (not in git).

Server: nginx (Debian's nginx-light), one worker, listening on 127.0.0.1..127.0.0.N so the URLs
spread over N hosts, as search results do. Without nginx a threaded Python server is used, and
the output says so: it costs the tools CPU on a 2-core machine and compresses the ratio.

Both tools get the same URLs, output size (shorter side 256, never enlarged), JPEG quality 95 and
process count, and no retries. img2dataset runs `--processes_count P --thread_count 16`; kgclip runs
P decode processes beside its one downloading process, with per-host limits set high enough not
to bind (img2dataset has none; kgclip's polite defaults are 2 requests per second per host).

Printed: the conditions (versions, server, hosts, processes, rounds), wall time and images/s for
each (start-up included), the ratios, peak RSS summed over each tool's process tree, and the CPU
seconds of each process tree (user + system of the tool and the workers it waited for; the
server's not counted): on a machine that other work shares, CPU is steadier than wall time. The
headline compares like with like: kgclip's fetch plus curate (webdataset shards with captions,
which is what img2dataset's output is; curate also merges near duplicates and writes the dataset
card) against img2dataset writing its shards. kgclip's fetch alone (its part files, no shards) is
printed as a detail.

Run: `bash benchmarks/setup_peers.sh` once (img2dataset in its own venv, nginx), then
`.venv/bin/python benchmarks/fetch_vs_img2dataset.py [--rounds 3] [--processes 2] [--hosts 16]`.
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import describe, tool_version, version_of

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "fetch"
STAMPS = Path("/usr/share/tuxpaint/stamps")
PHOTO_SIDES = (800, 1200, 1600, 2000)
SIZE = 256

RUNNER = """
import sys, time
from pathlib import Path
from kgclip.config import parse
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir
from kgclip.fetch import stage as fetch
from kgclip.curate import stage as curate
import orjson
work = Path(sys.argv[1])
config = parse(orjson.loads((work / "bench-config.json").read_bytes()))
ctx = StageContext(config, Workdir(work))
began = time.monotonic()
result = fetch.run(ctx)
fetched = time.monotonic()
curate.run(ctx)
print(orjson.dumps({"ok": result.stats["ok"], "urls": result.stats["urls"],
    "fetch_s": fetched - began, "curate_s": time.monotonic() - fetched}).decode())
"""


def build_images() -> list[Path]:
    """The served files: stamp PNGs as they are, and JPEG photos made from them (cached)."""
    pngs = sorted(STAMPS.rglob("*.png"))
    if not pngs:
        sys.exit(f"no Tux Paint stamps under {STAMPS}: apt-get install tuxpaint-stamps-default")
    DATA.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for i, src in enumerate(pngs):
        png = DATA / f"s{i:04d}.png"
        if not png.exists():
            shutil.copyfile(src, png)
        out.append(png)
        for k in range(2):
            side = PHOTO_SIDES[(2 * i + k) % len(PHOTO_SIDES)]
            jpg = DATA / f"p{i:04d}_{k}.jpg"
            if not jpg.exists():
                _photo(src, side, jpg)
            out.append(jpg)
    return out


def _photo(src: Path, side: int, dst: Path) -> None:
    with Image.open(src) as stamp:
        rgba = stamp.convert("RGBA")
    scale = side / max(rgba.size)
    big = rgba.resize((max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale))), Image.BICUBIC)
    canvas = Image.new("RGB", big.size, (250, 248, 240))
    canvas.paste(big, mask=big)
    tmp = dst.with_suffix(".tmp")
    canvas.save(tmp, "JPEG", quality=88)
    tmp.replace(dst)


class Server:
    """nginx on N loopback addresses, or a threaded Python server on the same addresses."""

    def __init__(self, root: Path, hosts: int, scratch: Path) -> None:
        self.hosts = [f"127.0.0.{i + 1}" for i in range(hosts)]
        self.port = _free_port()
        self.kind = "nginx" if shutil.which("nginx") else "python http.server (nginx not installed)"
        self._proc: subprocess.Popen | None = None
        self._servers: list[ThreadingHTTPServer] = []
        if shutil.which("nginx"):
            self._start_nginx(root, scratch)
        else:
            handler = functools.partial(_Quiet, directory=str(root))
            for host in self.hosts:
                server = ThreadingHTTPServer((host, self.port), handler)
                threading.Thread(target=server.serve_forever, daemon=True).start()
                self._servers.append(server)

    def _start_nginx(self, root: Path, scratch: Path) -> None:
        listens = "\n".join(f"listen {h}:{self.port};" for h in self.hosts)
        conf = scratch / "nginx.conf"
        conf.write_text(
            f"""daemon off; worker_processes 1; pid {scratch}/nginx.pid; error_log {scratch}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types {{ image/png png; image/jpeg jpg; }}
  client_body_temp_path {scratch}; proxy_temp_path {scratch}; fastcgi_temp_path {scratch};
  uwsgi_temp_path {scratch}; scgi_temp_path {scratch};
  server {{ {listens} root {root}; }}
}}
"""
        )
        self._proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(scratch)], stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                import urllib.request

                urllib.request.urlopen(f"http://{self.hosts[0]}:{self.port}/", timeout=1).close()
                return
            except OSError as exc:
                if getattr(exc, "code", None) in (403, 404):
                    return
                time.sleep(0.05)
        raise RuntimeError("nginx did not start: " + (scratch / "error.log").read_text())

    def url(self, i: int, name: str) -> str:
        return f"http://{self.hosts[i % len(self.hosts)]}:{self.port}/{name}"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()
        for server in self._servers:
            server.shutdown()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        return


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str, float]:
    """Wall seconds, peak RSS (bytes) summed over the process tree, stdout, and CPU seconds (user +
    system) of the process and every descendant it waited for (its worker processes): the steadier
    figure on a shared machine, where wall time also counts other sessions' load."""
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    err: list[str] = []
    err_reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    err_reader.start()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.monotonic() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    reader.join()
    err_reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{''.join(err)[-3000:]}")
    return wall, peak, "".join(out), cpu


def _tree_rss(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def run_kgclip(urls: list[str], scratch: Path, processes: int) -> tuple[float, int, dict, float]:
    import orjson

    from kgclip.config import parse
    from kgclip.tables import Entity, Hit, NaturalType, Query, QueryParams, write_records

    work = scratch / "kgclip"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = parse(
        {
            "name": "bench",
            "search": {"corpus": {"source": "/unused"}},
            "fetch": {
                "size": SIZE,
                "resize": "shorter",
                "jpeg_quality": 95,
                "min_side": 1,
                "workers": processes,
                "batch_size": 256,
                "allow_loopback": True,
                "contact": "benchmark@example.org",
                "max_retries": 0,
                "timeout_s": 30,
                "global_concurrency": 32,
                "per_host_concurrency": 8,
                "per_host_rate_per_s": 10000,
            },
            "curate": {"samples_per_shard": 1000},
        }
    )
    (work / "bench-config.json").write_bytes(orjson.dumps(config.model_dump(mode="json")))
    write_records(work / "entities.parquet", [Entity("e", "stamp", [], "", "e", [], True)], Entity)
    write_records(work / "types.parquet", [NaturalType("e", "t", "clip art", [], "", "kg")], NaturalType)
    write_records(work / "queries.parquet", [Query("q", "entity", "stamp", "e", None, QueryParams())], Query)
    hits = [Hit("q", "bench", i, u, None, f"caption {i}", None, None, None, None) for i, u in enumerate(urls)]
    write_records(work / "hits.parquet", hits, Hit)
    wall, peak, out, cpu = measure([sys.executable, "-c", RUNNER, str(work)])
    return wall, peak, orjson.loads(out.strip().splitlines()[-1]), cpu


def run_img2dataset(
    binary: str, urls: list[str], scratch: Path, processes: int
) -> tuple[float, int, int, float]:
    work = scratch / "img2dataset"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with open(work / "urls.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        writer.writerows([u, f"caption {i}"] for i, u in enumerate(urls))
    cmd = [
        binary,
        "--url_list", str(work / "urls.csv"),
        "--input_format", "csv",
        "--url_col", "url",
        "--caption_col", "caption",
        "--output_format", "webdataset",
        "--output_folder", str(work / "out"),
        "--processes_count", str(processes),
        "--thread_count", "16",
        "--image_size", str(SIZE),
        "--resize_mode", "keep_ratio",
        "--resize_only_if_bigger", "True",
        "--encode_quality", "95",
        "--number_sample_per_shard", "1000",
        "--retries", "0",
        "--timeout", "30",
        "--enable_wandb", "False",
    ]  # fmt: skip
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    wall, peak, _, cpu = measure(cmd, env)
    import json

    ok = sum(json.loads(p.read_text())["successes"] for p in (work / "out").glob("*_stats.json"))
    return wall, peak, ok, cpu


def peer_versions(binary: str) -> str:
    """img2dataset's and webdataset's versions, asked of the peer's own interpreter."""
    code = 'from importlib.metadata import version as v; print(v("img2dataset"), v("webdataset"))'
    return tool_version([str(Path(binary).with_name("python")), "-c", code])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_i2d = str(HERE / ".venv-peers" / "bin" / "img2dataset")
    parser.add_argument("--img2dataset", default=default_i2d, help="the img2dataset executable")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each tool; medians")
    args = parser.parse_args()
    if not Path(args.img2dataset).exists():
        sys.exit(f"img2dataset not found at {args.img2dataset}; run bash benchmarks/setup_peers.sh")

    print(
        describe(
            img2dataset=f"{peer_versions(args.img2dataset)} (img2dataset, webdataset; {args.img2dataset})",
            pillow=version_of("pillow"),
            server=tool_version(["nginx", "-v"]) if shutil.which("nginx") else "python http.server",
            hosts=f"{args.hosts} loopback addresses",
            processes=f"{args.processes} (img2dataset: 16 threads each; kgclip: decode processes beside "
            "its downloading process)",
            output=f"shorter side {SIZE} (never enlarged), JPEG quality 95, 1,000 per shard, no retries",
            rounds=f"{args.rounds} alternating (kgclip, img2dataset); medians",
        )
    )
    t = time.monotonic()
    files = build_images()
    sizes = [f.stat().st_size for f in files]
    print(
        f"images: {len(files):,} ({sum(f.suffix == '.png' for f in files)} PNG stamps, "
        f"{sum(f.suffix == '.jpg' for f in files)} JPEG photos 800-2000 px), "
        f"{sum(sizes) / 2**20:.0f} MiB, median {statistics.median(sizes) / 1024:.0f} KiB "
        f"(ready in {time.monotonic() - t:.1f} s)"
    )
    with tempfile.TemporaryDirectory(prefix="kgclip-bench-") as tmp:
        scratch = Path(tmp)
        server = Server(DATA, args.hosts, scratch)
        try:
            urls = [server.url(i, f.name) for i, f in enumerate(files)]
            print(f"server: {server.kind} on {args.hosts} loopback hosts; {args.processes} processes each")
            kg_runs, i2d_runs = [], []
            for r in range(args.rounds):
                kg = run_kgclip(urls, scratch, args.processes)
                i2d = run_img2dataset(args.img2dataset, urls, scratch, args.processes)
                kg_runs.append(kg)
                i2d_runs.append(i2d)
                print(
                    f"  round {r + 1}: kgclip fetch + curate {kg[0]:.2f} s (fetch {kg[2]['fetch_s']:.2f} s, "
                    f"{kg[2]['ok']} ok), img2dataset {i2d[0]:.2f} s ({i2d[2]} ok): {i2d[0] / kg[0]:.2f}x; "
                    f"CPU {kg[3]:.1f} s vs {i2d[3]:.1f} s: {i2d[3] / kg[3]:.2f}x"
                )
        finally:
            server.stop()
    n = len(urls)
    kg_fetch = statistics.median(k[0] - k[2]["curate_s"] for k in kg_runs)
    kg_total = statistics.median(k[0] for k in kg_runs)
    i2d_wall = statistics.median(i[0] for i in i2d_runs)
    kg_rss = max(k[1] for k in kg_runs) / 2**20
    i2d_rss = max(i[1] for i in i2d_runs) / 2**20
    line = "{:<34} {:6.2f} s {:6.0f} images/s"
    print(
        line.format("kgclip fetch + curate (shards):", kg_total, n / kg_total)
        + f"  peak RSS {kg_rss:,.0f} MiB"
    )
    print(line.format("img2dataset (shards):", i2d_wall, n / i2d_wall) + f"  peak RSS {i2d_rss:,.0f} MiB")
    print(line.format("detail: kgclip fetch alone:", kg_fetch, n / kg_fetch))
    per_round = sorted(i[0] / k[0] for k, i in zip(kg_runs, i2d_runs, strict=True))
    print(f"ratio (img2dataset time / kgclip time), like for like (both write shards): "
          f"{i2d_wall / kg_total:.2f}x (goal >= 3.0x); detail, kgclip's fetch alone: "
          f"{i2d_wall / kg_fetch:.2f}x")  # fmt: skip
    print(f"like-for-like ratio per round: {', '.join(f'{r:.2f}x' for r in per_round)} "
          f"(median {statistics.median(per_round):.2f}x)")  # fmt: skip
    kg_cpu = statistics.median(k[3] for k in kg_runs)
    i2d_cpu = statistics.median(i[3] for i in i2d_runs)
    print(f"CPU over each process tree (the server's not counted; medians): kgclip fetch + curate "
          f"{kg_cpu:.1f} s ({1000 * kg_cpu / n:.1f} ms per image), img2dataset {i2d_cpu:.1f} s "
          f"({1000 * i2d_cpu / n:.1f} ms per image): {i2d_cpu / kg_cpu:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
