"""iNaturalist 2021 (github visipedia/inat_comp, folder 2021), the val split by default.

Layout, as the competition's archives unpack: `ROOT/val.json` (COCO style: `images` with `id` and
`file_name`, relative to ROOT; `annotations` with `image_id` and `category_id`; `categories` with
`id`, `name` (Latin), `common_name`, `supercategory`, the ranks `kingdom` … `genus`,
`specific_epithet` and `image_dir_name`) and the images under `ROOT/val/<image_dir_name>/`.
Class i is the category with the i-th smallest id (ids are 0 … 9,999, so class = id); images come
in `file_name` order, which is category order since every folder name starts with its id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kgclip.eval.folder import Listing, below, image_set
from kgclip.eval.sets import RANKS, ClassInfo, EvalSet, EvalSetError
from kgclip.localfiles import read_regular

_SPLIT = re.compile(r"^[A-Za-z0-9_]+$")


def open_inat(root: Path, split: str = "val") -> EvalSet:
    """A split of iNat 2021 by its annotation file `ROOT/<split>.json`; bad annotations are errors."""
    root = Path(root)
    if not _SPLIT.match(split):
        raise EvalSetError(f"iNaturalist split {split!r}: name its annotation file (val, train_mini)")
    ann = root / f"{split}.json"
    data = _load(ann)
    categories = sorted(_rows(data, "categories", ann), key=lambda c: _field(c, "id", ann))
    if not categories:
        raise EvalSetError(f"{ann}: no categories")
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    labels = _labels_of_images(data, ann, label_of)
    listing = Listing(root)
    for image in sorted(_rows(data, "images", ann), key=lambda r: str(_field(r, "file_name", ann))):
        name = str(image["file_name"])
        label = labels.get(_field(image, "id", ann))
        if label is None:
            listing.skipped.append(f"{name}: no annotation in {ann.name}")
        else:
            listing.add(below(root, name, str(ann)), label)
    name = "inat2021" if split == "val" else f"inat2021-{split}"
    classes = [class_info(c) for c in categories]
    return image_set(name, f"inat2021-{split}", classes, listing, f"inat2021:{root}")


def class_info(category: dict) -> ClassInfo:
    """Common name for display (the Latin name when there is none), plus the Latin name and ranks."""
    latin = str(category.get("name") or "")
    common = str(category.get("common_name") or "") or None
    taxonomy = {rank: str(category[rank]) for rank in RANKS[:-1] if category.get(rank)}
    genus, epithet = category.get("genus"), category.get("specific_epithet")
    species = f"{genus} {epithet}" if genus and epithet else latin
    if species:
        taxonomy["species"] = species
    return ClassInfo(common or latin, scientific=latin or None, common=common, taxonomy=taxonomy)


def _load(ann: Path) -> dict:
    try:
        data = json.loads(read_regular(ann))
    except FileNotFoundError:
        raise EvalSetError(f"{ann}: missing (iNaturalist 2021's annotations, from val.json.tar.gz)") from None
    except OSError as exc:
        raise EvalSetError(f"{ann}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise EvalSetError(f"{ann}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EvalSetError(
            f"{ann}: not COCO-style annotations (an object with images, annotations, categories)"
        )
    return data


def _rows(data: dict, key: str, ann: Path) -> list[dict]:
    rows = data.get(key)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise EvalSetError(f"{ann}: no {key!r} list (COCO-style images, annotations and categories expected)")
    return rows


def _field(row: dict, key: str, ann: Path) -> object:
    if key not in row:
        raise EvalSetError(f"{ann}: an entry without {key!r}: {json.dumps(row)[:120]}")
    return row[key]


def _labels_of_images(data: dict, ann: Path, label_of: dict) -> dict:
    """image id -> label; an annotation naming a category that is not in `categories` is an error."""
    out = {}
    for a in _rows(data, "annotations", ann):
        category = _field(a, "category_id", ann)
        if category not in label_of:
            raise EvalSetError(
                f"{ann}: annotation {a.get('id')} has category {category!r}, not in categories"
            )
        out[_field(a, "image_id", ann)] = label_of[category]
    return out
