"""The stage runner: skipping, staleness, --only/--from, and atomic writes, on a three-stage toy graph."""

import sys
import types

import pytest

from kgclip.config import parse
from kgclip.pipeline import PipelineError, Stage, StageResult, harvest, status
from kgclip.workdir import Workdir, atomic_path

RUNS: list[str] = []


def _stage_fn(name: str, upstream: str | None):
    def run(ctx):
        RUNS.append(name)
        setting = {
            "a": lambda: ctx.config.fetch.size,
            "b": lambda: ctx.config.queries.use_aliases,
            "c": lambda: "",
        }[name]()
        text = f"{name}:{setting}"
        if upstream:
            text += "<" + ctx.path(f"{upstream}.txt").read_text()
        with atomic_path(ctx.path(f"{name}.txt")) as tmp:
            tmp.write_text(text)
        return StageResult(1, {"n": 1})

    return run


@pytest.fixture
def toy(monkeypatch):
    mod = types.ModuleType("kgclip_toy_stages")
    mod.run_a = _stage_fn("a", None)
    mod.run_b = _stage_fn("b", "a")
    mod.run_c = _stage_fn("c", "b")
    monkeypatch.setitem(sys.modules, "kgclip_toy_stages", mod)
    RUNS.clear()

    def stage(name, section, inputs):
        s = Stage(name, "kgclip_toy_stages", (section,), inputs, (f"{name}.txt",))
        object.__setattr__(s, "run", lambda ctx: getattr(mod, f"run_{name}")(ctx))
        return s

    return (stage("a", "fetch", ()), stage("b", "queries", ("a",)), stage("c", "curate", ("b",)))


def cfg(**over):
    return parse({"name": "t", "search": {"corpus": {"source": "/x"}}, **over})


def states(config, wd, stages):
    return {s.stage.name: s.state for s in status(config, wd, stages)}


def test_first_run_runs_all_and_second_run_nothing(tmp_path, toy):
    wd = Workdir(tmp_path)
    assert harvest(cfg(), wd, stages=toy) == ["a", "b", "c"]
    assert states(cfg(), wd, toy) == {"a": "done", "b": "done", "c": "done"}
    assert harvest(cfg(), wd, stages=toy) == []
    assert RUNS == ["a", "b", "c"]
    rec = wd.load_manifest()["b"]
    assert rec.rows == 1 and rec.stats == {"n": 1} and rec.seconds >= 0 and set(rec.inputs) == {"a"}


def test_changed_section_reruns_that_stage_and_downstream_only(tmp_path, toy):
    wd = Workdir(tmp_path)
    harvest(cfg(), wd, stages=toy)
    RUNS.clear()
    changed = cfg(fetch={"size": 256})  # stage a's section; its output changes
    assert states(changed, wd, toy)["a"] == "stale"
    assert harvest(changed, wd, stages=toy) == ["a", "b", "c"]
    RUNS.clear()
    middle = cfg(fetch={"size": 256}, queries={"use_aliases": False})  # b's section: b and c re-run, not a
    assert harvest(middle, wd, stages=toy) == ["b", "c"]


def test_deleted_output_reruns_that_stage_but_not_upstream(tmp_path, toy):
    wd = Workdir(tmp_path)
    harvest(cfg(), wd, stages=toy)
    RUNS.clear()
    (tmp_path / "b.txt").unlink()
    assert states(cfg(), wd, toy) == {"a": "done", "b": "missing", "c": "done"}
    # b re-creates identical content, so c's input is unchanged and c is not redone
    assert harvest(cfg(), wd, stages=toy) == ["b"]
    assert RUNS == ["b"]


def test_edited_output_makes_stage_and_downstream_stale(tmp_path, toy):
    wd = Workdir(tmp_path)
    harvest(cfg(), wd, stages=toy)
    (tmp_path / "a.txt").write_text("tampered")
    st = states(cfg(), wd, toy)
    assert st["a"] == "stale" and st["c"] == "done"
    RUNS.clear()
    assert harvest(cfg(), wd, stages=toy) == ["a"]  # a restores the same bytes; b and c stay valid


def test_only_and_from(tmp_path, toy):
    wd = Workdir(tmp_path)
    with pytest.raises(PipelineError, match="needs a first"):
        harvest(cfg(), wd, only="b", stages=toy)
    harvest(cfg(), wd, stages=toy)
    RUNS.clear()
    assert harvest(cfg(), wd, only="b", stages=toy) == ["b"]
    assert harvest(cfg(), wd, start="b", stages=toy) == ["b", "c"]
    with pytest.raises(PipelineError, match="unknown stage 'zz'"):
        harvest(cfg(), wd, only="zz", stages=toy)
    with pytest.raises(PipelineError, match="exclude each other"):
        harvest(cfg(), wd, only="a", start="b", stages=toy)


def test_a_failing_stage_leaves_no_record_and_no_output(tmp_path, toy, monkeypatch):
    wd = Workdir(tmp_path)
    harvest(cfg(), wd, stages=toy)

    def boom(ctx):
        with atomic_path(ctx.path("b.txt")) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")

    monkeypatch.setattr(sys.modules["kgclip_toy_stages"], "run_b", boom)
    with pytest.raises(RuntimeError):
        harvest(cfg(), wd, start="b", stages=toy)
    assert "b" not in wd.load_manifest()
    assert (tmp_path / "b.txt").read_text().startswith("b:")  # the old file, never a torn one
    assert not list(tmp_path.glob(".b.txt.tmp-*"))
