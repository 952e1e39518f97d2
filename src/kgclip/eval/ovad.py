"""OVAD box-oracle attribute mAP (Bravo, Mittal, Ging, Brox, CVPR 2023), torch-free.

The model comes as two callables (PIL images -> embeddings, texts -> embeddings), so this module
needs only numpy and Pillow and the runner decides where and how the towers run. The protocol is
the benchmark's own box setting for CLIP-like models (ovamc/ova_clip.py, tools/extract_obj_boxes.py
and the ovad_evaluator.py shipped in ovad.zip), reimplemented:

1. every ground-truth box whose COCO `area` is at least 50 is cut from its val2017 image at the
   integer-truncated x, y, w, h (clipped to the image) and squashed to 224 x 224, bilinear, as the
   benchmark's `Resize(size=(224, 224))` does (no centre crop that would cut the object);
2. every attribute x synonym x template (prompts/ovad_templates.json) is encoded; a box's score for
   an attribute is the raw cosine similarity, the max over that attribute's prompts (the mean with
   `average_syn`);
3. scores are clipped to [0, 1], as the official evaluator does before ranking, and each
   attribute's AP is average precision over the boxes labelled 1 or 0 (-1, unknown, is ignored),
   computed as sklearn's `average_precision_score` (tied scores form one threshold); an attribute
   without a positive box has no AP. mAP, head, medium and tail are plain means over attributes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from kgclip.eval.sets import EvalSetError, fingerprint_of
from kgclip.localfiles import open_regular

log = logging.getLogger(__name__)

TEMPLATES_FILE = Path(__file__).parent / "prompts" / "ovad_templates.json"
FREQ_SETS = ("head", "medium", "tail")
PROMPT_SETS = ("none", "a", "the", "photo", "all")
MIN_AREA = 50.0  # tools/extract_obj_boxes.py keeps a box when its COCO area is at least this
CROP_SIDE = 224  # the benchmark's Resize(size=(224, 224)) squashes every crop to this square
# Where ROOT keeps the annotation file and the images: the benchmark's datasets/ folder, or a flat copy.
JSON_PLACES = ("ovad/ovad2000.json", "ovad2000.json")
IMAGE_PLACES = ("coco/val2017", "val2017")
# Why a box was left out (keys of the result's "skipped").
SMALL, NO_IMAGE_ID, MISSING, UNREADABLE, EMPTY = (
    "small_box", "unknown_image_id", "missing_image", "unreadable_image", "empty_crop"
)

ImageEncoder = Callable[[list[Image.Image]], np.ndarray]
TextEncoder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Attribute:
    """One OVAD attribute: `name` is "type:synonym/synonym"; `id` is its column in every att_vec."""

    id: int
    name: str
    type: str
    parent_type: str
    is_has: str  # "is" (a red car) or "has" (a car has red color)
    freq_set: str  # head, medium or tail
    synonyms: tuple[str, ...]  # with the benchmark's extra maturity words


@dataclass(frozen=True)
class Box:
    """One ground-truth box to crop: its image, integer x, y, w, h and labels by attribute id."""

    image: Path
    xywh: tuple[int, int, int, int]
    labels: np.ndarray  # int8: 1 positive, 0 negative, -1 unknown


@dataclass(frozen=True)
class OvadSet:
    """The annotation file read and checked; boxes whose image is there; what was left out and why."""

    annotations: Path
    images: Path
    attributes: tuple[Attribute, ...]
    boxes: tuple[Box, ...]
    skipped: dict[str, int]
    fingerprint: str


@cache
def _templates() -> dict:
    return json.loads(TEMPLATES_FILE.read_text(encoding="utf-8"))


def find_layout(root: Path) -> tuple[Path, Path]:
    """ROOT's annotation file and COCO val2017 folder, or an EvalSetError saying what was looked for."""
    root = Path(root)
    if not root.is_dir():
        raise EvalSetError(f"{root}: no such folder (an OVAD root holding ovad2000.json and val2017/)")
    json_path = next((root / p for p in JSON_PLACES if (root / p).is_file()), None)
    if json_path is None:
        looked = ", ".join(JSON_PLACES)
        raise EvalSetError(f"{root}: no ovad2000.json (looked for {looked}; it comes in ovad.zip)")
    image_dir = next((root / p for p in IMAGE_PLACES if (root / p).is_dir()), None)
    if image_dir is None:
        raise EvalSetError(f"{root}: no COCO val2017 image folder (looked for {', '.join(IMAGE_PLACES)})")
    return json_path, image_dir


