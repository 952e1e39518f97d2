"""The LLM client against a loopback OpenAI-compatible server: constraints, validation, retries, cache."""

import asyncio
import logging

import pytest
from pydantic import BaseModel

from kgclip.config import LLMConfig
from kgclip.text.llm import LLM, InvalidAnswer, LLMCache, LLMError
from llm_server import ChatServer, Reply


class Pet(BaseModel):
    name: str
    legs: int


def config(srv: ChatServer, **kw) -> LLMConfig:
    return LLMConfig(base_url=srv.url, model="test-model", api_key_env="KGCLIP_TEST_KEY", **kw)


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("KGCLIP_TEST_KEY", "test-key")


def run(coro):
    return asyncio.run(coro)


async def ask_choice(cfg, cache, choices=("true", "false")):
    llm = LLM(cfg, cache)
    try:
        return await llm.choose([{"role": "user", "content": "Is a robin a bird?"}], list(choices)), llm.usage
    finally:
        await llm.close()


async def ask_pet(cfg, cache):
    llm = LLM(cfg, cache)
    try:
        return await llm.structured([{"role": "user", "content": "Describe a dog."}], Pet), llm.usage
    finally:
        await llm.close()


def test_guided_choice_is_used_when_supported(tmp_path):
    with ChatServer(responder=lambda req: "true") as srv:
        answer, usage = run(ask_choice(config(srv), LLMCache(tmp_path / "c.sqlite")))
        assert answer.value == "true" and not answer.cached
        assert srv.requests[0].body["guided_choice"] == ["true", "false"]
        assert srv.requests[0].headers["authorization"] == "<redacted>"  # the server saw a bearer key
    assert usage.requests == 1 and usage.prompt_tokens > 0 and usage.completion_tokens == 1


def test_unsupported_constraint_downgrades_to_plain_prompting(tmp_path):
    with ChatServer(responder=lambda req: "false.", supports=()) as srv:
        answer, usage = run(ask_choice(config(srv), LLMCache(tmp_path / "c.sqlite")))
        assert "guided_choice" not in srv.requests[-1].body
    assert answer.value == "false" and usage.downgrades == ["guided"]


def test_json_schema_when_supported_and_json_mode_as_fallback(tmp_path):
    with ChatServer(responder=lambda req: '{"name": "dog", "legs": 4}') as srv:
        answer, _ = run(ask_pet(config(srv), LLMCache(tmp_path / "a.sqlite")))
        assert srv.requests[0].body["response_format"]["type"] == "json_schema"
    assert answer.value == Pet(name="dog", legs=4)
    with ChatServer(
        responder=lambda req: '```json\n{"name": "dog", "legs": 4}\n```', supports=("json_object",)
    ) as srv:
        answer, usage = run(ask_pet(config(srv), LLMCache(tmp_path / "b.sqlite")))
        assert srv.requests[-1].body["response_format"] == {"type": "json_object"}
    assert answer.value.legs == 4 and usage.downgrades == ["json_schema"]


@pytest.mark.parametrize(
    "first",
    [
        '{"name": "dog"}',  # off-schema
        Reply(content='{"name": "dog", "le', finish_reason="length"),  # truncated
        Reply(refusal="I cannot help with that."),  # refusal
        "not json at all",
    ],
)
def test_one_corrective_retry_quotes_the_error(tmp_path, first):
    with ChatServer(responder=lambda req: '{"name": "dog", "legs": 4}') as srv:
        srv.script.append(first)
        answer, usage = run(ask_pet(config(srv), LLMCache(tmp_path / "c.sqlite")))
        retry = srv.requests[-1].body["messages"]
        assert retry[-1]["role"] == "user" and "not valid" in retry[-1]["content"]
    assert answer.value.legs == 4 and usage.corrective_retries == 1


def test_wrong_choice_twice_is_an_invalid_answer(tmp_path):
    with ChatServer(responder=lambda req: "maybe", enforce_guided=False) as srv:
        with pytest.raises(InvalidAnswer) as err:
            run(ask_choice(config(srv), LLMCache(tmp_path / "c.sqlite")))
        assert srv.count == 2
    assert err.value.answer == "maybe"


