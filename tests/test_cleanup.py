"""Cleanups run when a stage fails: LLM clients closed, backends opened before a failing one closed."""

import asyncio

import pytest

from kgclip.config import load_raw, parse
from kgclip.pipeline import StageContext, stage_by_name
from kgclip.search import stage as search_stage
from kgclip.search.corpus import CorpusBackend
from kgclip.search.ledger import SearchLedger
from kgclip.search.web import SearchError
from kgclip.tables import Entity
from kgclip.text.attributes import ask_model
from kgclip.text.llm import LLM, LLMCache, LLMError
from kgclip.text.llm_types import llm_types
from kgclip.workdir import Workdir
from llm_server import ChatServer

ROOT = Entity("A", "animal", [], "a living thing", "A", [], False, popularity=9)
ENTITIES = [ROOT, *(Entity(f"a{i}", f"beast{i}", [], "a beast", "A", ["A"], True) for i in range(3))]


@pytest.fixture
def closed(monkeypatch):
    """The labels of the LLM clients closed."""
    seen: list[str] = []
    real_close = LLM.close

    async def close(self):
        seen.append(self.label)
        await real_close(self)

    monkeypatch.setattr(LLM, "close", close)
    return seen


def _config(url: str):
    raw = load_raw("livingthings-llm")
    for section in (raw["types"]["llm"], *raw["attributes"]["llm"]):
        section.update(base_url=url, model="another-model", max_retries=0)  # the server: 404
    return parse(raw)


def test_types_close_the_client_when_the_server_fails(tmp_path, closed):
    wd = Workdir(tmp_path / "work")
    wd.create()
    with ChatServer(api_key=None) as srv, pytest.raises(LLMError):
        ctx = StageContext(stage_by_name("types").config_for(_config(srv.url)), wd)
        llm_types(ENTITIES, {e.id for e in ENTITIES}, ctx)
    assert closed == ["llm:another-model"]


def test_attributes_close_the_client_when_the_server_fails(tmp_path, closed):
    cache = LLMCache(tmp_path / "llm.sqlite")
    try:
        with ChatServer(api_key=None) as srv, pytest.raises(LLMError):
            config = _config(srv.url)
            ask = ask_model(config.attributes.llm[0], ENTITIES, config.attributes, lambda e: "animal", cache)
            asyncio.run(ask)
    finally:
        cache.close()
    assert closed == ["llm:another-model"]


def test_backends_opened_before_a_failing_one_are_closed(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("A fox.")
    monkeypatch.delenv("BRAVE_API_KEY", raising=False)
    config = parse(
        {
            "name": "t",
            "search": {
                "backends": ["corpus", "brave"],
                "corpus": {"source": str(src)},
                "brave": {"contact": "test@example.org"},
            },
        }
    )
    closed: list[str] = []
    real_close = CorpusBackend.close

    def close(self):
        closed.append(self.corpus_id)
        real_close(self)

    monkeypatch.setattr(CorpusBackend, "close", close)
    wd = Workdir(tmp_path / "work")
    wd.create()
    ledger = SearchLedger(wd.path("cache/search.sqlite"))
    try:
        with pytest.raises(SearchError, match="BRAVE_API_KEY"):
            search_stage.open_backends(config, wd, ledger)
    finally:
        ledger.close()
    assert len(closed) == 1
