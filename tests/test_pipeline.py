"""The stage runner: skipping, staleness, --only/--from, and atomic writes, on a three-stage toy graph."""

import os
import sys
import types

import orjson
import pytest

from kgclip.config import parse
from kgclip.pipeline import PipelineError, Stage, StageResult, harvest, status
from kgclip.progress import meter
from kgclip.stageconfig import UndeclaredConfigKey
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


def test_an_interrupted_stage_shows_as_partial_with_its_progress(tmp_path, toy, monkeypatch):
    wd = Workdir(tmp_path)
    harvest(cfg(), wd, stages=toy)

    def interrupted(ctx):
        with meter("b: items", 10) as m:
            m.advance(4)
            raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["kgclip_toy_stages"], "run_b", interrupted)
    with pytest.raises(KeyboardInterrupt):
        harvest(cfg(), wd, start="b", stages=toy)
    got = {s.stage.name: s for s in status(cfg(), wd, toy)}
    assert got["b"].state == "partial"
    assert got["b"].why == "stopped before the end; rerun to resume: b: items 4/10"
    assert (got["c"].state, got["c"].why) == ("stale", "inputs changed: b")
    monkeypatch.setattr(sys.modules["kgclip_toy_stages"], "run_b", _stage_fn("b", "a"))
    assert harvest(cfg(), wd, stages=toy) == ["b"]  # same bytes as before: c stays valid
    assert states(cfg(), wd, toy) == {"a": "done", "b": "done", "c": "done"}
    assert not orjson.loads((tmp_path / "manifest.json").read_bytes()).get("running")


def test_a_running_stage_is_told_from_a_stopped_one(tmp_path, toy):
    wd = Workdir(tmp_path)
    wd.create()
    wd.mark_running("a")
    wd.note_progress("a", "a: things", 3, None)
    assert status(cfg(), wd, toy)[0].why == f"running now (pid {os.getpid()}): a: things 3"


def test_a_pending_stage_feeds_downstream_and_runs_again(tmp_path, toy, monkeypatch):
    """Requests left to retry (quota, transient failures) do not hold the stages after it back."""
    wd = Workdir(tmp_path)
    base = sys.modules["kgclip_toy_stages"].run_a

    def with_retries(ctx):
        base(ctx)
        return StageResult(1, {"retry_later": 2, "pending": "2 requests left to retry"})

    monkeypatch.setattr(sys.modules["kgclip_toy_stages"], "run_a", with_retries)
    assert harvest(cfg(), wd, stages=toy) == ["a", "b", "c"]
    st = {s.stage.name: s for s in status(cfg(), wd, toy)}
    assert (st["a"].state, st["a"].why) == ("pending", "2 requests left to retry")
    assert harvest(cfg(), wd, stages=toy) == ["a"]  # asked again; the same output keeps b and c done
    assert harvest(cfg(), wd, only="b", stages=toy) == ["b"]  # a pending input is usable


def test_only_with_a_stale_input_says_why_and_names_only_given_options(tmp_path, toy):
    wd = Workdir(tmp_path)
    harvest(cfg(), wd, stages=toy)
    (tmp_path / "a.txt").write_text("tampered")
    with pytest.raises(PipelineError, match=r"b needs a \(stale: outputs changed since the run\) first"):
        harvest(cfg(), wd, only="b", stages=toy)


def test_a_harvest_without_only_never_suggests_it(tmp_path, toy, monkeypatch):
    """Issue 11 item 2: "curate needs fetch first (run without --only)" was said to a user who gave
    no --only. Only a harvest given --only may mention it. Here b spoils a's output as it runs, so
    c (which reads a and b) finds a stale in a plain harvest."""
    a, b, c = toy
    mod = sys.modules["kgclip_toy_stages"]
    real_b = mod.run_b

    def spoiling(ctx):
        result = real_b(ctx)
        ctx.path("a.txt").write_text("spoilt")
        return result

    monkeypatch.setattr(mod, "run_b", spoiling)
    reads_both = Stage("c", "kgclip_toy_stages", ("curate",), ("a", "b"), ("c.txt",))
    object.__setattr__(reads_both, "run", c.run)
    with pytest.raises(PipelineError) as err:
        harvest(cfg(), Workdir(tmp_path), stages=(a, b, reads_both))
    assert str(err.value) == "c needs a (stale: outputs changed since the run) first"


def test_a_stage_reading_an_undeclared_key_fails(tmp_path, toy, monkeypatch):
    def sneaky(ctx):
        return ctx.config.seed

    monkeypatch.setattr(sys.modules["kgclip_toy_stages"], "run_a", sneaky)
    with pytest.raises(UndeclaredConfigKey, match="stage a read config key 'seed' without declaring it"):
        harvest(cfg(), Workdir(tmp_path), stages=toy)


def test_an_outside_input_that_changed_is_named_by_what_it_is(tmp_path, toy, monkeypatch):
    """`status` says "corpus index changed", not "inputs changed: external"."""
    mod = sys.modules["kgclip_toy_stages"]
    outside = {"fp": "first"}
    mod.index_fp = lambda config, workdir: outside["fp"]
    a, _, _ = toy
    b = Stage("b", "kgclip_toy_stages", ("queries",), ("a",), ("b.txt",), external=("index_fp",))
    b = Stage(**{**b.__dict__, "outside": "corpus index"})
    object.__setattr__(b, "run", lambda ctx: mod.run_b(ctx))
    wd = Workdir(tmp_path)
    harvest(cfg(), wd, stages=(a, b))
    outside["fp"] = "second"
    got = {s.stage.name: s for s in status(cfg(), wd, (a, b))}
    assert (got["b"].state, got["b"].why) == ("stale", "corpus index changed")
    harvest(cfg(fetch={"size": 99}), wd, only="a", stages=(a, b))
    got = {s.stage.name: s for s in status(cfg(fetch={"size": 99}), wd, (a, b))}
    assert got["b"].why == "inputs changed: a; corpus index changed"
