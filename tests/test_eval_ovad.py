"""OVAD box-oracle attribute mAP on a small synthetic copy in the real layout and annotation format.

The fake towers make every score known in advance: a crop's embedding is looked up by its (single)
colour, so a crop that took in a pixel outside its box fails the lookup; a text's embedding is the
basis vector of the one synonym it contains. Each crop's vector holds the cosines listed in
SCORES plus one slack coordinate that makes it unit length, so cosine = the listed number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kgclip.eval.ovad import (
    MISSING,
    NO_IMAGE_ID,
    SMALL,
    UNREADABLE,
    Attribute,
    attribute_prompts,
    average_precision,
    evaluate_ovad,
    load_ovad,
)
from kgclip.eval.sets import EvalSetError

BACKGROUND = (128, 128, 128)
ATTRIBUTES = [
    {"id": 0, "name": "color:red/scarlet", "type": "color", "parent_type": "color",
     "is_has_att": "is", "freq_set": "head"},
    {"id": 1, "name": "skin tone:green", "type": "skin tone", "parent_type": "color",
     "is_has_att": "has", "freq_set": "head"},
    {"id": 2, "name": "maturity:young/baby", "type": "maturity", "parent_type": "maturity",
     "is_has_att": "is", "freq_set": "medium"},
    {"id": 3, "name": "material:metal", "type": "material", "parent_type": "material",
     "is_has_att": "is", "freq_set": "tail"},
]
# One basis direction per synonym; the benchmark's extra maturity words share one.
VOCAB = {"red": 0, "scarlet": 1, "green": 2, "young": 3, "baby": 4,
         "kid": 5, "kids": 5, "child": 5, "toddler": 5, "boy": 5, "girl": 5, "metal": 6}
DIM = 8  # 7 synonym directions + the slack coordinate
# box: (image id, bbox x y w h, area, colour, att_vec [red, green, young, metal])
BOXES = {
    "b1": (101, [4.6, 3.2, 20.9, 15.7], 300.0, (200, 30, 30), [1, 1, 0, 0]),  # int -> 4, 3, 20, 15
    "b2": (101, [30, 20, 20, 20], 400.0, (30, 200, 30), [1, 1, 1, 0]),
    "b3": (102, [0, 0, 10, 10], 100.0, (30, 30, 200), [0, 0, 0, -1]),
    "b4": (102, [20.5, 20.5, 30.2, 20.9], 600.0, (200, 200, 30), [0, 0, 1, 0]),
    "b5": (103, [2, 2, 16, 16], 256.0, (200, 30, 200), [-1, 0, -1, -1]),
    "b6": (103, [50, 30, 30, 30], 900.0, (30, 200, 200), [1, -1, 0, 0]),  # runs past the 64x48 image
    "b7": (104, [0, 0, 10, 10], 100.0, (90, 90, 90), [1, 1, 1, 1]),  # its image file is missing
    "b8": (103, [20, 5, 8, 5], 40.0, (10, 10, 10), [1, 1, 1, 1]),  # area < 50: left out
}
# Cosine of each crop with each synonym: red scarlet green young baby kid-words metal
SCORES = {
    "b1": [0.30, 0.03, -0.10, 0.05, 0.02, 0.00, 0.0],
    "b2": [0.10, 0.27, 0.17, 0.01, 0.01, 0.25, 0.0],
    "b3": [0.24, 0.16, 0.13, 0.12, 0.02, 0.00, 0.0],
    "b4": [0.03, 0.00, -0.20, 0.20, 0.00, 0.00, 0.0],
    "b5": [0.33, 0.31, 0.07, 0.00, 0.00, 0.00, 0.0],
    "b6": [0.21, 0.00, 0.03, 0.08, 0.15, 0.00, 0.0],
}


def _write_image(path: Path, boxes: list[tuple[list[float], tuple[int, int, int]]]) -> None:
    pixels = np.full((48, 64, 3), BACKGROUND, dtype=np.uint8)
    for bbox, colour in boxes:
        x, y, w, h = (int(v) for v in bbox)
        pixels[y : y + h, x : x + w] = colour  # numpy clips the slice at the image edge
    Image.fromarray(pixels).save(path, format="PNG")


def make_ovad(root: Path, flat: bool = False) -> Path:
    """The benchmark's datasets/ layout (ovad/ovad2000.json, coco/val2017/), or a flat copy."""
    json_path = root / ("ovad2000.json" if flat else "ovad/ovad2000.json")
    images = root / ("val2017" if flat else "coco/val2017")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    image_ids = sorted({b[0] for b in BOXES.values()})
    for image_id in image_ids[:-1]:  # 104 is listed but never written
        painted = [(b[1], b[3]) for b in BOXES.values() if b[0] == image_id]
        _write_image(images / f"{image_id:012d}.png", painted)
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.png", "width": 64, "height": 48} for i in image_ids],
        "annotations": [
            {"id": n, "image_id": b[0], "bbox": b[1], "area": b[2], "category_id": 1, "att_vec": b[4]}
            for n, b in enumerate(BOXES.values(), start=1)
        ],
        "categories": [{"id": 1, "name": "person"}],
        "attributes": ATTRIBUTES,
    }
    json_path.write_text(json.dumps(data), encoding="utf-8")
    return root


