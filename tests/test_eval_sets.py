"""Set readers on tiny synthetic copies in each real layout, specs, and `kgclip export-eval`."""

from __future__ import annotations

import ast
import csv
import importlib.util
import io
import json
import os
import sys
import types
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from fifo_guard import fifos
from kgclip.cli import app
from kgclip.eval.cub import open_cub
from kgclip.eval.folder import open_folder
from kgclip.eval.imagenet import imagenet_classes, imagenet_wnids, open_imagenet, subset_indices
from kgclip.eval.inat import open_inat
from kgclip.eval.open import open_set, parse_spec
from kgclip.eval.rare_species import open_rare_species
from kgclip.eval.sets import ClassInfo, EvalSet, EvalSetError
from kgclip.eval.wds import read_wds

runner = CliRunner()


def image(colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, fmt)
    return buf.getvalue()


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def listing(evalset: EvalSet) -> list[tuple[str, int]]:
    return [(item.key, item.label) for item in evalset.items()]


# --- ImageFolder ---------------------------------------------------------------------------------


def image_folder(root: Path) -> Path:
    put(root / "b_dog" / "2.png", image((0, 0, 200)))
    put(root / "b_dog" / "1.jpg", image((0, 200, 0), "JPEG"))
    put(root / "a_cat" / "sub" / "x.PNG", image((200, 0, 0)))
    put(root / "a_cat" / "notes.txt", "not an image")
    put(root / "c_fox" / "f.webp", image((9, 9, 9), "WEBP"))
    put(root / "classnames.txt", "cat\ndog\nfox\n")
    return root


def test_a_folder_tree_lists_sorted_classes_and_images_without_reading_them(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "tree")
    evalset = open_folder(root)
    assert [c.name for c in evalset.classes] == ["cat", "dog", "fox"]
    assert listing(evalset) == [
        ("a_cat/sub/x.PNG", 0),
        ("b_dog/1.jpg", 1),
        ("b_dog/2.png", 1),
        ("c_fox/f.webp", 2),
    ]
    (root / "b_dog" / "2.png").write_bytes(b"changed later")  # bytes are read when asked for, not before
    assert [i.read() for i in evalset.items()][2] == b"changed later"
    assert evalset.name == "tree" and evalset.source == f"folder:{root}"


def test_a_names_file_elsewhere_and_a_count_mismatch(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "tree")
    names = put(tmp_path / "names.txt", "Felis\nCanis\nVulpes\n")
    assert [c.name for c in open_set(f"folder:{root},names={names}").classes] == ["Felis", "Canis", "Vulpes"]
    put(names, "Felis\nCanis\n")
    with pytest.raises(EvalSetError, match=r"names.txt: 2 class names but .* has 3 class folders"):
        open_set(f"folder:{root},names={names}")


def test_a_missing_class_file_is_named(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "tree")
    (root / "classnames.txt").unlink()
    with pytest.raises(EvalSetError, match=r"classnames.txt: missing \(one class name per line"):
        open_folder(root)


def test_a_fifo_is_left_out_with_its_reason_and_never_opened(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "tree")
    with fifos(root / "a_cat" / "pipe.jpg"):
        evalset = open_folder(root)
        assert evalset.skipped == ("a_cat/pipe.jpg: a FIFO, not a regular file",)
        assert "a_cat/pipe.jpg" not in [k for k, _ in listing(evalset)]
        assert len([i.read() for i in evalset.items()]) == 4


def test_a_corrupt_image_is_still_listed(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "tree")
    put(root / "a_cat" / "broken.jpg", b"\xff\xd8 not really a jpeg")
    evalset = open_folder(root)
    assert ("a_cat/broken.jpg", 0) in listing(evalset)
    assert evalset.skipped == ()


def test_the_fingerprint_follows_the_files(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "tree")
    first = open_folder(root).fingerprint
    assert open_folder(root).fingerprint == first
    put(root / "c_fox" / "f.webp", image((9, 9, 9), "PNG"))
    assert open_folder(root).fingerprint != first


