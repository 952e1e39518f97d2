"""The Wikidata fixture (tests/fixtures/wikidata) in the real dump layout, and the method's roots."""

from __future__ import annotations

import bz2
import gzip
import subprocess
from pathlib import Path

import orjson

from kgclip.kg.wikidata.rules import RootRule

FIXTURE = Path(__file__).parent / "fixtures" / "wikidata"
EXPECTED = orjson.loads((FIXTURE / "expected.json").read_bytes())
ANIMAL = RootRule(729, "animal", exclude_classes=(5, 24334299, 795052))
PLANT = RootRule(
    756, "plant", exclude_classes=(4886, 795052), exclude_with=("P625",), product_classes=(3314483, 1364)
)
ROOTS_TOML = """
[[entities.wikidata.roots]]
qid = "Q729"
name = "animal"
exclude_classes = ["Q5", "Q24334299", "Q795052"]

[[entities.wikidata.roots]]
qid = "Q756"
name = "plant"
exclude_classes = ["Q4886", "Q795052"]
exclude_with = ["P625"]
product_classes = ["Q3314483", "Q1364"]
"""


def entities() -> list[dict]:
    return [
        orjson.loads(line) for line in (FIXTURE / "items.jsonl").read_bytes().splitlines() if line.strip()
    ]


def dump_bytes() -> bytes:
    """`[`, one entity per line each ending in a comma except the last, `]`: the real layout."""
    lines = [line for line in (FIXTURE / "items.jsonl").read_bytes().splitlines() if line.strip()]
    return b"[\n" + b",\n".join(lines) + b"\n]\n"


def write_dump(directory: Path, suffix: str = ".gz") -> Path:
    data = dump_bytes()
    path = directory / f"latest-all.json{suffix}"
    if suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif suffix == ".bz2":
        path.write_bytes(bz2.compress(data))
    elif suffix == ".zst":
        plain = directory / "plain.json"
        plain.write_bytes(data)
        subprocess.run(["zstd", "-q", "-f", str(plain), "-o", str(path)], check=True)
    else:
        path.write_bytes(data)
    return path


def expected_qids(root: str, require_image: bool) -> set[int]:
    key = "selected_with_image" if require_image else "selected_without_image_requirement"
    return {int(q[1:]) for q in EXPECTED[root][key]}