class FakeTowers:
    """Image tower: crop colour -> unit vector of SCORES; text tower: synonym -> basis vector."""

    def __init__(self) -> None:
        self.by_colour = {}
        for key, scores in SCORES.items():
            slack = math.sqrt(1.0 - sum(s * s for s in scores))
            self.by_colour[BOXES[key][3]] = np.array([*scores, slack])
        self.sizes: list[tuple[int, int]] = []
        self.texts: list[str] = []

    def images(self, crops: list[Image.Image]) -> np.ndarray:
        rows = []
        for crop in crops:
            self.sizes.append(crop.size)
            colours = np.unique(np.asarray(crop).reshape(-1, 3), axis=0)
            assert len(colours) == 1, f"crop holds pixels outside its box: {colours.tolist()}"
            rows.append(self.by_colour[tuple(int(c) for c in colours[0])])
        return np.stack(rows).astype(np.float32)

    def text(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        rows = np.zeros((len(texts), DIM))
        for i, text in enumerate(texts):
            hits = [VOCAB[w] for w in text.split() if w in VOCAB]
            assert len(hits) == 1, text
            rows[i, hits[0]] = 1.0
        return rows


@pytest.fixture
def ovad_root(tmp_path: Path) -> Path:
    return make_ovad(tmp_path / "datasets")


def test_box_oracle_map_worked_by_hand(ovad_root: Path) -> None:
    """Max over synonym prompts. Boxes b7 (missing image) and b8 (area 40) are left out; b5's
    unknown labels are ignored. Scores are clipped to [0, 1] before ranking, as the evaluator does.

    red/scarlet, score = max(red, scarlet): b1 .30 P, b2 .27 P, b3 .24 N, b6 .21 P, b4 .03 N
    (b5 .33 is unknown: were it a negative, the first precision would be 1/2).
      precision at each positive: 1/1, 2/2, 3/4 -> AP = (1 + 1 + 3/4) / 3 = 11/12
    skin tone:green: b2 .17 P, b3 .13 N, b5 .07 N, then b1 (-.10) and b4 (-.20) both clip to 0, a tie
    of one P and one N counted as one threshold (b6 unknown).
      recall 1/2 at precision 1/1, recall 2/2 at precision 2/5 -> AP = 1/2 + 1/2 * 2/5 = 7/10
      (unclipped, b1 would rank 4th: 1/2 + 1/2 * 2/4 = 3/4)
    young/baby (+ kid, kids, child, toddler, boy, girl): b2 .25 (kid words) P, b4 .20 P, b6 .15 N,
    b3 .12 N, b1 .05 N -> AP = 1 (without the extra words b2 scores .01 and AP = (1 + 2/5)/2 = 0.7)
    metal: no positive box -> no AP, left out of every mean.
    mAP = (11/12 + 7/10 + 1) / 3 = 157/180; head = (11/12 + 7/10) / 2 = 97/120; medium = 1.
    chance = positive rate among labelled boxes: red 3/5, green 2/5, young 2/5.
    """
    towers = FakeTowers()
    result = evaluate_ovad(ovad_root, towers.images, towers.text, batch_size=2)

    assert result["per_attribute"] == pytest.approx(
        {"color:red/scarlet": 11 / 12, "skin tone:green": 7 / 10, "maturity:young/baby": 1.0}
    )
    assert result["mAP"] == pytest.approx(157 / 180)
    assert result["head"] == pytest.approx(97 / 120)
    assert result["medium"] == pytest.approx(1.0)
    assert result["tail"] is None  # its only attribute has no positive box
    assert result["by_parent_type"] == pytest.approx({"color": 97 / 120, "maturity": 1.0, "material": None})
    assert result["no_positive_box"] == ["material:metal"]
    assert result["chance"] == pytest.approx({"mAP": 7 / 15, "head": 1 / 2, "medium": 2 / 5, "tail": None})
    counts = ("boxes", "images", "attributes", "evaluated_attributes")
    assert [result[k] for k in counts] == [6, 3, 4, 3]
    assert result["skipped"][MISSING] == 1 and result["skipped"][SMALL] == 1
    assert sum(result["skipped"].values()) == 2
    # prompts "all" = a (2) + the (2) + none (1) templates per synonym: 2 + 1 + 8 + 1 synonyms
    assert result["texts"] == 5 * 12 == len(towers.texts)
    assert set(towers.sizes) == {(224, 224)}  # squashed like Resize((224, 224)), never centre-cropped


def test_mean_over_synonyms_differs_from_max(ovad_root: Path) -> None:
    """average_syn: the mean over an attribute's prompts (each synonym has 5, so the synonym mean).

    red/scarlet means: b3 .20 N, b2 .185 P, b1 .165 P, b6 .105 P, b4 .015 N
      -> AP = (1/2 + 2/3 + 3/4) / 3 = 23/36 (max gave 11/12)
    young/baby over 8 synonyms: b2 (.01 + .01 + 6 * .25)/8 = .19 P, b6 .23/8 N, b4 .20/8 P, b3 .14/8 N,
    b1 .07/8 N -> AP = (1 + 2/3) / 2 = 5/6
    green has one synonym: 7/10 as before. mAP = (23/36 + 7/10 + 5/6) / 3 = 391/540.
    """
    towers = FakeTowers()
    result = evaluate_ovad(ovad_root, towers.images, towers.text, average_syn=True, batch_size=4)
    assert result["per_attribute"] == pytest.approx(
        {"color:red/scarlet": 23 / 36, "skin tone:green": 7 / 10, "maturity:young/baby": 5 / 6}
    )
    assert result["mAP"] == pytest.approx(391 / 540)
    assert result["head"] == pytest.approx((23 / 36 + 7 / 10) / 2)


def test_flat_layout_and_one_prompt_set(tmp_path: Path) -> None:
    """ovad2000.json next to val2017/ works too; "a" alone gives 2 texts per synonym, same scores."""
    towers = FakeTowers()
    result = evaluate_ovad(make_ovad(tmp_path, flat=True), towers.images, towers.text, prompts="a")
    assert result["texts"] == 2 * 12
    assert result["mAP"] == pytest.approx(157 / 180)


def test_prompts_are_filled_as_the_benchmark_does() -> None:
    """Only the ends are stripped; " tone" leaves the type noun; "all" = a + the + none."""
    skin = Attribute(1, "skin tone:green", "skin tone", "color", "has", "head", ("green",))
    assert attribute_prompts(skin, "a") == ["a green skin", "a  has green skin"]
    with_object = ["a green skin object", "a object has green skin"]
    assert attribute_prompts(skin, "a", object_word=True) == with_object
    assert attribute_prompts(skin, "none") == ["green skin"]
    red = Attribute(0, "color:red", "color", "color", "is", "head", ("red",))
    assert attribute_prompts(red, "photo") == [
        "a photo of a red", "a photo of a  which is red", "a photo of the red", "a photo of the  which is red"
    ]
    assert attribute_prompts(red) == ["a red", "a  is red", "the red", "the  is red", "red"]
    with pytest.raises(ValueError, match="unknown OVAD prompt set"):
        attribute_prompts(red, "photos")


def test_maturity_gets_the_benchmarks_extra_synonyms(ovad_root: Path) -> None:
    young = load_ovad(ovad_root).attributes[2]
    assert young.synonyms == ("young", "baby", "kid", "kids", "child", "toddler", "boy", "girl")


def test_average_precision_ignores_unknown_labels() -> None:
    """Ranking .9 (unknown), .8 P, .7 N: AP = 1; counted as a negative it would be 1/2."""
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([-1, 1, 0])) == 1.0
    assert math.isnan(average_precision(np.array([0.9, 0.8]), np.array([0, -1])))