def test_a_folder_without_class_folders_or_images(tmp_path: Path) -> None:
    put(tmp_path / "flat" / "x.png", image((1, 2, 3)))
    with pytest.raises(EvalSetError, match="no class folders"):
        open_folder(tmp_path / "flat")
    put(tmp_path / "empty" / "a" / "readme.txt", "no images")
    put(tmp_path / "empty" / "classnames.txt", "a\n")
    with pytest.raises(EvalSetError, match="no images for empty"):
        open_folder(tmp_path / "empty")
    with pytest.raises(EvalSetError, match="no such folder"):
        open_folder(tmp_path / "absent")


# --- ImageNet ------------------------------------------------------------------------------------

# class index -> wnid: tench, goldfish (animals), ballplayer (a person), daisy (a plant), toilet tissue
TENCH, GOLDFISH, BALLPLAYER, DAISY, TISSUE = 0, 1, 981, 985, 999


def imagenet_val(root: Path) -> Path:
    wnids = imagenet_wnids()
    for index in (TENCH, GOLDFISH, BALLPLAYER, DAISY, TISSUE):
        put(
            root / "val" / wnids[index] / f"ILSVRC2012_val_{index:08d}.JPEG",
            image((index % 256, 0, 0), "JPEG"),
        )
    put(root / "train" / "README", "the train split is not read")
    return root


def test_the_shipped_wnids_are_sorted_and_timms(tmp_path: Path) -> None:
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids))
    assert wnids == sorted(wnids)
    assert wnids[:2] == ["n01440764", "n01443537"] and wnids[-1] == "n15075141"
    timm = importlib.util.find_spec("timm")
    if timm is None or timm.origin is None:
        pytest.skip("timm is not installed: the shipped list cannot be compared with its file")
    theirs = Path(timm.origin).parent / "data" / "_info" / "imagenet_synsets.txt"
    assert wnids == theirs.read_text(encoding="utf-8").split()


def test_the_shipped_display_names_are_open_clips() -> None:
    classes = imagenet_classes()
    assert (classes[0].name, classes[0].wnid) == ("tench", "n01440764")
    assert (classes[999].name, classes[999].wnid) == ("toilet paper", "n15075141")
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        pytest.skip("open_clip is not installed: the shipped names cannot be compared with its file")
    tree = ast.parse((Path(spec.origin).parent / "zero_shot_metadata.py").read_text(encoding="utf-8"))
    assigned = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert [c.name for c in classes] == list(ast.literal_eval(assigned["IMAGENET_CLASSNAMES"]))


def test_the_wordnet_subsets_have_the_published_sizes_and_groups() -> None:
    living = subset_indices("lt")
    animals, persons, plants, fungi = range(398), [981, 982, 983], [985, 986], range(991, 998)
    assert living == [*animals, *persons, *plants, *fungi]
    assert len(living) == 410
    other = subset_indices("ot")
    assert len(other) == 590 and sorted(set(other) | set(living)) == list(range(1000))
    assert subset_indices("organisms") == [*animals, *plants, *fungi]
    assert len(subset_indices("organisms")) == 407


def test_imagenet_val_labels_are_the_sorted_wnid_positions(tmp_path: Path) -> None:
    root = imagenet_val(tmp_path / "imagenet")
    evalset = open_set(f"imagenet:{root}")
    assert evalset.name == "imagenet1k" and len(evalset.classes) == 1000
    assert [label for _, label in listing(evalset)] == [TENCH, GOLDFISH, BALLPLAYER, DAISY, TISSUE]
    assert evalset.classes[DAISY] == ClassInfo("daisy", wnid="n11939491")
    assert listing(open_imagenet(root / "val")) == listing(evalset)  # ROOT may be the val folder itself


def test_a_subset_is_a_classification_among_its_own_classes(tmp_path: Path) -> None:
    root = imagenet_val(tmp_path / "imagenet")
    lt = open_set(f"imagenet-lt:{root}")
    assert lt.name == "imagenet1k-lt" and len(lt.classes) == 410
    assert [label for _, label in listing(lt)] == [0, 1, 398, 401]  # ballplayer follows the 398 animals
    assert [lt.classes[i].name for i in (398, 401)] == ["baseball player", "daisy"]
    organisms = open_set(f"imagenet-organisms:{root}")
    assert [organisms.classes[label].wnid for _, label in listing(organisms)] == [
        imagenet_wnids()[i] for i in (TENCH, GOLDFISH, DAISY)
    ]
    ot = open_set(f"imagenet-ot:{root}")
    assert listing(ot) == [(f"{imagenet_wnids()[TISSUE]}/ILSVRC2012_val_00000999.JPEG", 589)]
    assert len({lt.fingerprint, ot.fingerprint, organisms.fingerprint}) == 3


