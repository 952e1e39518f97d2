"""The filter stage's `top_n` cap and its cleanup, against a loopback LLM."""

import pytest

from kgclip.config import load_raw, parse
from kgclip.pipeline import StageContext, stage_by_name
from kgclip.tables import Entity, FilterVerdict, Rejected, read_records, write_records
from kgclip.text import filter as filter_stage
from kgclip.text.filter import within_top_n
from kgclip.text.llm import LLM, LLMError
from kgclip.workdir import Workdir
from llm_server import ChatServer


def entity(eid: str, root: str, popularity: int) -> Entity:
    return Entity(eid, eid, [], "a thing", root, [root], True, popularity=popularity)


ENTITIES = [
    *(entity(f"a{i}", "A", popularity) for i, popularity in enumerate([5, 50, 7, 50, 1])),
    *(entity(f"b{i}", "B", popularity) for i, popularity in enumerate([3, 9])),
]


def test_within_top_n_takes_the_most_popular_of_each_root_ties_by_id():
    judged, beyond = within_top_n(ENTITIES, 2)
    assert [e.id for e in judged] == ["a1", "a3", "b0", "b1"]
    assert [e.id for e in beyond] == ["a0", "a2", "a4"]
    assert within_top_n(ENTITIES, 0) == (ENTITIES, [])


def _context(tmp_path, url: str, top_n: int, model: str = "test-model") -> StageContext:
    raw = load_raw("livingthings-llm")
    raw["filter"]["llm"].update(base_url=url, model=model, max_retries=0)
    raw["filter"]["top_n"] = top_n
    config = parse(raw)
    wd = Workdir(tmp_path / "work")
    wd.create()
    write_records(wd.path("entities.parquet"), ENTITIES, Entity)
    return StageContext(stage_by_name("filter").config_for(config), wd)


def test_only_the_top_n_are_judged_the_others_dropped_with_a_reason(tmp_path):
    with ChatServer(responder=lambda body: "true", api_key=None) as srv:
        ctx = _context(tmp_path, srv.url, top_n=2)
        result = filter_stage.run(ctx)
        asked = srv.count
    assert asked == 4  # a1, a3, b0, b1: nothing is sent for the others
    verdicts = {v.entity_id: v for v in read_records(ctx.path("filter.parquet"), FilterVerdict)}
    assert {e for e, v in verdicts.items() if v.keep} == {"a1", "a3", "b0", "b1"}
    assert {e: v.method for e, v in verdicts.items() if not v.keep} == dict.fromkeys(
        ["a0", "a2", "a4"], "top_n"
    )
    rejects = list(read_records(ctx.path("rejects/filter.parquet"), Rejected))
    assert {(r.item, r.reason) for r in rejects} == {(e, "beyond_top_n") for e in ("a0", "a2", "a4")}
    assert result.stats["judged"] == 4 and result.stats["beyond_top_n"] == 3


def test_top_n_zero_judges_all(tmp_path):
    with ChatServer(responder=lambda body: "true", api_key=None) as srv:
        filter_stage.run(_context(tmp_path, srv.url, top_n=0))
        assert srv.count == len(ENTITIES)


def test_the_client_is_closed_when_the_server_fails(tmp_path, monkeypatch):
    closed = []
    real_close = LLM.close

    async def close(self):
        closed.append(self.label)
        await real_close(self)

    monkeypatch.setattr(LLM, "close", close)
    # the server knows test-model only: every request is a 404
    with ChatServer(api_key=None) as srv, pytest.raises(LLMError):
        filter_stage.run(_context(tmp_path, srv.url, top_n=0, model="another-model"))
    assert closed == ["llm:another-model"]
