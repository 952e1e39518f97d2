"""CUB-200-2011, the test split by default (5,794 images of 200 bird species).

Layout, as `CUB_200_2011.tgz` unpacks (ROOT/CUB_200_2011/ or ROOT itself): `classes.txt`
("1 001.Black_footed_Albatross"), `images.txt` ("1 001.Black_footed_Albatross/<file>.jpg",
relative to `images/`), `image_class_labels.txt` ("<image id> <class id>"),
`train_test_split.txt` ("<image id> <is_training_image>") and `images/`. Class i is the class with
the i-th smallest id; its name drops the number and turns underscores into spaces ("Black footed
Albatross"). Images come in image-id order.
"""

from __future__ import annotations

from pathlib import Path

from kgclip.eval.folder import Listing, below, image_set, read_lines
from kgclip.eval.sets import ClassInfo, EvalSet, EvalSetError

FILES = ("classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt")
SPLITS = {"test": "0", "train": "1"}
TEMPLATES = ("a photo of a {c}, a type of bird.",)


def cub_folder(root: Path) -> Path:
    """ROOT/CUB_200_2011 when it is there, else ROOT."""
    root = Path(root)
    inner = root / "CUB_200_2011"
    return inner if inner.is_dir() else root


def class_name(folder: str) -> str:
    """The display name: "001.Black_footed_Albatross" -> "Black footed Albatross"."""
    return folder.split(".", 1)[-1].replace("_", " ")


def open_cub(root: Path, split: str = "test") -> EvalSet:
    """One split of CUB; a missing file, an unknown id or an empty split is an EvalSetError naming it."""
    if split not in SPLITS:
        raise EvalSetError(f"CUB split {split!r}: use one of {', '.join(SPLITS)}")
    base = cub_folder(root)
    if not base.is_dir():
        raise EvalSetError(f"{root}: no such folder (CUB_200_2011 with classes.txt, images.txt … expected)")
    tables = {name: _pairs(base / name) for name in FILES}
    class_ids = sorted(tables["classes.txt"], key=_number(base / "classes.txt"))
    label_of = {cid: i for i, cid in enumerate(class_ids)}
    names = [class_name(tables["classes.txt"][c]) for c in class_ids]
    classes = [ClassInfo(n, common=n) for n in names]
    wanted = SPLITS[split]
    listing = Listing(base / "images")
    for image_id in sorted(tables["images.txt"], key=_number(base / "images.txt")):
        if _lookup(tables, "train_test_split.txt", image_id, base) != wanted:
            continue
        cid = _lookup(tables, "image_class_labels.txt", image_id, base)
        if cid not in label_of:
            raise EvalSetError(
                f"{base / 'image_class_labels.txt'}: image {image_id} has class {cid}, not in classes.txt"
            )
        path = below(base / "images", tables["images.txt"][image_id], str(base / "images.txt"))
        listing.add(path, label_of[cid])
    if not listing.files and not listing.skipped:
        raise EvalSetError(f"{base / 'train_test_split.txt'}: no image in the {split} split")
    name = "cub" if split == "test" else f"cub-{split}"
    return image_set(name, f"cub-{split}", classes, listing, f"cub:{base}", TEMPLATES)


def _pairs(path: Path) -> dict[str, str]:
    """A CUB table as id -> value ("<id> <value>" per line); a malformed line is an error naming it."""
    out: dict[str, str] = {}
    for n, line in enumerate(read_lines(path, "part of CUB_200_2011"), 1):
        key, _, value = line.partition(" ")
        if not value.strip() or key in out:
            raise EvalSetError(f"{path}: line {n} is not '<id> <value>' with a new id: {line[:80]!r}")
        out[key] = value.strip()
    if not out:
        raise EvalSetError(f"{path}: empty")
    return out


def _number(path: Path):
    """A sort key for CUB's numeric ids; an id that is not a number is an error naming the file."""

    def key(value: str) -> int:
        if not value.isdigit():
            raise EvalSetError(f"{path}: id {value!r} is not a number")
        return int(value)

    return key


def _lookup(tables: dict[str, dict[str, str]], name: str, image_id: str, base: Path) -> str:
    try:
        return tables[name][image_id]
    except KeyError:
        raise EvalSetError(f"{base / name}: no line for image {image_id} of images.txt") from None