def test_imagenet_folders_that_are_not_its_wnids(tmp_path: Path) -> None:
    root = imagenet_val(tmp_path / "imagenet")
    put(root / "val" / "n99999999" / "x.JPEG", image((1, 1, 1), "JPEG"))
    with pytest.raises(EvalSetError, match=r"unknown class folder 'n99999999' .*not an ImageNet-1k wnid"):
        open_imagenet(root)
    put(tmp_path / "flat" / "val" / "ILSVRC2012_val_00000001.JPEG", image((1, 1, 1), "JPEG"))
    with pytest.raises(EvalSetError, match="no wnid folders; ImageNet val must be sorted"):
        open_imagenet(tmp_path / "flat")


def test_a_wordnet_that_is_not_3_0_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "wn"
    put(fake / "data.noun", "  1 licence line\n")
    put(fake / "index.noun", "  1 licence line\n")
    root = imagenet_val(tmp_path / "imagenet")
    with pytest.raises(EvalSetError, match=r"ImageNet wnids are WordNet 3\.0 offsets"):
        open_set(f"imagenet-lt:{root},wordnet={fake}")


# --- iNaturalist 2021 ----------------------------------------------------------------------------

INAT_CATEGORIES = [
    (
        "Lumbricus terrestris",
        "Common Earthworm",
        ["Animalia", "Annelida", "Clitellata", "Haplotaxida", "Lumbricidae"],
    ),
    ("Bellis perennis", "", ["Plantae", "Tracheophyta", "Magnoliopsida", "Asterales", "Asteraceae"]),
    (
        "Amanita muscaria",
        "Fly Agaric",
        ["Fungi", "Basidiomycota", "Agaricomycetes", "Agaricales", "Amanitaceae"],
    ),
]


def inat_root(root: Path) -> Path:
    categories, images, annotations = [], [], []
    for cid, (latin, common, ranks) in reversed(
        list(enumerate(INAT_CATEGORIES))
    ):  # ids are not in file order
        genus, epithet = latin.split()
        folder = "_".join([f"{cid:05d}", *ranks, genus, epithet])
        categories.append(
            dict(zip(("kingdom", "phylum", "class", "order", "family"), ranks, strict=True))
            | {"id": cid, "name": latin, "common_name": common, "supercategory": ranks[0], "genus": genus}
            | {"specific_epithet": epithet, "image_dir_name": folder}
        )
        for n in range(2):
            image_id = 100 + 10 * cid + n
            file_name = f"val/{folder}/{image_id:04x}-photo.jpg"
            put(root / file_name, image((cid * 50, n * 90, 0), "JPEG"))
            images.append({"id": image_id, "file_name": file_name, "width": 8, "height": 6})
            annotations.append({"id": image_id, "image_id": image_id, "category_id": cid})
    put(
        root / "val.json",
        json.dumps({"images": images, "annotations": annotations, "categories": categories}),
    )
    return root


def test_inat_classes_carry_common_and_latin_names_and_the_ranks(tmp_path: Path) -> None:
    evalset = open_set(f"inat2021:{inat_root(tmp_path / 'inat')}")
    assert evalset.name == "inat2021"
    worm, daisy, agaric = evalset.classes
    assert worm == ClassInfo(
        "Common Earthworm",
        scientific="Lumbricus terrestris",
        common="Common Earthworm",
        taxonomy={
            "kingdom": "Animalia",
            "phylum": "Annelida",
            "class": "Clitellata",
            "order": "Haplotaxida",
            "family": "Lumbricidae",
            "genus": "Lumbricus",
            "species": "Lumbricus terrestris",
        },
    )
    assert (daisy.name, daisy.common, daisy.taxonomy["kingdom"]) == ("Bellis perennis", None, "Plantae")
    assert agaric.taxonomy["species"] == "Amanita muscaria"
    keys = [k for k, _ in listing(evalset)]
    assert keys == sorted(keys) and [label for _, label in listing(evalset)] == [0, 0, 1, 1, 2, 2]


