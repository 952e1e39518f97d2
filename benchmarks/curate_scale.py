"""Curate's peak memory and CPU time at N pictures, on a synthetic work directory.

    python benchmarks/curate_scale.py make /tmp/cur/20k --images 20000
    python benchmarks/curate_scale.py run /tmp/cur/20k [--src /tmp/old/src] [--src src]
    python benchmarks/curate_scale.py run /tmp/cur/100k --executor local --executor ray

`make` writes what the curate stage reads, without fetching anything: entities, natural types and
queries (one entity query per entity, an attribute query for every tenth), `fetched.parquet`
(N distinct pictures; one in ten served under a second URL, one in twenty-five a near copy with a
perceptual hash a few bits away, plus one failed URL per twenty), `hits.parquet` (one or two
queries per URL, alt texts, licences, page URLs, evidence on half) and the fetch parts (every
member the same small JPEG: curate copies bytes, it does not decode them). Entities grow as N / 20
unless `--entities` fixes their number (to tell what grows with pictures from what grows with
entities, which curate may keep).

`run` runs the curate stage once per `--src` (a `src/` folder with kgclip in it: the code to
measure; several compare old and new code on the same inputs) and per `--executor` (`local`, or
`ray`: the shards written by Ray tasks on this machine, `--shards-per-task` each) in a fresh process
each, and prints wall and CPU seconds, CPU milliseconds per picture and the process's peak RSS (for
Ray, the curate process's: its workers are Ray's); with several runs it also checks that
`samples.parquet`, `rejected.parquet`, every shard and the card are byte-identical between them.
The work directory is copied per run (the stage writes into it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOTS = 5
PER_PART = 2000
LICENCES = ["CC BY 4.0", "cc0", "CC BY-SA 4.0", None, "by-nc", "public domain"]


def make(work: Path, images: int, seed: int = 0, entities: int = 0) -> None:
    from kgclip.tables import Entity, Fetched, Hit, NaturalType, Query

    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    n_entities = entities or max(50, images // 20)
    entity_rows = []
    for i in range(n_entities):
        root = f"e{i % ROOTS:06d}"
        entity_rows.append(
            {
                "id": f"e{i:06d}",
                "name": f"entity {i}",
                "aliases": [f"alias {i}"],
                "description": f"a made-up living thing number {i}",
                "root": root,
                "parents": [] if i < ROOTS else [root],
                "is_leaf": i >= ROOTS,
                "wordnet": f"thing.n.{i:05d}",
                "common_names": [],
                "sources": ["synthetic"],
                "external_ids": [],
                "kg_hints": [],
            }
        )
    _write(work / "entities.parquet", entity_rows, Entity.SCHEMA)
    n_types = max(5, n_entities // 25)
    type_rows = [
        {
            "entity_id": f"e{i:06d}",
            "type_id": f"t{i % n_types:05d}",
            "type_name": f"type {i % n_types}",
            "type_aliases": [],
            "type_description": "a kind of thing",
            "method": "synthetic",
        }
        for i in range(n_entities)
    ]
    _write(work / "types.parquet", type_rows, NaturalType.SCHEMA)
    params = {"or_terms": [], "exclude_terms": [], "photo_only": False}
    query_rows = [
        {"query_id": f"q{i:06d}", "kind": "entity", "text": f"entity {i}", "entity_id": f"e{i:06d}",
         "attribute": None, "params": params, "ambiguity": "none", "decision": "unambiguous", "senses": []}
        for i in range(n_entities)
    ]
    query_rows += [
        {"query_id": f"a{i:06d}", "kind": "entity_attribute", "text": f"red entity {i}",
         "entity_id": f"e{i:06d}", "attribute": "red", "params": params, "ambiguity": "none",
         "decision": "unambiguous", "senses": []}
        for i in range(0, n_entities, 10)
    ]
    _write(work / "queries.parquet", query_rows, Query.SCHEMA)

    jpeg = _jpeg()
    parts = work / "parts"
    parts.mkdir(exist_ok=True)
    urls: list[tuple[str, int]] = []  # (url, picture) in fetch order
    for p in range(images):
        urls.append((f"https://img{p % 97}.example.org/{p:08d}/{rng.getrandbits(40):010x}.jpg", p))
        if p % 10 == 3:
            urls.append((f"https://mirror.example.net/{p:08d}.jpg", p))
    rng.shuffle(urls)
    base_phash = [rng.getrandbits(63) for _ in range(images)]
    for p in range(25, images, 25):  # a near copy of the picture before it
        flip = 0
        for b in rng.sample(range(63), 3):
            flip |= 1 << b
        base_phash[p] = base_phash[p - 1] ^ flip
    colour = [rng.getrandbits(24) for _ in range(images)]
    for p in range(25, images, 25):
        colour[p] = colour[p - 1]
    fetched = {name: [] for name in Fetched.SCHEMA.names}
    member_no = 0
    tar = None
    for k, (url, p) in enumerate(urls):
        part_no, index = divmod(member_no, PER_PART)
        part = f"0123abcd-{part_no:05d}.tar"
        if index == 0:
            if tar is not None:
                tar.close()
            tar = tarfile.open(parts / part, "w")  # noqa: SIM115 - closed when the next part starts
        member = f"{part_no:05d}{index:05d}"
        info = tarfile.TarInfo(f"{member}.jpg")
        info.size = len(jpeg)
        tar.addfile(info, io.BytesIO(jpeg))
        member_no += 1
        size = 256 + p % 200
        row = {
            "url": url, "status": "ok", "reason": None, "detail": None, "part": part, "member": member,
            "orig_width": size * 2, "orig_height": size * 2, "width": size, "height": size,
            "bytes": len(jpeg), "source_sha256": hashlib.sha256(url.encode()).hexdigest(),
            "pixel_sha256": hashlib.sha256(f"picture {p}".encode()).hexdigest(),
            "source_bytes": 4 * len(jpeg), "http_status": 200, "attempts": 1,
            "download_s": 0.1, "decode_s": 0.01, "phash": base_phash[p], "colour": colour[p], "runs": None,
        }
        for name in Fetched.SCHEMA.names:
            fetched[name].append(row[name])
        if k % 20 == 7:  # a failed URL beside it
            bad = {name: None for name in Fetched.SCHEMA.names}
            bad.update(url=f"https://gone.example.com/{k:08d}.jpg", status="rejected", reason="http_404",
                       detail="HTTP 404", http_status=404, attempts=1)
            for name in Fetched.SCHEMA.names:
                fetched[name].append(bad[name])
    if tar is not None:
        tar.close()
    pq.write_table(pa.table(fetched, schema=Fetched.SCHEMA), work / "fetched.parquet", compression="zstd")

    hits = {name: [] for name in Hit.SCHEMA.names}
    ok_urls = sorted(u for u, _ in urls)
    for url in ok_urls:
        e = rng.randrange(n_entities)
        chosen = [f"q{e:06d}"] + ([f"a{e - e % 10:06d}"] if rng.random() < 0.3 else [])
        for q in chosen:
            evidence = (
                orjson.dumps({"field": "caption", "words": [f"entity {e}"], "subject": True}).decode()
                if rng.random() < 0.5 else None
            )
            row = {
                "query_id": q, "backend": "corpus", "rank": rng.randrange(500), "url": url,
                "page_url": url.replace(".jpg", ".html"),
                "alt_text": f"a photo of entity {e}, seen from the side {rng.getrandbits(20)}"
                if rng.random() < 0.8 else "",
                "width": None, "height": None, "license": rng.choice(LICENCES),
                "attribution": f"photographer {rng.randrange(5000)}", "evidence": evidence,
            }
            for name in Hit.SCHEMA.names:
                hits[name].append(row[name])
    pq.write_table(pa.table(hits, schema=Hit.SCHEMA), work / "hits.parquet", compression="zstd")
    print(f"{work}: {images:,} pictures, {len(urls):,} URLs, {len(hits['url']):,} hits, "
          f"{n_entities:,} entities, {member_no // PER_PART + 1} parts")


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 160, 90)).save(out, "JPEG", quality=80)
    return out.getvalue()


CHILD = """
import sys, time, resource
from pathlib import Path
from kgclip.config import load
from kgclip.config import CurateConfig
from kgclip.curate import stage
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir
config = load("demo")
how = {"executor": sys.argv[2], "shards_per_task": int(sys.argv[3])}
how = {k: v for k, v in how.items() if v not in ("local", 0)}  # code before Ray curate has neither
update = {"curate": CurateConfig(**how)}
if sys.argv[2] == "ray":
    update["ray"] = config.ray.model_copy(update={"num_cpus": 0})  # every core
