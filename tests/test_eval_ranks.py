"""Per-rank accuracy on a four-species set whose expected numbers are worked out by hand below."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kgclip.eval.ranks import complete_ranks, rank_groups, rank_metrics, rank_view, topk_metrics
from kgclip.eval.sets import CLASSIFICATION, RANKS, ClassInfo, EvalSet, EvalSetError, Item


def species(*path: str, name: str | None = None) -> ClassInfo:
    taxonomy = dict(zip(RANKS, path, strict=True))
    return ClassInfo(name or f"{path[-2]} {path[-1]}", taxonomy=taxonomy)


BIRDS = ("Animalia", "Chordata", "Aves", "Passeriformes")
CLASSES = (
    species(*BIRDS, "Corvidae", "Corvus", "corax"),  # 0 raven
    species(*BIRDS, "Corvidae", "Corvus", "corone"),  # 1 carrion crow
    species(*BIRDS, "Paridae", "Parus", "Parus major", name="great tit"),  # 2 (species as a binomial)
    species("Animalia", "Chordata", "Mammalia", "Carnivora", "Canidae", "Canis", "lupus"),  # 3 wolf
)
PROBS = np.array(
    [
        [0.3, 0.4, 0.1, 0.2],  # a raven taken for a crow: wrong species, right genus and above
        [0.35, 0.35, 0.0, 0.3],  # a great tit taken for a corvid: right order, wrong family
        [0.2, 0.2, 0.2, 0.4],  # a wolf: right species; genus and family tie 0.4 vs 0.4
    ]
)
LABELS = np.array([0, 2, 3])


def toy_set(classes=CLASSES, labels=(0, 2, 3, 1)) -> EvalSet:
    def items():
        for i, label in enumerate(labels):
            yield Item(f"k{i}", lambda i=i: f"image {i}".encode(), label=label)

    return EvalSet("toy", CLASSIFICATION, classes, items, "fp0", "test:toy")


def test_summed_rank_metrics_worked_by_hand():
    got = rank_metrics(PROBS, LABELS, CLASSES)
    assert list(got) == list(RANKS)
    # kingdom, phylum: one group, every image right; acc5 NaN below 5 groups, as CLIP_benchmark.
    for rank in ("kingdom", "phylum"):
        assert got[rank]["acc1"] == 1.0 and got[rank]["mean_per_class_recall"] == 1.0
    # class: Aves 0.8, 0.7 (right), wolf Aves 0.6 > Mammalia 0.4 (wrong): 2/3; recalls Aves 1, Mammalia 0.
    assert got["class"]["acc1"] == pytest.approx(2 / 3)
    assert got["class"]["mean_per_class_recall"] == pytest.approx(0.5)
    # order: Passeriformes 0.8, 0.7 (right); wolf Passeriformes 0.6 > Carnivora 0.4 (wrong).
    assert got["order"]["acc1"] == pytest.approx(2 / 3)
    assert got["order"]["mean_per_class_recall"] == pytest.approx(0.5)
    # family: raven Corvidae 0.7 (right); tit Corvidae 0.7 > Paridae 0 (wrong); wolf Canidae 0.4 ties
    # Corvidae 0.4 and wins as the lower group (sorted names: Canidae, Corvidae, Paridae). Recalls 1, 1, 0.
    assert got["family"]["acc1"] == pytest.approx(2 / 3)
    assert got["family"]["mean_per_class_recall"] == pytest.approx(2 / 3)
    # genus: the same pattern (Canis, Corvus, Parus).
    assert got["genus"]["acc1"] == pytest.approx(2 / 3)
    assert got["genus"]["mean_per_class_recall"] == pytest.approx(2 / 3)
    # species: raven 0.3 < crow 0.4 (wrong), tit 0.0 (wrong), wolf 0.4 (right); the crow has no image.
    assert got["species"]["acc1"] == pytest.approx(1 / 3)
    assert got["species"]["mean_per_class_recall"] == pytest.approx(1 / 3)
    assert all(math.isnan(m["acc5"]) for m in got.values())


def test_summing_is_by_group_not_by_argmax_species():
    """The raven image: its top species is wrong, yet its genus sums to 0.3 + 0.4."""
    got = rank_metrics(PROBS[:1], LABELS[:1], CLASSES, ranks=("genus", "species"))
    assert got["genus"]["acc1"] == 1.0 and got["species"]["acc1"] == 0.0


def test_topk_metrics_acc5_and_ties():
    scores = np.array([[6, 5, 4, 3, 2, 1], [6, 5, 4, 3, 2, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], float)
    got = topk_metrics(scores, np.array([5, 4, 0, 5]))
    # positions 5, 4, 0 (a tie goes to the lower index), 5: top-1 once, top-5 twice of four.
    assert got["acc1"] == 0.25 and got["acc5"] == 0.5
    # recalls over labels with images: class 0 1/1, class 4 0/1, class 5 0/2.
    assert got["mean_per_class_recall"] == pytest.approx(1 / 3)


def test_rank_metrics_checks_shapes():
    with pytest.raises(ValueError, match="do not match"):
        rank_metrics(PROBS[:, :3], LABELS, CLASSES)
    with pytest.raises(ValueError, match="labels outside"):
        rank_metrics(PROBS, np.array([0, 1, 4]), CLASSES)


def test_rank_view_relabels_and_names_groups():
    view = rank_view(toy_set(), "genus")
    assert [c.name for c in view.classes] == ["Canis", "Corvus", "Parus"]
    assert [c.scientific for c in view.classes] == ["Canis", "Corvus", "Parus"]
    assert view.classes[1].taxonomy == dict(zip(RANKS[:6], (*BIRDS, "Corvidae", "Corvus"), strict=True))
    items = list(view.items())
    assert [(i.key, i.label) for i in items] == [("k0", 1), ("k1", 2), ("k2", 0), ("k3", 1)]
    assert items[2].read() == b"image 2"
    assert view.task == CLASSIFICATION and view.name == "toy-genus"
    assert len({view.fingerprint, rank_view(toy_set(), "family").fingerprint, toy_set().fingerprint}) == 3


def test_species_view_names_binomials():
    names = [c.name for c in rank_view(toy_set(), "species").classes]
    assert names == ["Canis lupus", "Corvus corax", "Corvus corone", "Parus major"]


def test_homonyms_stay_apart_and_are_named_by_parent():
    gannet = species("Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "bassanus")
    mulberry = species("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "alba")
    groups = rank_groups([gannet, mulberry], "genus")
    assert groups.names == ["Morus (Moraceae)", "Morus (Sulidae)"]
    assert groups.group_of.tolist() == [1, 0]
    got = rank_metrics(np.array([[0.6, 0.4], [0.6, 0.4]]), np.array([0, 1]), [gannet, mulberry], ["genus"])
    assert got["genus"]["acc1"] == 0.5


def test_missing_rank_is_an_error_naming_how_many():
    partial = (*CLASSES[:3], ClassInfo("wolf", taxonomy={"kingdom": "Animalia", "species": "Canis lupus"}))
    assert complete_ranks(partial) == ("kingdom", "species")
    with pytest.raises(EvalSetError, match=r"1 of 4 classes have no genus \(first: wolf\)"):
        rank_view(toy_set(partial), "genus")
    with pytest.raises(EvalSetError, match="1 of 4 classes have no order"):
        rank_metrics(PROBS, LABELS, partial, ranks=["order"])
    with pytest.raises(EvalSetError, match="unknown rank 'tribe'"):
        rank_groups(CLASSES, "tribe")