def test_inat_images_without_annotation_are_left_out_and_named(tmp_path: Path) -> None:
    root = inat_root(tmp_path / "inat")
    data = json.loads((root / "val.json").read_text())
    lone = data["annotations"].pop()
    put(root / "val.json", json.dumps(data))
    evalset = open_inat(root)
    name = next(i["file_name"] for i in data["images"] if i["id"] == lone["image_id"])
    assert evalset.skipped == (f"{name}: no annotation in val.json",)
    assert len(listing(evalset)) == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("categories"), "no 'categories' list"),
        (lambda d: d["annotations"][0].update(category_id=77), "has category 77, not in categories"),
        (
            lambda d: d["images"][0].update(file_name="../outside.jpg"),
            "'../outside.jpg' is not a path inside",
        ),
        (lambda d: d["images"][0].pop("file_name"), "an entry without 'file_name'"),
    ],
)
def test_broken_inat_annotations_are_named(tmp_path: Path, change, message: str) -> None:
    root = inat_root(tmp_path / "inat")
    data = json.loads((root / "val.json").read_text())
    change(data)
    put(root / "val.json", json.dumps(data))
    with pytest.raises(EvalSetError, match=message):
        open_inat(root)


def test_a_missing_inat_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match=r"val.json: missing"):
        open_inat(tmp_path)


# --- CUB-200-2011 --------------------------------------------------------------------------------

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Chuck_will_Widow"]


def cub_root(root: Path) -> Path:
    base = root / "CUB_200_2011"
    put(base / "classes.txt", "".join(f"{i} {c}\n" for i, c in enumerate(CUB_CLASSES, 1)))
    images, labels, split = [], [], []
    for image_id in range(1, 10):
        cid = (image_id - 1) % 3 + 1
        rel = f"{CUB_CLASSES[cid - 1]}/{CUB_CLASSES[cid - 1][4:]}_{image_id:04d}.jpg"
        put(base / "images" / rel, image((image_id * 20, 0, 0), "JPEG"))
        images.append(f"{image_id} {rel}\n")
        labels.append(f"{image_id} {cid}\n")
        split.append(f"{image_id} {int(image_id <= 3)}\n")  # 1-3 train, 4-9 test
    put(base / "images.txt", "".join(reversed(images)))  # order comes from the ids, not the file
    put(base / "image_class_labels.txt", "".join(labels))
    put(base / "train_test_split.txt", "".join(split))
    return root


def test_cub_test_split_names_and_template(tmp_path: Path) -> None:
    root = cub_root(tmp_path / "cub")
    evalset = open_set(f"cub:{root}")
    assert [c.name for c in evalset.classes] == [
        "Black footed Albatross",
        "Laysan Albatross",
        "Chuck will Widow",
    ]
    assert evalset.classes[0].common == "Black footed Albatross"
    assert evalset.templates == ("a photo of a {c}, a type of bird.",)
    assert [label for _, label in listing(evalset)] == [0, 1, 2, 0, 1, 2]
    assert listing(evalset)[0][0] == "001.Black_footed_Albatross/Black_footed_Albatross_0004.jpg"
    assert listing(open_cub(root / "CUB_200_2011")) == listing(evalset)
    assert len(listing(open_set(f"cub:{root},split=train"))) == 3


def test_broken_cub_copies_are_named(tmp_path: Path) -> None:
    base = cub_root(tmp_path / "cub") / "CUB_200_2011"
    put(base / "train_test_split.txt", "".join(f"{i} 1\n" for i in range(1, 10)))
    with pytest.raises(EvalSetError, match=r"train_test_split.txt: no image in the test split"):
        open_cub(base)
    put(base / "image_class_labels.txt", "1 1\n")
    with pytest.raises(EvalSetError, match=r"image_class_labels.txt: no line for image 2"):
        open_cub(base, "train")
    (base / "classes.txt").unlink()
    with pytest.raises(EvalSetError, match=r"classes.txt: missing"):
        open_cub(base)
    with pytest.raises(EvalSetError, match="CUB split 'val'"):
        open_cub(base, "val")


