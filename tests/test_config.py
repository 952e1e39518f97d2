"""Config loading: bundled configs, `extends`, and errors that name the offending key."""

import hashlib
from pathlib import Path

import orjson
import pytest

from kgclip.config import ConfigError, builtin_names, load, load_raw, parse
from kgclip.stageconfig import reads_hash


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_configs_load():
    assert {"demo", "livingthings"} <= set(builtin_names())
    demo = load("demo")
    assert demo.name == "demo"
    # demo extends livingthings: the blacklist comes from there, the corpus source from demo
    assert "person.n.01" in demo.entities.wordnet.exclude_subtrees
    assert demo.search.corpus is not None and demo.search.corpus.importer == "tuxpaint"
    assert demo.queries.entities == "all"
    assert load("livingthings").queries.entities == "leaves"


def test_unknown_key_is_named_with_its_path(tmp_path):
    path = write(tmp_path, 'name = "x"\n[search.corpus]\nsource = "/x"\n[entities.wordnet]\nrootz = ["a"]\n')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert "entities.wordnet.rootz: unknown key" in str(err.value)
    assert str(path) in str(err.value)


def test_mistyped_value_is_named(tmp_path):
    path = write(tmp_path, 'name = "x"\n[search]\ntop_k = "many"\n[search.corpus]\nsource = "/x"\n')
    with pytest.raises(ConfigError, match=r"search\.top_k: .*integer"):
        load(path)


def test_bad_choice_and_range(tmp_path):
    with pytest.raises(ConfigError, match=r"fetch\.resize: "):
        parse({"name": "x", "search": {"corpus": {"source": "/x"}}, "fetch": {"resize": "widest"}})
    with pytest.raises(ConfigError, match=r"fetch\.jpeg_quality: .*less than or equal to 100"):
        parse({"name": "x", "search": {"corpus": {"source": "/x"}}, "fetch": {"jpeg_quality": 101}})


def test_missing_required_and_cross_field_checks():
    with pytest.raises(ConfigError, match=r"name: required key is missing"):
        parse({"search": {"corpus": {"source": "/x"}}})
    with pytest.raises(ConfigError, match=r"search: .*needs a \[search.corpus\] section"):
        parse({"name": "x", "search": {"backend": "corpus"}})
    with pytest.raises(ConfigError, match=r"search\.corpus: .*set `index`"):
        parse({"name": "x", "search": {"corpus": {}}})


def test_invalid_toml_is_reported(tmp_path):
    path = write(tmp_path, "name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_missing_file_lists_bundled_configs():
    with pytest.raises(ConfigError, match=r"bundled configs: .*demo"):
        load("no-such-config.toml")


def test_extends_merges_tables_and_replaces_lists(tmp_path):
    write(
        tmp_path,
        'name = "base"\n[search.corpus]\nsource = "/a"\n[entities.wordnet]\nroots = ["a.n.01"]\n'
        'exclude_names = ["x"]\n',
        "base.toml",
    )
    child = write(tmp_path, 'extends = "base.toml"\nname = "child"\n[entities.wordnet]\nroots = ["b.n.01"]\n')
    cfg = load(child)
    assert cfg.name == "child"
    assert cfg.entities.wordnet.roots == ["b.n.01"]
    assert cfg.entities.wordnet.exclude_names == ["x"]


def test_extends_loop_is_an_error(tmp_path):
    write(tmp_path, 'extends = "b.toml"\nname = "a"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\nname = "b"\n', "b.toml")
    with pytest.raises(ConfigError, match="loops"):
        load_raw(tmp_path / "a.toml")


def test_a_stage_digest_tracks_only_the_keys_it_reads():
    base = {"name": "x", "search": {"corpus": {"source": "/x"}}}
    a = parse(base)
    b = parse({**base, "fetch": {"size": 256}})
    assert reads_hash(a, ("entities", "seed")) == reads_hash(b, ("entities", "seed"))
    assert reads_hash(a, ("fetch",)) != reads_hash(b, ("fetch",))


def test_a_whole_section_digests_as_older_kgclip_hashed_it():
    """Work directories made before stages declared their keys stay done where a stage reads one
    section: the digest of `(section,)` is the old section hash. Settings added later that change
    how a stage runs, not what it writes, are left out, so adding one keeps the old digest."""
    cfg = parse({"name": "x", "search": {"corpus": {"source": "/x"}}})
    added_later = {"curate": {"executor", "shards_per_task"}}
    for name in ("entities", "queries", "curate"):
        old = {name: getattr(cfg, name).model_dump(mode="json", exclude=added_later.get(name, set()))}
        expected = hashlib.sha256(orjson.dumps(old, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        assert reads_hash(cfg, (name,)) == expected