def load_ovad(root: Path, min_area: float = MIN_AREA) -> OvadSet:
    """Read and check ROOT's ovad2000.json; boxes that cannot be evaluated are counted by reason."""
    json_path, image_dir = find_layout(root)
    data = _read_json(json_path)
    attributes = _attributes(data["attributes"], json_path)
    boxes, skipped = _boxes(data, json_path, image_dir, len(attributes), min_area)
    stat = json_path.stat()
    return OvadSet(
        annotations=json_path,
        images=image_dir,
        attributes=attributes,
        boxes=tuple(boxes),
        skipped=skipped,
        fingerprint=fingerprint_of("ovad", json_path, stat.st_size, stat.st_mtime_ns, image_dir, min_area),
    )


def _read_json(path: Path) -> dict:
    try:
        with open_regular(path) as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except OSError as exc:
        raise EvalSetError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise EvalSetError(f"{path}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise EvalSetError(f"{path}: not valid JSON ({exc.msg} at {where})") from exc
    if not isinstance(data, dict):
        raise EvalSetError(f"{path}: expected a JSON object with images, annotations and attributes")
    for key in ("images", "annotations", "attributes"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise EvalSetError(f"{path}: '{key}' is missing, empty or not a list")
    return data


def _attributes(rows: list, path: Path) -> tuple[Attribute, ...]:
    """Attributes by id; ids must be 0..n-1 because att_vec is indexed by them."""
    extra = _templates()["extra_synonyms"]
    found: dict[int, Attribute] = {}
    for i, row in enumerate(rows):
        where = f"{path}: attributes[{i}]"
        try:
            att_id, name, is_has, freq = int(row["id"]), str(row["name"]), row["is_has_att"], row["freq_set"]
            att_type, parent = str(row["type"]), str(row["parent_type"])
        except (KeyError, TypeError, ValueError) as exc:
            needs = "id, name, type, parent_type, is_has_att, freq_set"
            raise EvalSetError(f"{where}: needs {needs} ({exc!r})") from exc
        if name.count(":") != 1:
            raise EvalSetError(f"{where}: name {name!r} is not 'type:synonym/synonym'")
        if is_has not in ("is", "has"):
            raise EvalSetError(f"{where}: is_has_att {is_has!r} is neither 'is' nor 'has'")
        if freq not in FREQ_SETS:
            raise EvalSetError(f"{where}: freq_set {freq!r} is not one of {', '.join(FREQ_SETS)}")
        if att_id in found:
            raise EvalSetError(f"{where}: id {att_id} is used twice")
        values = name.split(":")[1]
        synonyms = tuple(values.split("/")) + tuple(extra.get(values, ()))
        found[att_id] = Attribute(att_id, name, att_type, parent, is_has, freq, synonyms)
    if sorted(found) != list(range(len(found))):
        raise EvalSetError(f"{path}: attribute ids are not 0..{len(found) - 1} (att_vec columns follow them)")
    return tuple(found[i] for i in range(len(found)))


def _boxes(
    data: dict, path: Path, image_dir: Path, n_attributes: int, min_area: float
) -> tuple[list[Box], dict[str, int]]:
    files = _image_files(data["images"], path)
    skipped = {SMALL: 0, NO_IMAGE_ID: 0, MISSING: 0, UNREADABLE: 0, EMPTY: 0}
    boxes: list[Box] = []
    missing: set[Path] = set()
    for i, ann in enumerate(data["annotations"]):
        image_id, xywh, area, labels = _annotation(ann, f"{path}: annotations[{i}]", n_attributes)
        if area < min_area:
            skipped[SMALL] += 1
            continue
        if image_id not in files:
            skipped[NO_IMAGE_ID] += 1
            continue
        image = image_dir / files[image_id]
        if not image.is_file():
            skipped[MISSING] += 1
            if image not in missing:
                missing.add(image)
                log.warning("OVAD: %s is missing; its boxes are skipped", image)
            continue
        boxes.append(Box(image, xywh, labels))
    return boxes, skipped


def _image_files(images: list, path: Path) -> dict[int, str]:
    """Image id -> file name inside val2017 (the name's last part: COCO's folder is flat)."""
    files: dict[int, str] = {}
    for i, row in enumerate(images):
        try:
            files[int(row["id"])] = Path(str(row["file_name"])).name
        except (KeyError, TypeError, ValueError) as exc:
            raise EvalSetError(f"{path}: images[{i}] needs an id and a file_name ({exc!r})") from exc
    return files


def _annotation(
    ann: object, where: str, n_attributes: int
) -> tuple[int, tuple[int, int, int, int], float, np.ndarray]:
    """Image id, truncated box, COCO area and labels of one annotation, checked."""
    if not isinstance(ann, dict):
        raise EvalSetError(f"{where}: not a JSON object")
    try:
        bbox = [float(v) for v in ann["bbox"]]
        image_id, area = int(ann["image_id"]), float(ann["area"])
        labels = np.asarray(ann["att_vec"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise EvalSetError(f"{where}: needs image_id, bbox, area and att_vec ({exc!r})") from exc
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        raise EvalSetError(f"{where}: bbox {bbox} is not four finite numbers x, y, w, h")
    if labels.shape != (n_attributes,) or not np.isin(labels, (-1, 0, 1)).all():
        raise EvalSetError(f"{where}: att_vec must hold {n_attributes} values of 1, 0 or -1")
    x, y, w, h = (int(v) for v in bbox)  # truncated, as the benchmark's int(x), int(y), int(w), int(h)
    return image_id, (x, y, w, h), area, labels.astype(np.int8)


def attribute_prompts(attribute: Attribute, prompts: str = "all", object_word: bool = False) -> list[str]:
    """Every text for one attribute: synonyms x templates of the chosen set, filled as the benchmark does.

    "all" is the benchmark's ensemble of "a", "the" and "none" ("photo" is only used alone). The
    filled text is stripped at both ends only, so an empty {noun} leaves a double space inside
    ("a  is red"), exactly the string the benchmark encodes (CLIP tokenizers collapse it).
    """
    if prompts not in PROMPT_SETS:
        raise ValueError(f"unknown OVAD prompt set {prompts!r}; one of {', '.join(PROMPT_SETS)}")
    spec = _templates()
    sets = spec["all"] if prompts == "all" else [prompts]
    dobj = attribute.name.split(":")[0]
    for part in spec["dobj_remove"]:
        dobj = dobj.replace(part, "")
    noun = "object" if object_word else ""
    templates = spec["templates"][attribute.is_has]
    return [
        template.format(attr=syn, dobj=dobj, noun=noun).strip()
        for syn in attribute.synonyms
        for name in sets
        for template in templates[name]
    ]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP over the boxes labelled 1 or 0, as sklearn's average_precision_score; NaN without a positive.

    AP = sum over distinct scores, high to low, of (recall gained there) x (precision there), where
    all boxes sharing a score are counted together, so the order of tied boxes never matters.
    """
    known = labels >= 0
    s, positive = scores[known], labels[known] == 1
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, positive = s[order], positive[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last box of each run of equal scores
    true_pos = np.cumsum(positive)[ends]
    precision = true_pos / (ends + 1)
    recall_gain = np.diff(np.r_[0, true_pos]) / n_pos
    return float(np.sum(recall_gain * precision))


def evaluate_ovad(
    root: Path,
    encode_images: ImageEncoder,
    encode_texts: TextEncoder,
    prompts: str = "all",
    object_word: bool = False,
    average_syn: bool = False,
    batch_size: int = 256,
    crop_side: int | None = CROP_SIDE,
    min_area: float = MIN_AREA,
) -> dict:
    """Box-oracle attribute mAP of a model on ROOT (see the module text for the protocol).

    The encoders return one row per input (any float dtype; rows are L2-normalised here). Metrics
    are fractions (the OVAD README prints percentages); a group without an attribute that has a
    positive box gets None. `crop_side=None` hands the raw crops to `encode_images` instead.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ovad = load_ovad(root, min_area)
    per_attribute = [attribute_prompts(a, prompts, object_word) for a in ovad.attributes]
    texts = [t for group in per_attribute for t in group]
    starts = np.cumsum([0] + [len(group) for group in per_attribute[:-1]])
    counts = np.array([len(group) for group in per_attribute], dtype=np.float64)
    text_emb = _encode(encode_texts, texts, batch_size, "encode_texts")
    skipped = dict(ovad.skipped)
    rows: list[np.ndarray] = []
    done: list[Box] = []
    for crops, boxes in _batches(_crops(ovad.boxes, crop_side, skipped), batch_size):
        sims = _encode(encode_images, crops, len(crops), "encode_images") @ text_emb.T
        if average_syn:
            rows.append(np.add.reduceat(sims, starts, axis=1) / counts)
        else:
            rows.append(np.maximum.reduceat(sims, starts, axis=1))
        done.extend(boxes)
    if not done:
        raise EvalSetError(f"{ovad.annotations}: no box could be evaluated (skipped: {skipped})")
    result = _metrics(ovad.attributes, np.concatenate(rows), np.stack([b.labels for b in done]))
    result.update(
        boxes=len(done),
        images=len({b.image for b in done}),
        attributes=len(ovad.attributes),
        skipped=skipped,
        prompts=prompts,
        texts=len(texts),
        object_word=object_word,
        average_syn=average_syn,
        crop_side=crop_side,
        annotations=str(ovad.annotations),
        set_fingerprint=ovad.fingerprint,
    )
    return result


def _encode(encoder: Callable, inputs: Sequence, batch_size: int, what: str) -> np.ndarray:
    """Rows of `encoder` over `inputs` in batches, L2-normalised in float64."""
    parts = []
    for start in range(0, len(inputs), batch_size):
        chunk = list(inputs[start : start + batch_size])
        emb = np.asarray(encoder(chunk), dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != len(chunk):
            raise ValueError(f"{what} returned shape {emb.shape} for {len(chunk)} inputs (one row each)")
        parts.append(emb)
    emb = np.concatenate(parts)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _crops(
    boxes: Sequence[Box], crop_side: int | None, skipped: dict[str, int]
) -> Iterator[tuple[Image.Image, Box]]:
    """Each box's crop, opening every image once; unreadable images and empty crops are counted."""
    by_image: dict[Path, list[Box]] = {}
    for box in boxes:
        by_image.setdefault(box.image, []).append(box)
    for path, group in by_image.items():
        try:
            with open_regular(path) as fh, Image.open(fh) as img:
                image = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            skipped[UNREADABLE] += len(group)
            log.warning("OVAD: %s cannot be decoded (%s); its %d boxes are skipped", path, exc, len(group))
            continue
        for box in group:
            crop = crop_box(image, box.xywh, crop_side)
            if crop is None:
                skipped[EMPTY] += 1
                continue
            yield crop, box


def crop_box(
    image: Image.Image, xywh: tuple[int, int, int, int], side: int | None = CROP_SIDE
) -> Image.Image | None:
    """The box's pixels (clipped to the image, like array slicing), squashed to side x side; None if empty."""
    x, y, w, h = xywh
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + w, image.width), min(y + h, image.height)
    if right <= left or bottom <= top:
        return None
    crop = image.crop((left, top, right, bottom))
    return crop if side is None else crop.resize((side, side), Image.Resampling.BILINEAR)


def _batches(
    pairs: Iterator[tuple[Image.Image, Box]], size: int
) -> Iterator[tuple[list[Image.Image], list[Box]]]:
    crops: list[Image.Image] = []
    boxes: list[Box] = []
    for crop, box in pairs:
        crops.append(crop)
        boxes.append(box)
        if len(crops) == size:
            yield crops, boxes
            crops, boxes = [], []
    if crops:
        yield crops, boxes


def _metrics(attributes: Sequence[Attribute], scores: np.ndarray, labels: np.ndarray) -> dict:
    """Per-attribute AP on scores clipped to [0, 1] (the official evaluator clips), and group means.

    Chance per attribute is its positive rate among the boxes labelled 1 or 0: the precision of a
    random ranking, the evaluator's "rand_precision" that the OVAD README reports as chance.
    """
    scores = np.clip(scores, 0.0, 1.0)
    ap: dict[str, float] = {}
    rate: dict[str, float] = {}
    for a in attributes:
        column = labels[:, a.id]
        value = average_precision(scores[:, a.id], column)
        if not math.isnan(value):
            ap[a.name] = value
            rate[a.name] = float((column == 1).sum() / (column >= 0).sum())

    def mean(values: dict[str, float], keep: Callable[[Attribute], bool]) -> float | None:
        picked = [values[a.name] for a in attributes if a.name in values and keep(a)]
        return float(np.mean(picked)) if picked else None

    result: dict = {"mAP": mean(ap, lambda a: True)}
    for freq in FREQ_SETS:
        result[freq] = mean(ap, lambda a, f=freq: a.freq_set == f)
    parents = sorted({a.parent_type for a in attributes})
    result["by_parent_type"] = {p: mean(ap, lambda a, p=p: a.parent_type == p) for p in parents}
    result["per_attribute"] = ap
    result["no_positive_box"] = [a.name for a in attributes if a.name not in ap]
    result["evaluated_attributes"] = len(ap)
    result["chance"] = {"mAP": mean(rate, lambda a: True)} | {
        freq: mean(rate, lambda a, f=freq: a.freq_set == f) for freq in FREQ_SETS
    }
    return result