# --- Rare Species --------------------------------------------------------------------------------

RARE = [
    (
        "Animalia",
        "Chordata",
        "Reptilia",
        "Testudines",
        "Geoemydidae",
        "Pangshura",
        "sylhetensis",
        "Assam Roofed Turtle",
    ),
    (
        "Animalia",
        "Mollusca",
        "Bivalvia",
        "Unionida",
        "Unionidae",
        "Cyclonaias",
        "tuberculata",
        "purple wartyback",
    ),
    ("Animalia", "Cnidaria", "Anthozoa", "Scleractinia", "Acroporidae", "Acropora", "millepora", ""),
]


def rare_root(root: Path) -> Path:
    header = ["file_name", "rarespecies_id", "eol_content_id", "eol_page_id", "kingdom", "phylum", "class"]
    header += ["order", "family", "genus", "species", "sciName", "common"]
    rows = []
    for n, (*ranks, common) in enumerate(RARE):
        folder = "-".join(ranks)
        for k in range(2):
            name = f"dataset/{folder}/{1000 * n + k}_{500 + n}_eol-full-size-copy.jpg"
            put(root / name, image((n * 60, k * 99, 9), "JPEG"))
            sci = f"{ranks[5]} {ranks[6]}"
            rows.append([name, f"id-{n}-{k}", str(1000 * n + k), str(500 + n), *ranks, sci, common])
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *reversed(rows)])
    put(root / "metadata.csv", buf.getvalue())
    return root


def test_rare_species_classes_are_the_sorted_scientific_names(tmp_path: Path) -> None:
    evalset = open_set(f"rare-species:{rare_root(tmp_path / 'rare')}")
    assert evalset.name == "rare_species"
    assert [c.scientific for c in evalset.classes] == [
        "Acropora millepora",
        "Cyclonaias tuberculata",
        "Pangshura sylhetensis",
    ]
    coral, mussel, turtle = evalset.classes
    assert (coral.name, coral.common) == ("Acropora millepora", None)
    assert (turtle.name, turtle.common) == ("Assam Roofed Turtle", "Assam Roofed Turtle")
    assert mussel.taxonomy == {
        "kingdom": "Animalia",
        "phylum": "Mollusca",
        "class": "Bivalvia",
        "order": "Unionida",
        "family": "Unionidae",
        "genus": "Cyclonaias",
        "species": "Cyclonaias tuberculata",
    }
    # file_name order: the folders Animalia-Chordata (turtle), -Cnidaria (coral), -Mollusca (mussel)
    assert [label for _, label in listing(evalset)] == [2, 2, 0, 0, 1, 1]


def test_rare_species_without_its_catalog_or_a_column(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match=r"metadata.csv: missing .*revision 06e9eae"):
        open_rare_species(tmp_path)
    root = rare_root(tmp_path / "rare")
    text = (root / "metadata.csv").read_text().replace("sciName", "scientific")
    put(root / "metadata.csv", text)
    with pytest.raises(EvalSetError, match=r"metadata\.csv: no column sciname"):
        open_rare_species(root)


def test_listed_files_that_are_missing_are_left_out_and_an_all_missing_set_is_an_error(
    tmp_path: Path,
) -> None:
    root = rare_root(tmp_path / "rare")
    files = sorted((root / "dataset").rglob("*.jpg"))
    files[0].unlink()
    evalset = open_rare_species(root)
    assert evalset.skipped == (f"{files[0].relative_to(root).as_posix()}: missing",)
    for f in files[1:]:
        f.unlink()
    with pytest.raises(EvalSetError, match=r"no images for rare_species \(6 left out, first: dataset/"):
        open_rare_species(root)


# --- specs ---------------------------------------------------------------------------------------


def test_an_unknown_kind_lists_the_kinds() -> None:
    for spec in ("coco:/data", "/data/imagenet"):
        with pytest.raises(
            EvalSetError, match=r"not an evaluation set spec; use one of wds:PATH, folder:PATH"
        ):
            open_set(spec)