config = config.model_copy(update=update)
began = time.monotonic()
result = stage.run(StageContext(config, Workdir(Path(sys.argv[1]))))
print("ROWS", result.rows, "WALL", time.monotonic() - began)
"""


def run(work: Path, sources: list[Path], executors: list[str], shards_per_task: int, keep: bool) -> None:
    pictures = pq.read_metadata(work / "fetched.parquet").num_rows
    outputs = []
    for n, (src, executor) in enumerate((s, e) for s in sources for e in executors):
        copy = work.with_name(f"{work.name}.run{n}")
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        for item in work.iterdir():  # the parts are only read: link them
            (copy / item.name).symlink_to(item) if item.name == "parts" else shutil.copy(item, copy)
        env = {**os.environ, "PYTHONPATH": str(src.resolve())}
        began = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(copy), executor, str(shards_per_task)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - began
        if status != 0:
            sys.exit(f"curate with {src} ({executor}) failed ({status})")
        rows = int(out.split("ROWS", 1)[1].split()[0])
        cpu = usage.ru_utime + usage.ru_stime
        print(
            f"{src} ({executor}): {rows:,} samples from {pictures:,} fetched rows; "
            f"wall {wall:.1f} s, CPU {cpu:.1f} s "
            f"({1000 * cpu / rows:.3f} ms per sample), peak RSS {usage.ru_maxrss / 1024:.0f} MiB",
            flush=True,
        )
        outputs.append(copy)
    if len(outputs) > 1:
        first = _digests(outputs[0])
        for other in outputs[1:]:
            theirs = _digests(other)
            differ = sorted(k for k in set(first) | set(theirs) if first.get(k) != theirs.get(k))
            same_rows = [  # a table past one row group (65,536 rows): same rows, other row groups
                k for k in differ
                if k.endswith(".parquet") and pq.read_table(outputs[0] / k).equals(pq.read_table(other / k))
            ]
            other_bytes = [k for k in differ if k not in same_rows]
            verdict = "byte-identical" if not differ else f"DIFFER {other_bytes}"
            if same_rows:
                verdict += f"; same rows, other bytes: {same_rows}"
            print(f"{other.name} vs {outputs[0].name}: {verdict}", flush=True)
    if not keep:
        for copy in outputs:
            shutil.rmtree(copy)


def _digests(work: Path) -> dict[str, str]:
    names = ["samples.parquet", "rejected.parquet"]
    names += [str(p.relative_to(work)) for p in sorted((work / "card").rglob("*"))]
    names += [f"shards/{p.name}" for p in sorted((work / "shards").iterdir())]
    names += [f"val/{p.name}" for p in sorted((work / "val").iterdir())] if (work / "val").is_dir() else []
    return {n: hashlib.sha256((work / n).read_bytes()).hexdigest() for n in names if (work / n).is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("work", type=Path)
    m.add_argument("--images", type=int, default=20_000)
    m.add_argument("--entities", type=int, default=0, help="default: one per 20 pictures, at least 50")
    r = sub.add_parser("run")
    r.add_argument("work", type=Path)
    r.add_argument("--src", type=Path, action="append", help="a src/ folder to measure (repeatable)")
    r.add_argument(
        "--executor", choices=["local", "ray"], action="append", help="how to write the shards (repeatable)"
    )
    r.add_argument("--shards-per-task", type=int, default=0, help="[curate] shards_per_task")
    r.add_argument("--keep", action="store_true", help="keep the copies the runs wrote into")
    args = parser.parse_args()
    if args.command == "make":
        make(args.work, args.images, entities=args.entities)
    else:
        sources = args.src or [Path(__file__).resolve().parents[1] / "src"]
        run(args.work, sources, args.executor or ["local"], args.shards_per_task, args.keep)


if __name__ == "__main__":
    main()
