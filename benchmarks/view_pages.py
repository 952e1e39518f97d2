"""`kgclip view` at scale: a synthetic work directory of N samples (1,000,000 by default, made here,
not committed), the index built once (timed), then the entity page, the picture page and the image
route requested from a real server on 127.0.0.1 (median and 95th percentile), and the server's
peak RSS.

    python benchmarks/view_pages.py --samples 1000000 --dir /tmp/view-bench
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from kgclip.config import load
from kgclip.tario import add_member

PER_SHARD = 10_000


def jpegs(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        im = Image.new("RGB", (64, 48), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def make_workdir(root: Path, n: int, n_entities: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / ".kgclip-workdir").write_text("")
    (root / "config.json").write_bytes(orjson.dumps(load("demo").model_dump(mode="json")))
    ents = [f"wn:n{i:08d}" for i in range(n_entities)]
    types = ents[:50]
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "id": e,
                    "name": f"entity {i}",
                    "aliases": [f"alias {i}"],
                    "description": f"description of {i}",
                    "root": ents[0],
                    "parents": [types[i % 50]],
                    "wordnet": e[3:],
                    "wordnet_name": f"entity_{i}.n.01",
                    "wikidata": None,
                    "taxon_name": None,
                    "common_names": [],
                    "depth": 3,
                }
                for i, e in enumerate(ents)
            ]
        ),
        root / "entities.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "entity_id": e,
                    "type_id": types[i % 50],
                    "type_name": f"entity {i % 50}",
                    "method": "kg:rule",
                }
                for i, e in enumerate(ents)
            ]
        ),
        root / "types.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "query_id": f"q{i}",
                    "kind": "entity",
                    "text": f"entity {i}",
                    "entity_id": e,
                    "attribute": None,
                    "decision": "unambiguous",
                }
                for i, e in enumerate(ents)
            ]
        ),
        root / "queries.parquet",
    )
    pictures = jpegs(64)
    (root / "shards").mkdir(exist_ok=True)
    cols: dict[str, list] = {
        c: []
        for c in (
            "key",
            "shard",
            "split",
            "sha256",
            "width",
            "height",
            "orig_width",
            "orig_height",
            "urls",
            "page_urls",
            "alt_texts",
            "query_ids",
            "entity_ids",
            "license",
            "attribution",
            "caption",
            "evidence",
        )
    }
    hits: list[str] = []
    for first in range(0, n, PER_SHARD):
        shard = f"shard-{first // PER_SHARD:05d}.tar"
        with tarfile.open(root / "shards" / shard, "w") as tar:
            for i in range(first, min(n, first + PER_SHARD)):
                key = f"{i:09d}"
                e = rng.randrange(n_entities)
                ids = [ents[e], types[e % 50]]
                qids = [f"q{e}"]
                alt = f"A photo of entity {e}, number {i}."
                meta = {
                    "key": key,
                    "alt_texts": [alt],
                    "queries": [
                        {
                            "id": qids[0],
                            "kind": "entity",
                            "text": f"entity {e}",
                            "entity_id": ents[e],
                            "attribute": None,
                            "natural_type": None,
                        }
                    ],
                    "entities": [
                        {
                            "id": ents[e],
                            "name": f"entity {e}",
                            "aliases": [],
                            "common_names": [],
                            "description": "d",
                            "natural_type": None,
                            "taxon_name": None,
                            "wikidata": None,
                            "wordnet": ents[e][3:],
                        }
                    ],
                }
                add_member(tar, f"{key}.jpg", pictures[i % 64])
                add_member(tar, f"{key}.txt", alt.encode())
                add_member(tar, f"{key}.json", orjson.dumps(meta))
                for c, v in (
                    ("key", key),
                    ("shard", shard),
                    ("split", "train"),
                    ("sha256", f"{i:064x}"),
                    ("width", 64),
                    ("height", 48),
                    ("orig_width", 640),
                    ("orig_height", 480),
                    ("urls", [f"https://example.org/{i}.jpg"]),
                    ("page_urls", []),
                    ("alt_texts", [alt]),
                    ("query_ids", qids),
                    ("entity_ids", ids),
                    ("license", "cc-by"),
                    ("attribution", "someone"),
                    ("caption", alt),
                    ("evidence", []),
                ):
                    cols[c].append(v)
                hits.append(qids[0])
    pq.write_table(pa.table(cols), root / "samples.parquet")
    pq.write_table(pa.table({"query_id": hits}), root / "hits.parquet")
    pq.write_table(
        pa.table(
            {
                "stage": ["fetch"] * 1000,
                "item": [f"https://example.org/x{i}" for i in range(1000)],
                "reason": ["too_small"] * 1000,
                "detail": ["10×10"] * 1000,
            }
        ),
        root / "rejected.parquet",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(client: httpx.Client, urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        t = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    return out


def write_fetched(root: Path, n: int) -> None:
    """Each sample's one copy as fetch records it: what the picture page's near-duplicate group reads."""
    pq.write_table(
        pa.table(
            {
                "url": [f"https://example.org/{i}.jpg" for i in range(n)],
                "status": ["ok"] * n,
                "orig_width": [640] * n,
                "orig_height": [480] * n,
                "source_bytes": [40_000 + i % 1000 for i in range(n)],
                "pixel_sha256": [f"{i:064x}" for i in range(n)],
                "phash": [i * 2654435761 % (1 << 63) for i in range(n)],
            }
        ),
        root / "fetched.parquet",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=50_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/kgclip-view-bench"))
    args = ap.parse_args()
    root = args.dir / f"work-{args.samples}"
    if not (root / "samples.parquet").is_file():
        t = time.perf_counter()
        make_workdir(root, args.samples, args.entities)
        print(
            f"synthetic workdir: {args.samples:,} samples, {args.entities:,} entities in "
            f"{time.perf_counter() - t:.0f} s at {root}"
        )
    if not (root / "fetched.parquet").is_file():
        write_fetched(root, args.samples)
    shutil.rmtree(root / "cache" / "view", ignore_errors=True)  # the index and thumbnails made anew
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from kgclip.view.index import "
            "open_index; open_index(Path(sys.argv[1]))",
            str(root),
        ],
        check=True,
    )
    print(f"index built once in {time.perf_counter() - t:.1f} s (a process of its own)")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kgclip.cli", "view", str(root), "--port", str(port)])
    try:
        rng = random.Random(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    client.get("/tree?q=zzz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.2)
            keys = [f"{rng.randrange(args.samples):09d}" for _ in range(args.requests)]
            ents = [f"wn:n{rng.randrange(args.entities):08d}" for _ in range(args.requests)]
            results = {
                "entity page": timed(client, [f"/entity/{e}" for e in ents]),
                "entity page 5": timed(
                    client, [f"/entity/wn:n{i % 50:08d}?page=5" for i in range(args.requests)]
                ),
                "picture page": timed(client, [f"/picture/{k}" for k in keys]),
                "image": timed(client, [f"/image/{k}.jpg" for k in keys]),
                "thumbnail (first)": timed(client, [f"/image/{k}.jpg?thumb=160" for k in keys[:50]]),
                "search": timed(
                    client, [f"/search?q=entity+{rng.randrange(args.entities)}" for _ in range(50)]
                ),
                "overview (first, then cached counts)": timed(client, ["/", "/"]),
            }
        for name, ms in results.items():
            q = statistics.quantiles(ms, n=20)[-1] if len(ms) >= 20 else max(ms)
            print(f"{name:38s} n={len(ms):4d} median {statistics.median(ms):7.1f} ms  p95 {q:7.1f} ms")
        print(f"server peak RSS: {peak_rss_mib(server.pid):.0f} MiB")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