def test_options_come_from_the_end_and_unknown_ones_are_named(tmp_path: Path) -> None:
    assert parse_spec("folder:/a,b/c,names=/n.txt") == ("folder", Path("/a,b/c"), {"names": "/n.txt"})
    with pytest.raises(EvalSetError, match="cub takes split, not names"):
        open_set(f"cub:{tmp_path},names=x")
    with pytest.raises(EvalSetError, match="no path after cub:"):
        open_set("cub:")
    root = cub_root(tmp_path / "cub")
    assert len(listing(open_set(f"cub:{root}", split="train", names="ignored"))) == 3  # a default
    assert len(listing(open_set(f"cub:{root},split=test", split="train"))) == 6  # the spec wins


def test_ovad_is_sent_to_the_eval_runner(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match=r"`kgclip eval MODEL --set ovad:ROOT` scores"):
        open_set(f"ovad:{tmp_path}")


def test_harvest_specs_go_to_the_harvest_reader(tmp_path: Path, monkeypatch) -> None:
    asked: list[Path] = []
    module = types.ModuleType("kgclip.eval.harvest_set")

    def open_harvest(path: Path) -> str:
        asked.append(path)
        return "the harvest set"

    module.open_harvest = open_harvest  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kgclip.eval.harvest_set", module)
    assert open_set(f"harvest:{tmp_path}") == "the harvest set"
    assert asked == [tmp_path]


def test_wds_specs_read_clip_benchmark_folders(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "tree")
    assert runner.invoke(app, ["export-eval", f"folder:{root}", "-o", str(tmp_path / "wds")]).exit_code == 0
    evalset = open_set(f"wds:{tmp_path / 'wds'},name=toy")
    assert evalset.name == "toy" and [c.name for c in evalset.classes] == ["cat", "dog", "fox"]


# --- export-eval ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["inat", "cub", "rare"])
def test_export_eval_round_trips_every_image_label_and_class(tmp_path: Path, layout: str) -> None:
    build, kind = {
        "inat": (inat_root, "inat2021"),
        "cub": (cub_root, "cub"),
        "rare": (rare_root, "rare-species"),
    }[layout]
    spec = f"{kind}:{build(tmp_path / 'src')}"
    out = tmp_path / "wds"
    result = runner.invoke(app, ["export-eval", spec, "-o", str(out)])
    assert result.exit_code == 0, result.output
    original = open_set(spec)
    n = len(listing(original))
    assert (
        f"wrote {n} images of {len(original.classes)} classes of {original.name} to {out / 'test'}"
        in result.output
    )
    back = read_wds(out)
    assert list(back.classes) == list(original.classes)  # names, wnids, ranks: kgclip_classes.json
    assert back.templates == original.templates
    assert [(i.label, i.read()) for i in back.items()] == [(i.label, i.read()) for i in original.items()]


def test_export_eval_of_imagenet_keeps_the_wnids_and_another_split(tmp_path: Path) -> None:
    out = tmp_path / "wds"
    result = runner.invoke(
        app, ["export-eval", f"imagenet-lt:{imagenet_val(tmp_path / 'in')}", "-o", str(out), "--split", "val"]
    )
    assert result.exit_code == 0, result.output
    back = read_wds(out, "val")
    assert len(back.classes) == 410 and back.classes[398].wnid == "n09835506"
    assert [i.label for i in back.items()] == [0, 1, 398, 401]


def test_export_eval_names_a_corrupt_image_and_leaves_nothing(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "tree")
    put(root / "b_dog" / "0.jpg", b"not an image at all")
    out = tmp_path / "wds"
    result = runner.invoke(app, ["export-eval", f"folder:{root}", "-o", str(out)])
    assert result.exit_code == 2
    assert "b_dog/0.jpg: the image cannot be decoded" in result.output
    assert not out.exists() and not os.path.exists(f"{out}.new")


def test_export_eval_says_what_is_wrong_with_a_spec(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export-eval", f"cub:{tmp_path}", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "classes.txt: missing" in result.output
