"""Every setting that shapes a stage's output is in its fingerprint, by construction: a stage sees
only the config keys it declares, and its digest covers exactly those keys and its outside files."""

import os
import shutil

import pytest

from fifo_guard import fifos
from kgclip.config import ConfigError, load, parse
from kgclip.kg.entities import _content_digest
from kgclip.kg.merge import BridgeError, load_bridge
from kgclip.kg.wordnet import find_database
from kgclip.pipeline import STAGES, stage_by_name, status
from kgclip.stageconfig import UndeclaredConfigKey, declared_tree, reads_hash, view
from kgclip.workdir import Workdir


def _config(tmp_path, body: str):
    path = tmp_path / "c.toml"
    path.write_text('extends = "demo"\n' + body)
    return load(path)


def _states(config, work):
    return {s.stage.name: (s.state, s.why) for s in status(config, Workdir(work))}


def test_the_top_level_seed_makes_balancing_and_llm_types_stale(demo_run, tmp_path):
    got = _states(_config(tmp_path, "seed = 7\n"), demo_run)
    assert got["curate"] == ("stale", "config [seed] changed")
    assert got["types"] == ("stale", "config [seed] changed")
    assert got["entities"][0] == got["queries"][0] == got["fetch"][0] == "done"


def test_category_roots_make_the_filter_and_attributes_stale(demo_run, tmp_path):
    body = '[attributes.category_roots]\nanimal = ["wn:n00015388"]\n'
    got = _states(_config(tmp_path, body), demo_run)
    assert got["filter"] == ("stale", "config [attributes.category_roots] changed")
    assert got["attributes"][0] == "stale" and got["types"][0] == "done"


def test_another_wordnet_folder_makes_the_filter_stale(demo_run, tmp_path):
    copy = tmp_path / "wn"
    shutil.copytree(find_database(), copy)
    got = _states(_config(tmp_path, f'[entities.wordnet]\npath = "{copy}"\n'), demo_run)
    assert got["filter"] == ("stale", "config [entities.wordnet.path] changed")


def test_the_bridge_files_content_is_in_the_entities_fingerprint(tmp_path):
    dump = tmp_path / "dump.json"
    dump.write_text("[]\n")
    bridge = tmp_path / "bridge.tsv"
    bridge.write_text("wn31\twn30\n00001740-n\t00001740-n\n")
    cfg = _config(
        tmp_path,
        f'[entities.wikidata]\nsource = "dump"\ndump = "{dump}"\ncontact = "t@example.org"\n'
        f'[[entities.wikidata.roots]]\nname = "animal"\nqid = "Q729"\n'
        f'[entities.merge]\nbridge = "{bridge}"\n',
    )
    entities = stage_by_name("entities")
    before = entities.external_fingerprint(cfg, Workdir(tmp_path))
    stat = bridge.stat()
    bridge.write_text("wn31\twn30\n00001741-n\t00001740-n\n")  # same size and mtime, other content
    os.utime(bridge, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert entities.external_fingerprint(cfg, Workdir(tmp_path)) != before


def test_a_view_refuses_undeclared_keys_and_answers_declared_ones():
    cfg = parse({"name": "t", "seed": 3, "search": {"corpus": {"source": "/x"}}})
    seen = view(cfg, ("curate", "entities.wordnet.path"), "curate")
    assert seen.curate.samples_per_shard == 5000
    assert seen.entities.wordnet.path is None
    with pytest.raises(UndeclaredConfigKey, match="stage curate read config key 'seed'"):
        _ = seen.seed
    with pytest.raises(UndeclaredConfigKey, match=r"'entities\.wordnet\.roots'"):
        _ = seen.entities.wordnet.roots


def test_a_whole_section_swallows_its_deeper_paths():
    assert declared_tree(("entities.wordnet.path", "entities", "seed")) == {"entities": None, "seed": None}


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_declared_key_exists_and_counts(stage):
    """A misspelt declaration would fail here, not silently hash nothing."""
    cfg = load("demo")
    assert reads_hash(cfg, stage.reads)
    assert stage.name in stage.reads  # each stage reads at least its own section


def test_a_fifo_as_bridge_or_config_is_refused_without_blocking(tmp_path):
    bridge, config = tmp_path / "bridge.tsv", tmp_path / "c.toml"
    with fifos(bridge, config):
        with pytest.raises(BridgeError, match="a FIFO, not a regular file"):
            load_bridge(bridge)
        with pytest.raises(ConfigError):
            load(config)
        assert "unreadable" in _content_digest(bridge)


def test_how_curate_runs_leaves_it_done_and_what_it_writes_makes_it_stale(demo_run, tmp_path):
    """`[curate] executor` and `shards_per_task` change where the shards are written, not a byte of
    them (tests/test_curate_stage.py checks the bytes): they are left out of curate's digest, so
    existing work directories stay done; the shard size is in it."""
    got = _states(_config(tmp_path, '[curate]\nexecutor = "ray"\nshards_per_task = 2\n'), demo_run)
    assert got["curate"][0] == "done"
    got = _states(_config(tmp_path, "[curate]\nsamples_per_shard = 7\n"), demo_run)
    assert got["curate"] == ("stale", "config [curate] changed")
