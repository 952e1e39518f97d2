"""CLIP_benchmark wds folders: what kgclip writes reads back, and every broken folder is named."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from kgclip.eval.sets import CLASSIFICATION, RETRIEVAL, ClassInfo, EvalSet, EvalSetError, Item
from kgclip.eval.wds import read_wds, write_wds


def image(colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, fmt)
    return buf.getvalue()


def make_set(n: int = 5, fmt: str = "PNG", task: str = CLASSIFICATION) -> EvalSet:
    data = [image((40 * i, 10, 200 - 30 * i), fmt) for i in range(n)]
    classes = [
        ClassInfo("cat", wnid="n02121808", taxonomy={"kingdom": "Animalia"}),
        ClassInfo("dog", aliases=("hound",)),
    ]

    def items():
        for i, d in enumerate(data):
            if task == CLASSIFICATION:
                yield Item(f"k{i}", lambda d=d: d, label=i % 2)
            else:
                yield Item(f"k{i}", lambda d=d: d, texts=(f"picture {i}", f"line\nbreak {i}"))

    listed = classes if task == CLASSIFICATION else []
    return EvalSet("toy", task, listed, items, "fp", "test", ("a photo of a {c}.",))


def test_a_classification_set_round_trips_with_its_graph_metadata(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    assert write_wds(make_set(5), out, max_count=2) == 5
    assert (out / "test" / "nshards.txt").read_text() == "3\n"  # 2 + 2 + 1, no empty shard
    assert (out / "classnames.txt").read_text() == "cat\ndog\n"
    back = read_wds(out)
    assert back.task == CLASSIFICATION and back.templates == ("a photo of a {c}.",)
    assert back.classes[0].wnid == "n02121808" and back.classes[0].taxonomy == {"kingdom": "Animalia"}
    assert back.classes[1].aliases == ("hound",)
    got = [(i.key, i.label, i.read()) for i in back.items()]
    assert [k for k, _, _ in got] == [f"s{i:07d}" for i in range(5)]
    assert [lab for _, lab, _ in got] == [0, 1, 0, 1, 0]
    assert [b for _, _, b in got] == [i.read() for i in make_set(5).items()]  # png bytes kept as they are
    with tarfile.open(out / "test" / "0.tar") as tar:
        assert tar.getnames() == ["s0000000.png", "s0000000.cls", "s0000001.png", "s0000001.cls"]


def test_formats_clip_benchmark_cannot_read_become_lossless_webp(tmp_path: Path) -> None:
    write_wds(make_set(2, fmt="BMP"), tmp_path / "bmp")
    first = next(iter(read_wds(tmp_path / "bmp").items())).read()
    with Image.open(io.BytesIO(first)) as im:
        assert im.format == "WEBP" and im.getpixel((0, 0)) == (0, 10, 200)


def test_a_retrieval_set_keeps_every_caption(tmp_path: Path) -> None:
    write_wds(make_set(3, task=RETRIEVAL), tmp_path / "ret")
    assert (tmp_path / "ret" / "dataset_type.txt").read_text() == "retrieval\n"
    back = read_wds(tmp_path / "ret")
    assert back.task == RETRIEVAL
    assert [i.texts for i in back.items()][2] == ("picture 2", r"line\nbreak 2")


def test_the_fingerprint_changes_with_the_content(tmp_path: Path) -> None:
    write_wds(make_set(3), tmp_path / "a")
    before = read_wds(tmp_path / "a").fingerprint
    assert read_wds(tmp_path / "a").fingerprint == before
    write_wds(make_set(4), tmp_path / "a")
    assert read_wds(tmp_path / "a").fingerprint != before


def test_a_folder_kgclip_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.txt").write_text("years of work")
    with pytest.raises(EvalSetError, match="not written by kgclip"):
        write_wds(make_set(2), mine)
    assert (mine / "chapter1.txt").read_text() == "years of work" and not (tmp_path / "thesis.new").exists()


def test_a_file_where_the_folder_should_go_is_named_and_kept(tmp_path: Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    with pytest.raises(EvalSetError, match="exists and is not a folder"):
        write_wds(make_set(2), mine)
    assert mine.read_text() == "mine" and not (tmp_path / "notes.txt.new").exists()


def test_an_empty_set_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    empty = EvalSet("none", CLASSIFICATION, [ClassInfo("a")], lambda: iter(()), "fp", "test")
    with pytest.raises(EvalSetError, match="no images"):
        write_wds(empty, tmp_path / "e")
    assert list(tmp_path.iterdir()) == []


def broken(tmp_path: Path, change) -> Path:
    out = tmp_path / "set"
    write_wds(make_set(3), out)
    change(out)
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: (p / "classnames.txt").unlink(), r"classnames.txt: missing"),
        (lambda p: (p / "classnames.txt").write_text("\n\n"), "no class names"),
        (lambda p: (p / "classnames.txt").write_text("cat\n"), "2 classes differ from classnames.txt's 1"),
        (lambda p: (p / "test" / "nshards.txt").unlink(), r"nshards.txt: missing"),
        (lambda p: (p / "test" / "nshards.txt").write_text("two"), "not a number of shards"),
        (lambda p: (p / "test" / "nshards.txt").write_text("2"), "says 2 shards; missing 1.tar"),
        (lambda p: (p / "kgclip_classes.json").write_text("{"), "not kgclip's class list"),
    ],
)
def test_a_broken_folder_names_the_file_and_the_problem(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(EvalSetError, match=message):
        read_wds(broken(tmp_path, change))


def test_a_label_outside_the_class_list_is_named_when_read(tmp_path: Path) -> None:
    out = broken(tmp_path, lambda p: None)
    (out / "kgclip_classes.json").unlink()
    (out / "classnames.txt").write_text("cat\n")  # the set has labels 0 and 1
    with pytest.raises(EvalSetError, match=r"s0000001: label 1 but classnames.txt has 1 classes"):
        list(read_wds(out).items())


def test_a_sample_without_its_label_is_named(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    (out / "test").mkdir(parents=True)
    (out / "classnames.txt").write_text("cat\n")
    (out / "test" / "nshards.txt").write_text("1\n")
    with tarfile.open(out / "test" / "0.tar", "w") as tar:
        data = image((1, 2, 3))
        info = tarfile.TarInfo("s0000000.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(EvalSetError, match=r"0.tar/s0000000: no cls member"):
        list(read_wds(out).items())


def test_a_folder_that_is_not_there_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="no such folder"):
        read_wds(tmp_path / "absent")


def test_classes_json_is_plain_json(tmp_path: Path) -> None:
    write_wds(make_set(2), tmp_path / "j")
    rows = json.loads((tmp_path / "j" / "kgclip_classes.json").read_text())
    expected = {"name": "dog", "wnid": None, "scientific": None, "common": None, "taxonomy": {}}
    assert rows[1] == {**expected, "aliases": ["hound"]}
