"""The curate stage's options on the demo: the dataset card, the licence filter (and the licence
travelling with the pixels kept), balancing, and reproducibility (same config, seed and inputs give
the same samples, shard and card bytes, in any process)."""

import csv
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

import kgclip
from kgclip.cli import _run
from kgclip.config import load, parse
from kgclip.curate import stage as curate_stage
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir


def curate_with(work, **curate):
    raw = orjson.loads((work / "config.json").read_bytes())
    raw["curate"].update(curate)
    return curate_stage.run(StageContext(parse(raw), Workdir(work)))


def test_the_demo_has_a_dataset_card_with_plots(demo_run):
    card = (demo_run / "card" / "README.md").read_text()
    sections = ("Pictures per root", "Entities and types", "Texts", "Licences", "Curation")
    assert all(f"## {section}" in card for section in sections)
    assert "| living thing (wn:n00004258) |" in card and "| GPL-2 |" in card and "| too_small | 2 |" in card
    for plot in ("contact_sheet", "images_per_entity", "coverage_per_type"):
        with Image.open(demo_run / "card" / f"{plot}.png") as image:
            assert image.format == "PNG" and image.width > 300
        assert f"({plot}.png)" in card
    # one root, one licence, one rejection reason: their tables say it all, no one-bar charts
    for single in ("pictures_per_root", "licences", "rejections"):
        assert not (demo_run / "card" / f"{single}.png").exists() and f"{single}.png" not in card
    stats = Workdir(demo_run).load_manifest()["curate"].stats
    queries = pq.read_table(demo_run / "queries.parquet").to_pylist()
    queried = {q["entity_id"] for q in queries if q["entity_id"]}
    selected = pq.read_table(demo_run / "entities.parquet").num_rows
    covered = stats["entities_covered"]
    assert (
        f"| living thing (wn:n00004258) | {selected:,} | {len(queried):,} | {covered:,} | "
        f"{covered / selected:.1%} |" in card
    )
    rows = (demo_run / "card" / "entity_counts.csv").read_text().splitlines()
    assert rows[0] == "entity,name,root,type,pictures_before_balancing,pictures"
    assert len(rows) - 1 == Workdir(demo_run).load_manifest()["curate"].stats["entities_covered"]


def test_licence_filter_drops_and_records(demo_copy):
    kept = curate_with(demo_copy, licenses=["gpl-2"])
    assert kept.rows == 187
    none = curate_with(demo_copy, licenses=["cc0", "cc-by"])
    assert none.rows == 0 and list((demo_copy / "shards").glob("*.tar")) == []
    rejected = pq.read_table(demo_copy / "rejected.parquet").to_pylist()
    licence = [r for r in rejected if r["reason"] == "licence"]
    assert len(licence) >= 187 and licence[0]["detail"] == "GPL-2 is not among cc0, cc-by"


