"""CLIP_benchmark's `wds/` folder: read any such folder, write any evaluation set as one.

Layout (CLIP_benchmark's `build_wds_dataset`): `classnames.txt` (line i names label i),
`zeroshot_classification_templates.txt` ("{c}" placeholders), optional `dataset_type.txt`
("retrieval"), and `<split>/nshards.txt` with `<split>/0.tar …`. Samples are keyed `s%07d` and hold
an image (`webp`, `png`, `jpg`) and `cls` (the label as text) or `txt` (captions, one per line).
kgclip adds `kgclip_classes.json` (what the graph knows of each class: wnid, scientific name,
taxonomy), which CLIP_benchmark ignores and kgclip's name styles read back.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from kgclip.eval.sets import CLASSIFICATION, RETRIEVAL, ClassInfo, EvalSet, EvalSetError, Item, fingerprint_of
from kgclip.localfiles import open_regular
from kgclip.tario import add_member
from kgclip.workdir import fsync_dir

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
CLASSES_FILE = "kgclip_classes.json"
MARK = ".kgclip-evalset"  # written into folders kgclip made, so a rewrite never replaces a user's folder


def read_wds(root: Path, split: str = "test", name: str | None = None) -> EvalSet:
    """The folder as an EvalSet; every missing or inconsistent file is an EvalSetError naming it."""
    root = Path(root)
    if not root.is_dir():
        raise EvalSetError(f"{root}: no such folder (a CLIP_benchmark wds folder is expected)")
    kind = _text(root / "dataset_type.txt", "classification").strip().lower()
    task = RETRIEVAL if kind == "retrieval" else CLASSIFICATION
    classes: list[ClassInfo] = []
    if task == CLASSIFICATION:
        names_file = root / "classnames.txt"
        if not names_file.is_file():
            raise EvalSetError(f"{names_file}: missing (one class name per line, line i = label i)")
        names = [line.strip() for line in _text(names_file).splitlines() if line.strip()]
        if not names:
            raise EvalSetError(f"{names_file}: no class names")
        classes = _classes(root, names)
    lines = _text(root / "zeroshot_classification_templates.txt", "").splitlines()
    templates = tuple(t.strip() for t in lines if t.strip())
    tars = _shards(root, split)
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tars]
    label = name or root.name

    def items() -> Iterator[Item]:
        yield from _items(tars, task, len(classes), label)

    return EvalSet(
        name=label,
        task=task,
        classes=classes,
        items=items,
        fingerprint=fingerprint_of("wds", split, stats, [c.name for c in classes]),
        source=f"wds:{root}",
        templates=templates,
    )


def _text(path: Path, default: str | None = None) -> str:
    if not path.exists() and default is not None:
        return default
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"{path}: cannot read ({exc})") from None


def _classes(root: Path, names: list[str]) -> list[ClassInfo]:
    extra = root / CLASSES_FILE
    if not extra.is_file():
        return [ClassInfo(n) for n in names]
    try:
        rows = json.loads(extra.read_text(encoding="utf-8"))
        infos = [ClassInfo(**{**r, "aliases": tuple(r.get("aliases", ()))}) for r in rows]
    except (OSError, ValueError, TypeError) as exc:
        raise EvalSetError(f"{extra}: not kgclip's class list ({exc})") from None
    if [c.name for c in infos] != names:
        raise EvalSetError(f"{extra}: its {len(infos)} classes differ from classnames.txt's {len(names)}")
    return infos


def _shards(root: Path, split: str) -> list[Path]:
    nfile = root / split / "nshards.txt"
    if not nfile.is_file():
        raise EvalSetError(f"{nfile}: missing (split {split!r} of a CLIP_benchmark wds folder)")
    try:
        n = int(_text(nfile).strip())
    except ValueError:
        raise EvalSetError(f"{nfile}: not a number of shards") from None
    tars = [root / split / f"{i}.tar" for i in range(n)]
    missing = [p.name for p in tars if not p.is_file()]
    if n < 1 or missing:
        absent = ", ".join(missing) or "all"
        raise EvalSetError(f"{root / split}: nshards.txt says {n} shards; missing {absent}")
    return tars


def _items(tars: list[Path], task: str, n_classes: int, label: str) -> Iterator[Item]:
    for path in tars:
        with open_regular(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            key, members = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                k, _, ext = member.name.partition(".")
                if k != key and key is not None:
                    yield _item(key, members, task, n_classes, label, path)
                    members = {}
                key = k
                fh = tar.extractfile(member)
                members[ext.lower()] = fh.read() if fh else b""
            if key is not None:
                yield _item(key, members, task, n_classes, label, path)


def _item(key: str, members: dict[str, bytes], task: str, n_classes: int, label: str, tar: Path) -> Item:
    image = next((members[e] for e in IMAGE_EXTS if e in members), None)
    where = f"{label}:{tar.name}/{key}"
    if image is None:
        raise EvalSetError(f"{where}: no image member (one of {', '.join(IMAGE_EXTS)})")
    if task == RETRIEVAL:
        if "txt" not in members:
            raise EvalSetError(f"{where}: no txt member (captions) in a retrieval set")
        texts = tuple(t for t in members["txt"].decode("utf-8").split("\n") if t)
        return Item(key, lambda: image, texts=texts)
    if "cls" not in members:
        raise EvalSetError(f"{where}: no cls member (the label)")
    try:
        cls = int(members["cls"].decode().strip())
    except ValueError:
        raise EvalSetError(f"{where}: cls {members['cls'][:20]!r} is not an integer") from None
    if not 0 <= cls < n_classes:
        raise EvalSetError(f"{where}: label {cls} but classnames.txt has {n_classes} classes")
    return Item(key, lambda: image, label=cls)


def write_wds(evalset: EvalSet, out: Path, split: str = "test", max_count: int = 10_000) -> int:
    """Write `evalset` as a CLIP_benchmark folder; returns the number of samples.

    Images keep their bytes when CLIP_benchmark can read their format, else become lossless webp.
    The folder is built beside `out` and swapped in, and only replaces a folder kgclip wrote.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EvalSetError(f"{out}: exists and is not a folder; choose another one")
    if out.exists() and any(out.iterdir()) and not (out / MARK).is_file():
        raise EvalSetError(f"{out}: exists, is not empty and was not written by kgclip; choose another one")
    tmp = out.with_name(out.name + ".new")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / split).mkdir(parents=True)
    (tmp / MARK).write_text("written by kgclip export-eval\n", encoding="utf-8")
    def put(name: str, lines: list[str]) -> None:
        (tmp / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")

    if evalset.task == CLASSIFICATION:
        put("classnames.txt", [c.name for c in evalset.classes])
        put(CLASSES_FILE, [json.dumps([_jsonable(c) for c in evalset.classes], indent=1)])
    else:
        put("dataset_type.txt", ["retrieval"])
    if evalset.templates:
        put("zeroshot_classification_templates.txt", list(evalset.templates))
    items = iter(evalset.items())
    count = shard = 0
    while True:
        try:
            written = _write_shard(tmp / split / f"{shard}.tar", items, count, max_count, evalset.task)
        except EvalSetError:
            shutil.rmtree(tmp)  # a half-written folder is never left behind
            raise
        if written == 0:
            break
        count += written
        shard += 1
    if count == 0:
        shutil.rmtree(tmp)
        raise EvalSetError(f"{evalset.name}: no images to write")
    (tmp / split / f"{shard}.tar").unlink()
    put(f"{split}/nshards.txt", [str(shard)])
    _swap(tmp, out)
    return count


def _write_shard(path: Path, items: Iterator[Item], start: int, max_count: int, task: str) -> int:
    """Up to `max_count` samples from `items` into one tar; keys continue from `start`."""
    written = 0
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for item in items:
            key = f"s{start + written:07d}"
            ext, data = _image_member(item)
            add_member(tar, f"{key}.{ext}", data)
            if task == CLASSIFICATION:
                add_member(tar, f"{key}.cls", str(item.label).encode())
            else:
                add_member(tar, f"{key}.txt", "\n".join(t.replace("\n", r"\n") for t in item.texts).encode())
            written += 1
            if written == max_count:
                break
    return written


def _jsonable(c: ClassInfo) -> dict:
    row = asdict(c)
    row["aliases"] = list(c.aliases)
    return row


def _image_member(item: Item) -> tuple[str, bytes]:
    """The item's image as a member CLIP_benchmark reads; an unreadable one is an error naming its key."""
    try:
        data = item.read()
    except OSError as exc:
        raise EvalSetError(f"{item.key}: cannot read ({exc})") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
            if fmt in ("webp", "png", "jpeg"):
                return ("jpg" if fmt == "jpeg" else fmt), data
            buf = io.BytesIO()
            im.save(buf, format="webp", lossless=True)
            return "webp", buf.getvalue()
    except (OSError, SyntaxError, ValueError) as exc:
        raise EvalSetError(f"{item.key}: the image cannot be decoded ({exc}); remove or replace it") from None


def _swap(tmp: Path, out: Path) -> None:
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old.exists():
        shutil.rmtree(old)
