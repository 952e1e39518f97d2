"""Throughput of kgclip's Wikidata dump scan against raw decompression of the same file.

A synthetic dump in the real line format is generated with a realistic mix: most lines are
items selection never needs (scholarly articles with many citation claims, people, places), a
few percent are taxa (P171) and classes (P279), a few carry images. It is gzip-compressed,
then timed in the same run, for each available decompressor (`gzip -dc`, and `pigz -dc` when
installed), with the same decompressor on both sides:

- the peer: `DECOMPRESSOR FILE > /dev/null` (pure decompression, the floor for any reader);
- kgclip: `scan()` with that decompressor forced, its prefilter and process pool, selecting animals.

The ratio is decompression time / scan time per decompressor; the goal is >= 0.5x (scan at least
half as fast as just decompressing). Left alone, kgclip uses the first installed of pigz, gzip.

    .venv/bin/python benchmarks/wikidata_dump.py [--mb 400] [--workers 0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from kgclip.kg.wikidata import dump as dump_module
from kgclip.kg.wikidata.dump import decompressor, scan
from kgclip.kg.wikidata.rules import RootRule
from kgclip.kg.wikidata.select import select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import describe, tool_version

LANGS = ["en", "de", "fr", "es", "it", "nl", "pl", "ru", "ja", "zh", "pt", "sv"]


# Statement ids and reference hashes are random in real dumps; they keep gzip from compressing the
# synthetic file far better than the real one (~10x), which would make decompression look too fast.
NOISE = random.Random(1)


def snak(prop: str, value: object, kind: str = "wikibase-entityid", datatype: str = "wikibase-item") -> dict:
    return {
        "id": f"Q1${NOISE.getrandbits(128):032X}",
        "mainsnak": {
            "snaktype": "value",
            "property": prop,
            "datavalue": {"value": value, "type": kind},
            "datatype": datatype,
        },
        "type": "statement",
        "rank": "normal",
        "references": [
            {
                "hash": f"{NOISE.getrandbits(160):040x}",
                "snaks": {"P248": [{"snaktype": "value", "property": "P248"}]},
            }
        ],
    }


def item_ref(qid: int) -> dict:
    return {"entity-type": "item", "numeric-id": qid, "id": f"Q{qid}"}


def entity(qid: int, label: str, claims: dict[str, list[dict]], sitelinks: int, rng: random.Random) -> dict:
    langs = LANGS[: rng.randint(2, len(LANGS))]
    return {
        "type": "item",
        "id": f"Q{qid}",
        "labels": {
            lang: {"language": lang, "value": f"{label} {lang}" if lang != "en" else label} for lang in langs
        },
        "descriptions": {lang: {"language": lang, "value": f"description of {label}"} for lang in langs},
        "aliases": {"en": [{"language": "en", "value": f"{label} alias"}]},
        "claims": claims,
        "sitelinks": {
            f"{lang}wiki": {"site": f"{lang}wiki", "title": label, "badges": []} for lang in langs[:sitelinks]
        },
        "lastrevid": qid,
    }


def line_for(qid: int, rng: random.Random, taxa: list[int], classes: list[int]) -> dict:
    roll = rng.random()
    if roll < 0.05:  # a taxon under animal, sometimes with an image
        parent = rng.choice(taxa)
        taxa.append(qid)
        claims = {
            "P31": [snak("P31", item_ref(16521))],
            "P171": [snak("P171", item_ref(parent))],
            "P225": [snak("P225", f"Taxon {qid}", "string", "string")],
        }
        if rng.random() < 0.5:
            claims["P18"] = [snak("P18", f"Taxon {qid}.jpg", "string", "commonsMedia")]
        return entity(qid, f"taxon {qid}", claims, rng.randint(1, 8), rng)
    if roll < 0.08:  # a class under animal (or elsewhere)
        parent = rng.choice(classes) if rng.random() < 0.5 else 35120
        classes.append(qid)
        claims = {"P279": [snak("P279", item_ref(parent))]}
        if rng.random() < 0.3:
            claims["P18"] = [snak("P18", f"Class {qid}.jpg", "string", "commonsMedia")]
        return entity(qid, f"class {qid}", claims, rng.randint(1, 12), rng)
    if roll < 0.11:  # a place with an image
        claims = {
            "P31": [snak("P31", item_ref(515))],
            "P18": [snak("P18", f"Place {qid}.jpg", "string", "commonsMedia")],
            "P625": [
                snak(
                    "P625",
                    {
                        "latitude": 1.0,
                        "longitude": 2.0,
                        "precision": 0.01,
                        "globe": "http://www.wikidata.org/entity/Q2",
                    },
                    "globecoordinate",
                    "globe-coordinate",
                )
            ],
        }
        return entity(qid, f"place {qid}", claims, rng.randint(1, 12), rng)
    cites = [snak("P2860", item_ref(rng.randint(1, 10**8))) for _ in range(rng.randint(5, 40))]
    return entity(qid, f"article {qid}", {"P31": [snak("P31", item_ref(13442814))], "P2860": cites}, 0, rng)


def make_dump(path: Path, megabytes: int) -> int:
    rng = random.Random(0)
    taxa, classes = [729], [729]
    written = lines = 0
    with gzip.open(path, "wb", compresslevel=6) as out:
        out.write(b"[\n")
        qid = 1_000_000
        while written < megabytes << 20:
            data = orjson.dumps(line_for(qid, rng, taxa, classes)) + b",\n"
            out.write(data)
            written += len(data)
            lines += 1
            qid += 1
        out.write(orjson.dumps(entity(qid, "last", {}, 0, rng)) + b"\n]\n")
    return lines


def peer(cmd: list[str], dump: Path) -> float:
    began = time.perf_counter()
    with open("/dev/null", "wb") as sink:
        subprocess.run([*cmd, str(dump)], stdout=sink, check=True)
    return time.perf_counter() - began


def ours(cmd: list[str], dump: Path, workers: int) -> tuple[float, str]:
    """Scan + select with `cmd` as kgclip's only .gz decompressor; seconds and what was found."""
    saved = dump_module.DECOMPRESSORS[".gz"]
    dump_module.DECOMPRESSORS[".gz"] = [cmd]
    try:
        assert decompressor(dump) == cmd
        began = time.perf_counter()
        result = scan(dump, require_image=True, workers=workers)
        chosen, _ = select(result.candidates, result.graph, [RootRule(729, "animal")], cap=None)
        seconds = time.perf_counter() - began
        result.candidates.close()
    finally:
        dump_module.DECOMPRESSORS[".gz"] = saved
    return seconds, (
        f"{result.lines:,} lines, {result.parsed:,} parsed after prefilter, "
        f"{len(result.candidates):,} candidates, {len(chosen):,} selected"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=400, help="decompressed size of the synthetic dump")
    parser.add_argument("--workers", type=int, default=0, help="kgclip's scan processes (0: one per core)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each side; medians")
    args = parser.parse_args()
    available = [cmd for cmd in dump_module.DECOMPRESSORS[".gz"] if shutil.which(cmd[0])]
    if not available:
        sys.exit("no gzip decompressor installed")
    print(
        describe(
            decompressors=", ".join(f"{c[0]} ({tool_version([c[0], '--version'])})" for c in available)
            + "; pigz not installed" * (not shutil.which("pigz")),
            kgclip_default=" ".join(decompressor(Path("latest-all.json.gz")) or ["python gzip"]),
            dump=f"synthetic, {args.mb} MiB decompressed, gzip level 6",
            workers=args.workers or "one per core",
            rounds=f"{args.rounds} alternating (peer, kgclip) per decompressor; medians",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "latest-all.json.gz"
        began = time.perf_counter()
        lines = make_dump(dump, args.mb)
        print(
            f"synthetic dump: {lines:,} lines, {args.mb} MiB decompressed, "
            f"{dump.stat().st_size >> 20} MiB gzip (made in {time.perf_counter() - began:.0f}s)"
        )
        results = []
        for cmd in available:
            raw, scanned, found = [], [], ""
            for r in range(args.rounds):
                raw.append(peer(cmd, dump))
                seconds, found = ours(cmd, dump, args.workers)
                scanned.append(seconds)
                print(f"  {cmd[0]} round {r + 1}: {' '.join(cmd)} > /dev/null {raw[-1]:.2f}s, "
                      f"kgclip scan + select {seconds:.2f}s")  # fmt: skip
            ratios = sorted(a / b for a, b in zip(raw, scanned, strict=True))
            results.append((cmd, statistics.median(raw), statistics.median(scanned), found, ratios))
    for cmd, raw, scanned, found, ratios in results:
        name = " ".join(cmd)
        print(f"{name}: decompression alone {raw:.2f}s ({args.mb / raw:.0f} MiB/s); kgclip scan + select "
              f"{scanned:.2f}s ({args.mb / scanned:.0f} MiB/s); {found}")  # fmt: skip
        print(f"  ratio (decompression time / kgclip time) = {raw / scanned:.2f}x; goal >= 0.5x -> "
              f"{'met' if raw / scanned >= 0.5 else 'NOT met'}; per round "
              f"{', '.join(f'{r:.2f}x' for r in ratios)}")  # fmt: skip


if __name__ == "__main__":
    main()
