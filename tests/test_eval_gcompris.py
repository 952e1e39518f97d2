"""The GCompris photo set: the Qt .rcc reader on files built here in the real format, the mapping
checked against WordNet, the set built from the installed gcompris-qt-data, and its disjointness
from the demo's training corpus (Tux Paint stamps) shown with the decontamination index."""

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from kgclip.cli import app
from kgclip.config import load
from kgclip.eval import gcompris
from kgclip.eval.gcompris import (
    LICENSES_FILE,
    RCC_DIR,
    classes_of,
    corpus_images,
    disjointness,
    gcompris_set,
    load_mapping,
)
from kgclip.eval.rcc import RccError, RccFile
from kgclip.eval.sets import EvalSetError
from kgclip.eval.wds import read_wds
from kgclip.fetch.images import ImageOptions
from kgclip.kg.wordnet import open_wordnet

runner = CliRunner()


# --- a writer of Qt resource files, following Qt's rcc.cpp, so the reader meets the real layout ---


def qt_hash(name: str) -> int:
    """qt_hash(): the hash rcc stores with every name and sorts siblings by."""
    h = 0
    for ch in name:
        h = (h << 4) + ord(ch)
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


def make_rcc(files: dict[str, bytes], version: int = 3, compress: frozenset[str] = frozenset()) -> bytes:
    """A `.rcc` holding `files` (paths like `a/b.txt`); paths in `compress` are stored with zlib.

    Laid out as rcc writes it: header, data area, names area, then the tree, breadth first
    (record 0 is the root; a directory's children are consecutive records sorted by name hash).
    """
    tree: dict = {}
    for path, data in files.items():
        *dirs, leaf = path.split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = (path, data)
    records: list[tuple[str, object]] = [("", tree)]
    first: dict[int, int] = {}
    for i, (_, value) in enumerate(records):  # grows while it runs: breadth first
        if isinstance(value, dict):
            first[i] = len(records)
            records.extend(sorted(value.items(), key=lambda kv: qt_hash(kv[0])))
    names, data_area, tree_area = bytearray(), bytearray(), bytearray()
    for i, (name, value) in enumerate(records):
        name_offset = len(names) if i else 0
        if i:
            names.extend(struct.pack(">HI", len(name), qt_hash(name)) + name.encode("utf-16-be"))
        if isinstance(value, dict):
            flags, tail = 2, struct.pack(">II", len(value), first[i])
        else:
            path, payload = value
            flags = 0
            if path in compress:
                flags, payload = 1, struct.pack(">I", len(payload)) + zlib.compress(payload)
            tail = struct.pack(">HHI", 0, 0, len(data_area))  # country, language, data offset
            data_area.extend(struct.pack(">I", len(payload)) + payload)
        tree_area.extend(struct.pack(">IH", name_offset, flags) + tail)
        if version >= 2:
            tree_area.extend(struct.pack(">Q", 1_700_000_000_000))  # modification time, ms
    header = 20 if version < 3 else 24
    data_at, names_at = header, header + len(data_area)
    tree_at = names_at + len(names)
    head = b"qres" + struct.pack(">4I", version, tree_at, data_at, names_at)
    head += struct.pack(">I", 1) if version >= 3 else b""
    return head + bytes(data_area) + bytes(names) + bytes(tree_area)