def _koala_picture() -> Image.Image:
    rng = random.Random(14)
    image = Image.linear_gradient("L").resize((900, 700)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, w, h = rng.randrange(900), rng.randrange(700), rng.randrange(150, 500), rng.randrange(150, 500)
        draw.ellipse(
            (x - w // 2, y - h // 2, x + w // 2, y + h // 2), fill=tuple(rng.choices(range(256), k=3))
        )
    return image


@pytest.fixture(scope="module")
def bob_run(tmp_path_factory):
    """The reported case harvested: a large koala picture with no licence, and a small cropped
    copy of it under CC0 by Bob, which near-duplicate merging makes one sample."""
    folder = tmp_path_factory.mktemp("bob")
    large = _koala_picture()
    large.save(folder / "large.png")
    large.crop((20, 15, 880, 685)).resize((400, 312)).save(folder / "bob.png")
    with open(folder / "corpus.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption", "license", "attribution", "page_url"])
        writer.writerow(["large.png", "A koala in a tree.", "", "", ""])
        writer.writerow(["bob.png", "Koala, photographed by Bob.", "CC0", "Bob", "https://bob.example/koala"])
    config = folder / "bob.toml"
    config.write_text(
        'extends = "demo"\nname = "bob"\n'
        f'[search.corpus]\nsource = "{folder / "corpus.csv"}"\nimporter = "table"\n'
    )
    work = folder / "work"
    _run(load(config), work)
    return work


def _only_sample(work):
    [sample] = pq.read_table(work / "samples.parquet").to_pylist()
    [shard] = sorted((work / "shards").glob("*.tar"))
    with tarfile.open(shard) as tar:
        meta = orjson.loads(tar.extractfile(f"{sample['key']}.json").read())
        with Image.open(tar.extractfile(f"{sample['key']}.jpg")) as image:
            size = image.size
    assert (meta["license"], meta["attribution"]) == (sample["license"], sample["attribution"])
    return sample, size


def test_merged_copies_carry_the_licence_of_the_pixels_kept(bob_run):
    stats = Workdir(bob_run).load_manifest()["curate"].stats
    assert stats["near_duplicates_merged"] == 1
    sample, size = _only_sample(bob_run)
    assert size == (658, 512) and sample["urls"][0].endswith("/large.png")  # the larger pixels
    assert (sample["license"], sample["attribution"]) == ("unknown", None)  # not Bob's CC0
    assert sample["page_urls"] == ["https://bob.example/koala"]  # still listed, with every text


def test_a_licence_filter_keeps_the_licensed_copys_pixels(bob_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(bob_run, work)
    assert curate_with(work, licenses=["cc0"]).rows == 1
    sample, size = _only_sample(work)
    assert size == (400, 312) and sample["urls"][0].endswith("/bob.png")  # Bob's own pixels
    assert (sample["license"], sample["attribution"]) == ("CC0-1.0", "Bob")
    assert sample["page_urls"][0] == "https://bob.example/koala"
    assert sorted(sample["alt_texts"]) == ["A koala in a tree.", "Koala, photographed by Bob."]
    assert curate_with(work, licenses=["cc-by"]).rows == 0
    refused = pq.read_table(work / "rejected.parquet").to_pylist()
    names = {r["item"].rsplit("/", 1)[1] for r in refused if r["reason"] == "licence"}
    assert names == {"large.png", "bob.png"}


def test_balancing_caps_entities_and_records_the_counts(demo_copy):
    result = curate_with(demo_copy, max_per_entity=3)
    assert 0 < result.stats["balanced_out"] < 187
    rows = (demo_copy / "card" / "entity_counts.csv").read_text().splitlines()[1:]
    before_after = [tuple(map(int, r.rsplit(",", 2)[1:])) for r in rows]
    assert any(b > 3 for b, _ in before_after) and all(a <= b for b, a in before_after)
    reasons = {r["reason"] for r in pq.read_table(demo_copy / "rejected.parquet").to_pylist()}
    assert "balanced_out" in reasons


# Three pictures, each named by entities of about ten natural types: 33 types, nearly all with one
# picture, so the card's type ranking ties across its top-20 cut, among types first seen together
# in one sample's set of types (whose order follows the process's string hash seed).
TIED_TYPES = [
    "A bullfrog, a mallard, a housefly, a bumblebee, a fire ant, a bunny, a sewer rat, a harvest mouse, "
    "a warhorse and a bullock.",
    "A ewe, a lambkin, a gerenuk, a vervet, a clematis, a peony, some bunchgrass, an osier, an ergot "
    "and a mouser.",
    "A griffon vulture, a flea, some moss, a timber rattlesnake, a hognose snake, a pullet, a capon, "
    "a heifer, a katydid and a pinon.",
    "A koala, a walrus, a toucan, a cobra, a tulip, a saguaro, a lobster, an octopus, a starfish "
    "and a salmon.",
]


def _tied_types_config(folder) -> str:
    """A demo harvest of the TIED_TYPES pictures (plain coloured rectangles, one per caption)."""
    with open(folder / "corpus.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption"])
        for i, caption in enumerate(TIED_TYPES):
            rng = random.Random(i)
            image = Image.new("RGB", (320, 240), tuple(rng.choices(range(256), k=3)))
            draw = ImageDraw.Draw(image)
            for _ in range(5):
                x, y = rng.randrange(320), rng.randrange(240)
                box = (x, y, x + rng.randrange(40, 160), y + rng.randrange(40, 120))
                draw.rectangle(box, fill=tuple(rng.choices(range(256), k=3)))
            image.save(folder / f"{i}.png")
            writer.writerow([f"{i}.png", caption])
    config = folder / "ties.toml"
    config.write_text(
        'extends = "demo"\nname = "ties"\n'
        f'[search.corpus]\nsource = "{folder / "corpus.csv"}"\nimporter = "table"\n'
        'match = "anywhere"\n'  # captions that list many things, each found by its name
    )
    return str(config)


def _harvest_with_hash_seed(seed: str, runs: list[tuple[str, str]], out) -> None:
    """Harvest each (name, config) into out/name in a fresh interpreter with this string hash seed."""
    source = str(Path(kgclip.__file__).parents[1])  # the code under test, installed or not
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": path}
    for name, config in runs:
        done = subprocess.run(
            [sys.executable, "-m", "kgclip.cli", "harvest", config, "-w", str(out / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _digests(work) -> dict[str, str]:
    """sha256 of the tables, every card and shard file, and every member of every shard."""
    files = [work / "samples.parquet", work / "rejected.parquet"]
    files += sorted(p for folder in ("card", "shards") for p in (work / folder).iterdir())
    found = {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    for tar in sorted((work / "shards").glob("*.tar")):
        for name, data in _members(tar):
            found[f"{tar.name}:{name}"] = hashlib.sha256(data).hexdigest()
    return found


def test_outputs_are_byte_identical_under_any_string_hash_seed(tmp_path):
    """The demo and a harvest whose card ranks tied types, each harvested in two processes with
    different PYTHONHASHSEED: samples, rejections, every shard member, sizes.json and the whole
    card (README, plots, entity counts) are the same bytes."""
    (tmp_path / "ties").mkdir()
    runs = [("demo", "demo"), ("ties", _tied_types_config(tmp_path / "ties"))]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda seed: _harvest_with_hash_seed(seed, runs, tmp_path / seed), ("1", "2")))
    for name, _ in runs:
        one, two = _digests(tmp_path / "1" / name), _digests(tmp_path / "2" / name)
        assert any(k.endswith(".jpg") for k in one) and "card/README.md" in one
        assert one == two, name
    # the ties are really there: the type ranked 20th has as many pictures as the 21st
    work = tmp_path / "1" / "ties"
    types = {t["entity_id"]: t["type_name"] for t in pq.read_table(work / "types.parquet").to_pylist()}
    samples = pq.read_table(work / "samples.parquet").to_pylist()
    per_type = Counter(t for s in samples for t in {types[e] for e in s["entity_ids"] if e in types})
    counts = sorted(per_type.values(), reverse=True)
    assert len(counts) > 21 and counts[19] == counts[20]


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