def test_rate_limits_and_server_errors_are_retried(tmp_path):
    with ChatServer(responder=lambda req: "true") as srv:
        srv.script.extend([Reply(status=429, headers={"Retry-After": "0.1"}), Reply(status=500)])
        answer, _ = run(ask_choice(config(srv, max_retries=3), LLMCache(tmp_path / "c.sqlite")))
        assert srv.count == 3
    assert answer.value == "true"


def test_garbled_bodies_are_retried_then_reported(tmp_path):
    with ChatServer(responder=lambda req: "true") as srv:
        srv.script.append(Reply(raw=b'{"id": "x", "choi', content_type="application/json"))
        srv.script.append(Reply(raw=b"<html>proxy error</html>", content_type="text/html"))
        answer, usage = run(ask_choice(config(srv, max_retries=3), LLMCache(tmp_path / "c.sqlite")))
    assert answer.value == "true" and usage.garbled == 2
    with ChatServer(responder=lambda req: "true") as srv:
        srv.script.extend([Reply(raw=b"{", content_type="application/json")] * 3)
        with pytest.raises(LLMError, match="not a chat completion"):
            run(ask_choice(config(srv, max_retries=2), LLMCache(tmp_path / "d.sqlite")))


def test_identical_prompts_are_never_sent_twice(tmp_path):
    cache_path = tmp_path / "c.sqlite"
    with ChatServer(responder=lambda req: "true") as srv:
        run(ask_choice(config(srv), LLMCache(cache_path)))
        answer, usage = run(ask_choice(config(srv), LLMCache(cache_path)))
        assert srv.count == 1
    assert answer.cached and usage.cached == 1 and usage.requests == 0
    assert b"test-key" not in cache_path.read_bytes()


def test_missing_key_variable_is_named_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv("KGCLIP_TEST_KEY")
    with ChatServer() as srv:
        with pytest.raises(LLMError, match="KGCLIP_TEST_KEY"):
            LLM(config(srv), LLMCache(tmp_path / "c.sqlite"))
        assert srv.count == 0


def test_a_wrong_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KGCLIP_TEST_KEY", "wrong")
    with ChatServer() as srv, pytest.raises(LLMError, match="AuthenticationError"):
        run(ask_choice(config(srv), LLMCache(tmp_path / "c.sqlite")))


def test_concurrency_is_limited(tmp_path):
    async def many(cfg, cache):
        llm = LLM(cfg, cache)
        try:
            prompts = [[{"role": "user", "content": f"Is thing {i} a bird?"}] for i in range(12)]
            return await asyncio.gather(*(llm.choose(p, ["true", "false"]) for p in prompts))
        finally:
            await llm.close()

    with ChatServer(responder=lambda req: Reply(content="true", delay=0.05)) as srv:
        answers = run(many(config(srv, concurrency=3), LLMCache(tmp_path / "c.sqlite")))
        assert len(answers) == 12 and 1 < srv.max_concurrent <= 3


def test_guided_json_when_configured(tmp_path):
    with ChatServer(responder=lambda req: '{"name": "dog", "legs": 4}') as srv:
        answer, _ = run(ask_pet(config(srv, structured="guided"), LLMCache(tmp_path / "c.sqlite")))
        assert srv.requests[0].body["guided_json"]["title"] == "Pet"
    assert answer.value.legs == 4


def test_the_key_reaches_no_log_at_debug(tmp_path, caplog, monkeypatch):
    """httpx logs every request, openai and httpcore request details at DEBUG: none may show the key."""
    monkeypatch.setenv("KGCLIP_TEST_KEY", "llm-s3cret-key")
    caplog.set_level(logging.DEBUG)
    with ChatServer(responder=lambda req: "true", api_key="llm-s3cret-key") as srv:
        answer, _ = run(ask_choice(config(srv), LLMCache(tmp_path / "c.sqlite")))
    assert answer.value == "true"
    assert "HTTP Request" in caplog.text and "llm-s3cret-key" not in caplog.text
    assert b"llm-s3cret-key" not in (tmp_path / "c.sqlite").read_bytes()
