"""Zero-shot metrics on a hand-worked example (numpy only), and the results files' names and labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import balanced_accuracy_score

from kgclip.eval import examples
from kgclip.eval.metrics import chance, classification_metrics
from kgclip.eval.results import best_over_prompts, file_name, table

NAMES = ["a", "b", "c", "d", "e", "f"]
# Eight images of six classes. Worked out by hand, per image: the label, the top-1 class, and
# whether the label is among the five largest logits (ties: the lower class index first).
LOGITS = np.array(
    [
        [5, 4, 3, 2, 1, 0],  # label 0: top-1 0, right
        [0, 2, 3, 4, 1, 6],  # label 0: top-1 5 (a class without images); class 0 is 6th, not in top 5
        [0, 9, 1, 2, 3, 4],  # label 1: top-1 1, right
        [9, 0, 1, 2, 3, 4],  # label 1: top-1 0; top 5 = 0 5 4 3 2, so 1 is out
        [3, 2, 5, 9, 0, 1],  # label 2: top-1 3; top 5 = 3 2 0 1 5, 2 is in
        [0, 0, 0, 7, 0, 0],  # label 3: top-1 3, right
        [0, 0, 8, 1, 0, 0],  # label 3: top-1 2; 3 is second
        [0, 0, 0, 5, 0, 0],  # label 2: top-1 3; top 5 = 3 0 1 2 4, 2 is in
    ],
    dtype=np.float32,
)
LABELS = np.array([0, 0, 1, 1, 2, 3, 3, 2])


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_acc1_acc5_and_mean_per_class_recall_on_a_worked_example():
    m = classification_metrics(LOGITS, LABELS, NAMES)
    assert m["acc1"] == 3 / 8  # images 0, 2 and 5
    assert m["acc5"] == 6 / 8  # all but images 1 and 3
    # recall per class with images: a 1/2, b 1/2, c 0/2, d 1/2; e and f have none and are left out,
    # even though f is predicted once (sklearn drops a class seen only in the predictions)
    assert m["mean_per_class_recall"] == (0.5 + 0.5 + 0 + 0.5) / 4
    assert m["per_class_recall"] == [0.5, 0.5, 0.0, 0.5, None, None]
    assert m["mean_per_class_recall"] == balanced_accuracy_score(LABELS, LOGITS.argmax(axis=1))
    # the most frequent mistake first (c taken for d twice), then by class order
    assert m["confused"] == [["c", "d", 2], ["a", "f", 1], ["b", "a", 1], ["d", "c", 1]]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_each_confused_pair_gets_its_mistaken_images_and_one_of_the_class_taken_for():
    keys = [f"img{i}" for i in range(len(LABELS))]
    m = classification_metrics(LOGITS, LABELS, NAMES)
    picked = examples.pick(LOGITS.argmax(axis=1), LABELS, keys, m["confused"], NAMES, per_pair=1)
    # c taken for d: images 4 and 7, the first kept; of d, image 5 was right
    # a taken for f: image 1; f has no image at all. b taken for a: image 3; a was right on image 0.
    assert picked == [
        {"mistakes": ["img4"], "taken_for": ["img5"]},
        {"mistakes": ["img1"], "taken_for": []},
        {"mistakes": ["img3"], "taken_for": ["img0"]},
        {"mistakes": ["img6"], "taken_for": ["img4"]},  # d taken for c: c was never right, its first image
    ]
    assert examples.pick(LOGITS.argmax(axis=1), LABELS, keys, m["confused"][:1], NAMES, 5)[0]["mistakes"] == [
        "img4",
        "img7",
    ]


def test_acc5_is_nan_with_fewer_than_five_classes_as_in_clip_benchmark():
    m = classification_metrics(LOGITS[:, :4], np.array([0, 1, 2, 3, 0, 1, 2, 3]), NAMES[:4])
    assert math.isnan(m["acc5"]) and 0 <= m["acc1"] <= 1
    assert math.isnan(chance(4)["acc5"])
    assert chance(8) == {"acc1": 0.125, "acc5": 0.625}


def _result(prompts: str, acc1: float) -> dict:
    return {
        "dataset": "cub/test",
        "model": "ViT-B-32",
        "pretrained": "/x/w.bin",
        "task": "zeroshot_classification",
        "metrics": {"acc1": acc1, "acc5": math.nan, "mean_per_class_recall": acc1},
        "language": "en",
        "kgclip": {
            "names": "common",
            "prompts": prompts,
            "best_over_prompts": False,
            "images": 10,
            "classes": 4,
            "chance": chance(4),
            "fallback_names": 1,
        },
    }


def test_best_over_prompts_is_its_own_labelled_result():
    rows = [_result("none", 0.2), _result("openai_imagenet", 0.4), _result("my prompts.txt", 0.4)]
    best = best_over_prompts(rows)
    assert best["kgclip"]["best_over_prompts"] is True
    assert best["kgclip"]["prompts"] == "openai_imagenet"  # the first of equals, in the order asked
    assert best["kgclip"]["compared_prompts"] == ["none", "openai_imagenet", "my prompts.txt"]
    assert rows[1]["kgclip"]["best_over_prompts"] is False  # the plain row is left as it was
    assert file_name(best) == "cub-test_common_best-over-prompts_ViT-B-32_en_zeroshot_classification.json"
    assert file_name(rows[2]) == "cub-test_common_my-prompts.txt_ViT-B-32_en_zeroshot_classification.json"
    console = Console(width=200, record=True)
    console.print(table([*rows, best]))
    text = console.export_text()
    assert "best over prompts: openai_imagenet" in text
    assert "40.00% (25.00%)" in text and "n/a (n/a)" in text


def test_the_table_names_set_size_and_shows_fallbacks_only_when_there_are_some():
    with_fallbacks = _result("none", 0.2)
    console = Console(width=200, record=True)
    console.print(table([with_fallbacks]))
    text = console.export_text()
    assert "cub/test (10, 4)" in text and "fallback names" in text
    clean = _result("none", 0.2)
    clean["kgclip"]["fallback_names"] = 0
    console = Console(width=200, record=True)
    console.print(table([clean]))
    assert "fallback names" not in console.export_text()
