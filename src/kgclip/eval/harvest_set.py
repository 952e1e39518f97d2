"""Retrieval on the harvest's own held-out split (`harvest:WORKDIR`): curate's `val/` shards.

Each held-out picture is one item; its texts are the texts a training caption is built around:
its alt texts (what the web page said), the texts of the queries that found it (entity and
attribute queries, the KG's names as searched) and the names of its entities. Aliases,
descriptions and prompt-template variants are left out: they are derived from the same names, so
they would count one match many times, and descriptions are shared word for word by every picture
of an entity. An image counts as found at the best rank over its texts; each text finds its image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from kgclip.eval.sets import RETRIEVAL, EvalSet, EvalSetError, Item, fingerprint_of
from kgclip.eval.wds import IMAGE_EXTS
from kgclip.train.captions import read_samples

VAL_DIR = "val"


def open_harvest(workdir: Path) -> EvalSet:
    """The held-out split of a harvest as a retrieval set; an EvalSetError says what is missing."""
    workdir = Path(workdir)
    folder = workdir / VAL_DIR
    sizes = _sizes(workdir, folder)
    tars = [folder / name for name in sorted(sizes)]
    missing = [p.name for p in tars if not p.is_file()]
    if missing:
        raise EvalSetError(f"{folder}: sizes.json names {', '.join(missing)}, which is missing; rerun curate")
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tars]
    name = f"harvest-{_harvest_name(workdir)}"

    def items() -> Iterator[Item]:
        for key, members in read_samples(tars):
            yield _item(key, members, folder)

    return EvalSet(
        name=name,
        task=RETRIEVAL,
        classes=(),
        items=items,
        fingerprint=fingerprint_of("harvest-val", stats),
        source=f"harvest:{workdir}",
    )


def sample_texts(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """Alt texts, query texts, entity names of one sample's JSON; each once, in that order."""
    texts = [
        *(meta.get("alt_texts") or []),
        *(q.get("text") for q in meta.get("queries") or []),
        *(e.get("name") for e in meta.get("entities") or []),
    ]
    return tuple(dict.fromkeys(t.strip() for t in texts if isinstance(t, str) and t.strip()))


def _sizes(workdir: Path, folder: Path) -> dict[str, int]:
    path = folder / "sizes.json"
    if not path.is_file():
        if not (workdir / "samples.parquet").is_file():
            raise EvalSetError(f"{workdir}: not a harvest work directory (no samples.parquet)")
        raise EvalSetError(
            f"{path}: missing; this harvest has no held-out split: set [curate] val_fraction and rerun curate"
        )
    try:
        sizes = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise EvalSetError(f"{path}: not readable as curate's sizes.json ({exc})") from None
    if not isinstance(sizes, dict) or not sum(int(v) for v in sizes.values()):
        raise EvalSetError(
            f"{folder}: the held-out split is empty: set [curate] val_fraction (and val_max) and rerun curate"
        )
    return sizes


def _harvest_name(workdir: Path) -> str:
    """The harvest's config name (config.json), else the folder's name: it names the results file."""
    path = workdir / "config.json"
    try:
        name = orjson.loads(path.read_bytes()).get("name")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        name = None
    return name if isinstance(name, str) and name else workdir.name


def _item(key: str, members: dict[str, bytes], folder: Path) -> Item:
    image = next((members[e] for e in IMAGE_EXTS if e in members), None)
    if image is None:
        raise EvalSetError(f"{folder}: sample {key} has no image member")
    try:
        meta = orjson.loads(members.get("json", b""))
    except orjson.JSONDecodeError:
        raise EvalSetError(f"{folder}: sample {key} has no readable JSON (texts)") from None
    texts = sample_texts(meta) if isinstance(meta, dict) else ()
    if not texts:
        raise EvalSetError(f"{folder}: sample {key} has no texts")
    return Item(key, lambda: image, texts=texts)