def test_average_precision_matches_sklearn_with_ties() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    for _ in range(50):
        scores = rng.integers(0, 6, size=40) / 5.0  # many ties
        labels = rng.choice([-1, 0, 1], size=40)
        labels[0] = 1
        known = labels >= 0
        expected = sklearn.average_precision_score(labels[known], scores[known])
        assert average_precision(scores, labels) == pytest.approx(expected)


def test_unreadable_image_is_skipped_and_counted(ovad_root: Path) -> None:
    (ovad_root / "coco/val2017/000000000102.png").write_bytes(b"not an image")
    towers = FakeTowers()
    result = evaluate_ovad(ovad_root, towers.images, towers.text)
    assert result["skipped"][UNREADABLE] == 2  # b3 and b4
    assert result["boxes"] == 4


def test_annotation_for_an_unlisted_image_is_skipped_and_counted(ovad_root: Path) -> None:
    json_path = ovad_root / "ovad/ovad2000.json"
    data = json.loads(json_path.read_text(encoding="utf-8"))
    data["annotations"][0]["image_id"] = 999  # b1
    json_path.write_text(json.dumps(data), encoding="utf-8")
    assert load_ovad(ovad_root).skipped[NO_IMAGE_ID] == 1
    towers = FakeTowers()
    assert evaluate_ovad(ovad_root, towers.images, towers.text)["boxes"] == 5


