"""kgclip never deletes or overwrites what it did not write: it marks its work directories and
refuses anyone else's, the demo included."""

import orjson
from typer.testing import CliRunner

from kgclip.cli import app
from kgclip.config import load
from kgclip.workdir import MARKER, Workdir

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _users_folder(tmp_path, name: str, content: bytes):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.txt").write_text("three years of work")
    (folder / name).write_bytes(content)
    return folder


def test_demo_refuses_a_folder_with_a_config_json_it_did_not_write(tmp_path):
    folder = _users_folder(tmp_path, "config.json", b'{"mine": true}')
    result = invoke("demo", "-w", str(folder))
    assert result.exit_code == 2 and "was not made by kgclip" in result.output
    assert (folder / "thesis.txt").read_text() == "three years of work"
    assert (folder / "config.json").read_bytes() == b'{"mine": true}'


def test_demo_refuses_a_folder_with_someone_elses_manifest(tmp_path):
    folder = _users_folder(tmp_path, "manifest.json", b'{"files": []}')
    assert invoke("demo", "-w", str(folder)).exit_code == 2
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "thesis.txt"]


def test_harvest_refuses_a_non_empty_folder_it_did_not_make(tmp_path):
    folder = _users_folder(tmp_path, "parts", b"")
    result = invoke("harvest", "demo", "-w", str(folder))
    assert result.exit_code == 2 and "not empty and was not made by kgclip" in result.output
    assert not (folder / MARKER).exists() and not (folder / "manifest.json").exists()


def test_demo_will_not_overwrite_a_real_harvest(tmp_path):
    work = tmp_path / "work"
    Workdir(work).create()
    cfg = load("livingthings")
    (work / "config.json").write_bytes(orjson.dumps(cfg.model_dump(mode="json")))
    (work / "entities.parquet").write_bytes(b"a week of harvesting")
    result = invoke("demo", "-w", str(work))
    assert result.exit_code == 2 and "the harvest 'livingthings'" in result.output
    assert (work / "entities.parquet").read_bytes() == b"a week of harvesting"


def test_an_empty_folder_becomes_a_marked_workdir(tmp_path):
    wd = Workdir(tmp_path / "empty")
    wd.root.mkdir()
    wd.create()
    assert wd.is_ours() and (wd.root / MARKER).is_file()


def test_a_workdir_of_an_older_kgclip_is_adopted(tmp_path):
    """Made before the mark existed: its manifest names a kgclip version and holds stage records."""
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"kgclip_version": "0.1.0", "stages": {}}))
    wd = Workdir(tmp_path)
    wd.create()
    assert (tmp_path / MARKER).is_file()


def test_demo_rebuilds_its_own_workdir_and_says_so(demo_copy):
    (demo_copy / "notes.txt").write_text("my notes about the demo")
    result = invoke("demo", "-w", str(demo_copy), "--train-steps", "0")
    assert result.exit_code == 0, result.output
    assert "is an earlier demo; running every stage again" in result.output
    assert "entities: running" in result.output and "curate: running" in result.output
    assert (demo_copy / "notes.txt").read_text() == "my notes about the demo"
    kept = invoke("demo", "-w", str(demo_copy), "--keep", "--train-steps", "0")
    assert kept.exit_code == 0 and "curate: up to date" in kept.output
