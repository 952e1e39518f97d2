"""A real, offline zero-shot photo set: the animal photos of Debian's gcompris-qt-data.

GCompris (an educational suite) ships high-quality photos, mostly from Wikimedia Commons, inside
Qt resource bundles (`/usr/share/gcompris-qt/rcc/*.rcc`, read by eval/rcc.py). The package data
file `eval/data/gcompris.csv` maps each real animal photo (not the cartoons, not the object
photos) to a WordNet 3.0 noun synset, with the licence, author and source the bundle's README
gives; docs/eval-gcompris.md records how that mapping was reviewed. The mapping was made against
gcompris-qt-data 3.1: a later package that moves or drops a photo is an error naming it, never a
silently smaller set.

The set has no templates of its own: the evaluation runner chooses the prompts.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow.parquet as pq

from kgclip.curate.decontam import EvalIndex, build_index
from kgclip.eval.rcc import RccError, RccFile
from kgclip.eval.sets import CLASSIFICATION, ClassInfo, EvalSet, EvalSetError, Item, fingerprint_of
from kgclip.eval.wds import write_wds
from kgclip.fetch.images import ImageOptions, Rejection, normalize
from kgclip.localfiles import read_regular
from kgclip.search.importers import Skipped, import_source
from kgclip.workdir import atomic_path

RCC_DIR = Path("/usr/share/gcompris-qt/rcc")
PACKAGE = "gcompris-qt-data"
PACKAGE_VERSION = "3.1"  # the release whose bundles the mapping was reviewed against
NAME = "gcompris"
LICENSES_FILE = "LICENSES.md"


@dataclass(frozen=True)
class Photo:
    """One row of the mapping: where the photo is, what it shows, and whose it is."""

    rcc: str
    resource: str
    wnid: str
    synset: str
    class_name: str
    taxon: str
    licence: str
    author: str
    source_url: str
    note: str


COLUMNS = tuple(f.name for f in fields(Photo))
REQUIRED = ("rcc", "resource", "wnid", "class_name", "licence", "author")


def mapping_text() -> str:
    return resources.files("kgclip.eval").joinpath("data", "gcompris.csv").read_text(encoding="utf-8")


def load_mapping(text: str | None = None, where: str = "eval/data/gcompris.csv") -> list[Photo]:
    """The mapping's rows; a missing column or an empty required field names the line."""
    reader = csv.DictReader(io.StringIO(mapping_text() if text is None else text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise EvalSetError(f"{where}: missing column(s) {', '.join(missing)}")
    photos = []
    for line, row in enumerate(reader, start=2):
        photo = Photo(**{c: (row[c] or "").strip() for c in COLUMNS})
        empty = [c for c in REQUIRED if not getattr(photo, c)]
        if empty:
            raise EvalSetError(f"{where} line {line}: empty {', '.join(empty)}")
        photos.append(photo)
    if not photos:
        raise EvalSetError(f"{where}: no rows")
    return photos


def classes_of(photos: list[Photo]) -> tuple[list[ClassInfo], list[int]]:
    """One class per synset, in the order of first appearance, and each photo's label.

    A synset with two display names would make two classes of one concept: that is an error.
    """
    index: dict[str, int] = {}
    classes: list[ClassInfo] = []
    labels = []
    for photo in photos:
        if photo.wnid not in index:
            index[photo.wnid] = len(classes)
            classes.append(ClassInfo(photo.class_name, wnid=photo.wnid))
        cls = classes[index[photo.wnid]]
        if cls.name != photo.class_name:
            raise EvalSetError(f"{photo.resource}: {photo.wnid} named {photo.class_name!r} and {cls.name!r}")
        labels.append(index[photo.wnid])
    return classes, labels


def gcompris_set(rcc_dir: Path = RCC_DIR, photos: list[Photo] | None = None) -> EvalSet:
    """The photos as an EvalSet, after checking that every mapped resource is installed."""
    photos = load_mapping() if photos is None else photos
    rcc_dir = Path(rcc_dir)
    bundles = _open_bundles(rcc_dir, sorted({p.rcc for p in photos}))
    absent = [f"{p.rcc}:{p.resource}" for p in photos if p.resource not in bundles[p.rcc].entries]
    if absent:
        raise EvalSetError(
            f"{rcc_dir}: {len(absent)} mapped photo(s) missing, first {absent[0]}; the mapping was made "
            f"for {PACKAGE} {PACKAGE_VERSION} (see docs/eval-gcompris.md to review it for another version)"
        )
    classes, labels = classes_of(photos)
    paths = sorted(bundles)
    stats = [(name, (rcc_dir / name).stat().st_size, (rcc_dir / name).stat().st_mtime_ns) for name in paths]

    def items() -> Iterator[Item]:
        opened = _open_bundles(rcc_dir, paths)  # read when the images are wanted, not when listed
        for photo, label in zip(photos, labels, strict=True):
            bundle = opened[photo.rcc]
            yield Item(_key(photo), _reader(bundle, photo.resource), label=label)

    return EvalSet(
        name=NAME,
        task=CLASSIFICATION,
        classes=classes,
        items=items,
        fingerprint=fingerprint_of(NAME, [(p.rcc, p.resource, p.wnid) for p in photos], stats),
        source=f"{NAME}:{rcc_dir}",
    )


def _open_bundles(rcc_dir: Path, names: list[str]) -> dict[str, RccFile]:
    if not rcc_dir.is_dir() or not any(rcc_dir.glob("*.rcc")):
        raise EvalSetError(
            f"{rcc_dir}: no GCompris resource files; install them with `apt-get install {PACKAGE}` "
            f"(the mapping was made for version {PACKAGE_VERSION}) or pass --rcc-dir"
        )
    bundles = {}
    for name in names:
        path = rcc_dir / name
        if not path.is_file():
            raise EvalSetError(f"{path}: missing from {PACKAGE} (the mapping was made for {PACKAGE_VERSION})")
        try:
            bundles[name] = RccFile(path)
        except RccError as exc:
            raise EvalSetError(str(exc)) from None
    return bundles


def _reader(bundle: RccFile, resource: str) -> Callable[[], bytes]:
    return lambda: bundle.read(resource)


def _key(photo: Photo) -> str:
    return f"{photo.rcc.removesuffix('.rcc')}/{Path(photo.resource).stem}"


def write_gcompris(out: Path, rcc_dir: Path = RCC_DIR) -> int:
    """Write the set as a CLIP_benchmark wds folder plus LICENSES.md; returns the number of images."""
    photos = load_mapping()
    count = write_wds(gcompris_set(rcc_dir, photos), out)
    with atomic_path(Path(out) / LICENSES_FILE) as tmp:
        tmp.write_text(licences_text(photos), encoding="utf-8")
    return count


def licences_text(photos: list[Photo]) -> str:
    """Every image's sample key, licence, author and source, in the order write_wds keys them."""
    lines = [
        "# GCompris animal photos: licences and attribution",
        "",
        f"From Debian's {PACKAGE} {PACKAGE_VERSION} (GCompris, https://gcompris.net); credits as given in",
        "each activity's resource README. PDM = public domain. Sample keys are those of test/*.tar.",
        "",
        "| sample | image | class | licence | author | source |",
        "|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(photos):
        cells = [f"s{i:07d}", f"{p.rcc}:{p.resource}", p.class_name, p.licence, p.author, p.source_url]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Disjointness:
    """How a training corpus compares with the set: `matches` lists (corpus image, set image, bits)."""

    indexed: int  # set images in the decontamination index
    compared: int  # corpus images hashed as the harvest hashes them
    rejected: list[str]  # corpus images the fetch stage refuses (too small, undecodable): never harvested
    distance: int  # the curate stage's decontam_distance
    matches: list[tuple[str, str, int]]
    nearest: int  # the smallest Hamming distance between any corpus image and any indexed hash


def disjointness(wds_dir: Path, corpus: list[Path], distance: int, fetch_opts: ImageOptions) -> Disjointness:
    """Check `corpus` images against a decontamination index of the exported set.

    The corpus images go through the fetch stage's normalisation (`fetch_opts`), so each gets the
    very hash a harvest would store for it, and meets the index as in the curate stage's
    decontamination: a match is a picture the harvest would drop as a copy of a set image.
    """
    with tempfile.TemporaryDirectory(prefix="kgclip-disjoint-") as tmp:
        index_path = Path(tmp) / "gcompris.parquet"
        report = build_index([(NAME, Path(wds_dir))], index_path, workers=1)
        index = EvalIndex([index_path])
        indexed = pq.read_table(index_path, columns=["phash"]).column("phash").to_numpy()
    if report.unreadable:
        raise EvalSetError(f"{wds_dir}: set images that cannot be hashed: {', '.join(report.unreadable[:5])}")
    hashes, names, rejected = [], [], []
    for path in corpus:
        result = normalize(read_regular(path), fetch_opts)
        if isinstance(result, Rejection):
            rejected.append(f"{path} ({result.reason})")
            continue
        hashes.append(result.phash)
        names.append(str(path))
    found = index.matches(hashes, distance)
    matches = [(names[i], f"{s}:{image}", d) for i, (s, image, d) in sorted(found.items())]
    return Disjointness(report.images, len(hashes), rejected, distance, matches, _nearest(hashes, indexed))


def _nearest(hashes: list[int], indexed: np.ndarray) -> int:
    """The smallest Hamming distance between any of `hashes` and any indexed hash (64 if none)."""
    if not hashes or not len(indexed):
        return 64
    a = np.array(hashes, dtype=np.uint64)
    b = indexed.astype(np.uint64)
    return int(np.bitwise_count(np.bitwise_xor.outer(a, b)).min())


def corpus_images(source: Path, importer: str) -> tuple[list[Path], int]:
    """The local image files a corpus config imports (as the demo's search backend serves them),
    and how many entries the importer skipped (vector stamps, missing captions)."""
    paths, skipped = [], 0
    for item in import_source(source, importer):
        if isinstance(item, Skipped):
            skipped += 1
            continue
        paths.append(Path(unquote(urlparse(item.uri).path)))
    return paths, skipped