def test_missing_and_malformed_input_name_the_problem(tmp_path: Path) -> None:
    towers = FakeTowers()
    with pytest.raises(EvalSetError, match="no such folder"):
        evaluate_ovad(tmp_path / "nowhere", towers.images, towers.text)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalSetError, match=r"no ovad2000\.json"):
        load_ovad(tmp_path / "empty")
    root = make_ovad(tmp_path / "d")
    json_path = root / "ovad/ovad2000.json"
    text = json_path.read_text(encoding="utf-8")
    json_path.write_text(text[:-10], encoding="utf-8")
    with pytest.raises(EvalSetError, match=r"ovad2000\.json: not valid JSON"):
        load_ovad(root)
    data = json.loads(text)
    data["annotations"][2]["att_vec"] = [1, 0]
    json_path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(EvalSetError, match=r"annotations\[2\]: att_vec must hold 4 values"):
        load_ovad(root)
    data = json.loads(text)
    data["attributes"][3]["id"] = 7
    json_path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(EvalSetError, match=r"attribute ids are not 0\.\.3"):
        load_ovad(root)
    data = json.loads(text)
    data["attributes"][1]["freq_set"] = "rare"
    json_path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(EvalSetError, match=r"attributes\[1\]: freq_set 'rare'"):
        load_ovad(root)


def test_no_image_at_all_is_an_error(tmp_path: Path) -> None:
    root = make_ovad(tmp_path / "d")
    for path in (root / "coco/val2017").iterdir():
        path.unlink()
    towers = FakeTowers()
    with pytest.raises(EvalSetError, match="no box could be evaluated"):
        evaluate_ovad(root, towers.images, towers.text)


def test_encoder_with_wrong_row_count_is_refused(ovad_root: Path) -> None:
    towers = FakeTowers()
    with pytest.raises(ValueError, match="encode_texts returned shape"):
        evaluate_ovad(ovad_root, towers.images, lambda texts: towers.text(texts)[:-1])