FILES = {
    "gcompris/src/activities/erase/resource/README": b"Copyright: someone\nLicense: CC0-1.0\n",
    "gcompris/src/activities/erase/resource/alpaca.webp": b"RIFF\x00\x00\x00\x00WEBPfake",
    "gcompris/src/activities/erase/Erase.qml": b"import QtQuick 2.12\n" * 50,
    "gcompris/top.txt": "ünïcode ✓".encode(),
    "root.bin": bytes(range(256)),
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_reads_back_every_file_of_a_tree_in_each_format_version(tmp_path, version):
    path = tmp_path / "x.rcc"
    compressed = frozenset({"gcompris/src/activities/erase/Erase.qml", "gcompris/top.txt"})
    path.write_bytes(make_rcc(FILES, version, compressed))
    rcc = RccFile(path)
    assert rcc.version == version
    assert sorted(rcc.paths()) == sorted("/" + p for p in FILES)
    for name, data in FILES.items():
        assert rcc.read("/" + name) == data
    assert rcc.entries["/gcompris/top.txt"].compression == "zlib"
    assert rcc.entries["/root.bin"].compression is None


def test_rcc_reads_the_installed_gcompris_bundles():
    rcc = RccFile(RCC_DIR / "erase.rcc")
    assert rcc.version in (1, 2, 3)
    photo = rcc.read("/gcompris/src/activities/erase/resource/alpaca.webp")
    assert photo[:4] == b"RIFF" and photo[8:12] == b"WEBP"
    with Image.open(io.BytesIO(photo)) as im:
        assert im.format == "WEBP" and min(im.size) >= 256
    readme = rcc.read("/gcompris/src/activities/erase/resource/README").decode()
    assert "Files: alpaca.webp" in readme


def _error(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "bad.rcc"
    path.write_bytes(data)
    with pytest.raises(RccError) as info:
        rcc = RccFile(path)
        for name in rcc.paths():
            rcc.read(name)
    assert str(path) in str(info.value)
    return str(info.value)


def test_rcc_refuses_a_file_that_is_not_a_resource_file(tmp_path):
    assert "not a Qt resource file" in _error(tmp_path, b"PK\x03\x04 a zip, not an rcc" * 4)
    assert "not a Qt resource file" in _error(tmp_path, b"")


def test_rcc_refuses_an_unknown_format_version(tmp_path):
    good = make_rcc(FILES, 3)
    assert "version 4" in _error(tmp_path, good[:4] + struct.pack(">I", 4) + good[8:])


@pytest.mark.parametrize("keep", [6, 19, 60, 200, -30, -1])
def test_rcc_names_truncation_wherever_the_file_is_cut(tmp_path, keep):
    good = make_rcc(FILES, 2, frozenset({"gcompris/top.txt"}))
    assert "truncated" in _error(tmp_path, good[:keep])


def test_rcc_reports_damaged_zlib_data_and_refuses_zstd(tmp_path):
    files = {"a.txt": b"hello hello hello hello"}
    good = make_rcc(files, 3, frozenset(files))
    stream = good.index(zlib.compress(files["a.txt"]))
    assert "zlib data is damaged" in _error(tmp_path, good[:stream] + b"\xff\xff" + good[stream + 2 :])
    tree = struct.unpack(">I", good[8:12])[0]
    flags_at = tree + 22 + 4  # the file record after the root: its flags field
    zstd = good[:flags_at] + struct.pack(">H", 4) + good[flags_at + 2 :]
    assert "zstd" in _error(tmp_path, zstd)


def test_rcc_refuses_a_tree_whose_directory_points_back_to_itself(tmp_path):
    good = make_rcc({"d/a.txt": b"x"}, 3)
    tree = struct.unpack(">I", good[8:12])[0]
    dir_record = tree + 22  # record 1 is the directory `d`; make its first child record 0, the root
    looped = good[: dir_record + 10] + struct.pack(">I", 0) + good[dir_record + 14 :]
    assert "corrupt tree" in _error(tmp_path, looped)


def test_rcc_missing_resource_and_unreadable_file_are_clear_errors(tmp_path):
    path = tmp_path / "x.rcc"
    path.write_bytes(make_rcc(FILES, 3))
    with pytest.raises(RccError, match=r"no resource /nope\.webp"):
        RccFile(path).read("/nope.webp")
    os.mkfifo(tmp_path / "fifo.rcc")
    with pytest.raises(RccError, match="cannot read"):
        RccFile(tmp_path / "fifo.rcc")


# --- the mapping ---


@pytest.fixture(scope="module")
def photos():
    return load_mapping()


def _ancestors(wn, offset: int) -> set[int]:
    seen, stack = set(), [offset]
    while stack:
        for up in wn.by_offset(stack.pop()).related("@", "@i"):
            if up not in seen:
                seen.add(up)
                stack.append(up)
    return seen


def test_every_mapped_synset_is_an_animal_and_no_class_contains_another(photos):
    wn = open_wordnet()
    animal = wn.synset("animal.n.01").offset
    wnids = sorted({p.wnid for p in photos})
    for photo in photos:
        synset = wn.synset(photo.wnid)  # UnknownSynset unless a WordNet 3.0 noun synset
        assert synset.name == photo.synset, photo.resource
        assert animal in _ancestors(wn, synset.offset), f"{photo.resource}: {photo.synset} is no animal"
    # mutually exclusive classes: a photo of a class nested in another would be right under both
    offsets = {wn.synset(w).offset for w in wnids}
    for w in wnids:
        nested = _ancestors(wn, wn.synset(w).offset) & offsets
        assert not nested, f"{w} lies under {[wn.by_offset(o).name for o in nested]}"


def test_mapping_rows_are_complete_and_unique(photos):
    assert 80 <= len(photos) <= 90
    assert len({(p.rcc, p.resource) for p in photos}) == len(photos)
    assert {p.licence for p in photos} <= {"CC0-1.0", "PDM", "CC-BY-2.0", "CC-BY-3.0", "CC-BY-SA-4.0"}
    assert all(p.source_url.startswith("https://") for p in photos)
    classes, labels = classes_of(photos)
    assert sorted(set(labels)) == list(range(len(classes)))
    assert len(classes) == len({p.wnid for p in photos}) == len({p.class_name for p in photos})


def test_mapping_errors_name_the_line_and_the_problem():
    header = ",".join(gcompris.COLUMNS)
    with pytest.raises(EvalSetError, match="missing column"):
        load_mapping("rcc,resource\nerase.rcc,/x.webp\n")
    row = "erase.rcc,/x.webp,n02084071,dog.n.01,dog,,,someone,https://x,"
    with pytest.raises(EvalSetError, match=r"line 2: empty licence"):
        load_mapping(f"{header}\n{row}\n")
    with pytest.raises(EvalSetError, match="no rows"):
        load_mapping(header + "\n")
    ok = "erase.rcc,/x.webp,n02084071,dog.n.01,dog,,PDM,someone,https://x,"
    clash = "erase.rcc,/y.webp,n02084071,dog.n.01,hound,,PDM,someone,https://x,"
    with pytest.raises(EvalSetError, match="named 'hound' and 'dog'"):
        classes_of(load_mapping(f"{header}\n{ok}\n{clash}\n"))


def test_missing_package_says_how_to_install_it(tmp_path, photos):
    with pytest.raises(EvalSetError, match="apt-get install gcompris-qt-data"):
        gcompris_set(tmp_path / "absent", photos)


def test_a_mapped_photo_missing_from_the_bundles_is_named(tmp_path, photos):
    (tmp_path / "erase.rcc").write_bytes(make_rcc({"gcompris/other.webp": b"x"}, 3))
    erase = [p for p in photos if p.rcc == "erase.rcc"]
    with pytest.raises(EvalSetError) as info:
        gcompris_set(tmp_path, erase)
    message = str(info.value)
    assert f"{len(erase)} mapped photo(s) missing" in message
    assert "erase.rcc:/gcompris/src/activities/erase/resource/" in message
    assert "gcompris-qt-data 3.1" in message
    with pytest.raises(EvalSetError, match=r"categorization\.rcc: missing from gcompris-qt-data"):
        gcompris_set(tmp_path, photos)


# --- the set built from the installed package ---


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("gcompris") / "wds"
    result = runner.invoke(app, ["evalset", "gcompris", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_cli_builds_the_set_and_it_reads_back(exported, photos):
    out, output = exported
    classes, labels = classes_of(photos)
    assert f"wrote {len(photos)} photos in {len(classes)} classes" in output
    evalset = read_wds(out)
    assert [c.name for c in evalset.classes] == [c.name for c in classes]
    assert [c.wnid for c in evalset.classes] == [c.wnid for c in classes]
    assert evalset.templates == ()  # the runner chooses prompts
    items = list(evalset.items())
    assert [i.label for i in items] == labels
    bundles = {name: RccFile(RCC_DIR / name) for name in {p.rcc for p in photos}}
    for item, photo in zip(items, photos, strict=True):
        assert item.read() == bundles[photo.rcc].read(photo.resource)  # webp bytes kept as they are
    with Image.open(io.BytesIO(items[0].read())) as im:
        assert im.format == "WEBP"


def test_licences_file_lists_every_image_with_licence_author_and_source(exported, photos):
    text = (exported[0] / LICENSES_FILE).read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| s0")]
    assert len(rows) == len(photos)
    for i, (row, photo) in enumerate(zip(rows, photos, strict=True)):
        assert row.startswith(f"| s{i:07d} | {photo.rcc}:{photo.resource} |")
        assert photo.licence in row and photo.source_url in row and photo.author.replace("|", "\\|") in row


def test_set_fingerprint_is_stable_and_names_the_content(photos):
    a, b = gcompris_set(RCC_DIR, photos), gcompris_set(RCC_DIR, photos)
    assert a.fingerprint == b.fingerprint
    assert gcompris_set(RCC_DIR, photos[:-1]).fingerprint != a.fingerprint


# --- disjointness from the demo's training corpus ---


def test_no_gcompris_photo_is_in_the_demo_corpus(exported):
    cfg = load("demo")
    images, _ = corpus_images(cfg.search.corpus.source, cfg.search.corpus.importer)
    result = disjointness(
        exported[0], images, cfg.curate.decontam_distance, ImageOptions.from_config(cfg.fetch)
    )
    assert result.indexed == len(load_mapping())
    assert result.compared > 700 and result.compared + len(result.rejected) == len(images)
    assert result.matches == []
    assert result.nearest > result.distance


def test_disjointness_finds_a_photo_slipped_into_a_corpus(exported, tmp_path, photos):
    """The control: the same check does see a GCompris photo, resized and re-encoded as PNG."""
    cfg = load("demo")
    photo = photos[5]
    data = RccFile(RCC_DIR / photo.rcc).read(photo.resource)
    copy = tmp_path / "stamp.png"
    with Image.open(io.BytesIO(data)) as im:
        im.convert("RGB").resize((im.width // 4, im.height // 4)).save(copy)
    images, _ = corpus_images(cfg.search.corpus.source, cfg.search.corpus.importer)
    result = disjointness(exported[0], [*images[:50], copy], 8, ImageOptions.from_config(cfg.fetch))
    assert [(m[0], m[1]) for m in result.matches] == [(str(copy), "gcompris:test/0.tar/s0000005.webp")]
    assert result.nearest <= 8


def test_cli_reports_disjointness_from_the_demo_config(tmp_path):
    out = tmp_path / "wds"
    result = runner.invoke(
        app, ["evalset", "gcompris", "-o", str(out), "--disjoint-from", "demo"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "0 within 8 bits" in result.output
