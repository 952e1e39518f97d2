"""The loopback OpenAI-compatible server, exercised with the real `openai` client (and raw httpx
for what the client hides). The exception types asserted here are the contract kgclip's LLM
client has to handle with the installed openai version."""

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from llm_server import ChatServer, Reply, truncate

MESSAGES = [
    {"role": "system", "content": "You name animals."},
    {"role": "user", "content": "Which animal eats eucalyptus?"},
]
PROMPT_TOKENS = 7
AUTH = {"Authorization": "Bearer test-key"}


def client(srv: ChatServer, **kw) -> OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("api_key", "test-key")
    return OpenAI(base_url=srv.url, **kw)


def ask(srv: ChatServer, **kw):
    c = client(srv, **{k: kw.pop(k) for k in ("max_retries", "api_key", "timeout") if k in kw})
    kw.setdefault("messages", MESSAGES)
    return c.chat.completions.create(model="test-model", **kw)


def post(srv: ChatServer, body, headers=AUTH) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{srv.url}/chat/completions", content=data, headers=headers, timeout=5)


SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "animal",
        "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        "strict": True,
    },
}


# -- answers


def test_plain_answer_with_usage_and_request_log():
    with ChatServer(responder=lambda body: "the koala eats it") as srv:
        r = ask(srv, temperature=0, seed=1, max_tokens=50)
        assert r.object == "chat.completion" and r.model == "test-model" and r.id.startswith("chatcmpl-")
        assert isinstance(r.created, int)
        choice = r.choices[0]
        assert choice.index == 0 and choice.finish_reason == "stop"
        assert choice.message.role == "assistant" and choice.message.content == "the koala eats it"
        assert choice.message.refusal is None
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
            PROMPT_TOKENS,
            4,
            11,
        )
        assert srv.count == 1 and srv.max_concurrent == 1
        req = srv.requests[0]
        assert (req.method, req.path) == ("POST", "/v1/chat/completions")
        assert req.body["messages"] == MESSAGES and req.body["seed"] == 1 and req.body["temperature"] == 0
        assert req.headers["authorization"] == "<redacted>" and "test-key" not in repr(srv.requests)


def test_default_responder_n_choices_and_parts_content():
    seen = []
    with ChatServer() as srv:
        r = ask(srv, n=2, messages=[{"role": "user", "content": [{"type": "text", "text": "two words"}]}])
        assert [c.message.content for c in r.choices] == ["ok", "ok"] and [c.index for c in r.choices] == [
            0,
            1,
        ]
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (2, 2)
    with ChatServer(responder=lambda body: seen.append(body) or "x") as srv:
        ask(srv, top_p=0.5, max_completion_tokens=9)
        assert seen[0]["top_p"] == 0.5 and seen[0]["max_completion_tokens"] == 9


def test_async_client_and_max_concurrent():
    async def run(srv: ChatServer, k: int) -> list[str]:
        async with AsyncOpenAI(base_url=srv.url, api_key="test-key", max_retries=0) as c:
            calls = [c.chat.completions.create(model="test-model", messages=MESSAGES) for _ in range(k)]
            return [r.choices[0].message.content for r in await asyncio.gather(*calls)]

    with ChatServer(responder=lambda body: Reply(content="slow", delay=0.3)) as srv:
        assert asyncio.run(run(srv, 4)) == ["slow"] * 4
        assert srv.count == 4 and srv.max_concurrent == 4


def test_max_concurrent_with_threads():
    with ChatServer(responder=lambda body: Reply(content="ok", delay=0.3)) as srv:
        threads = [threading.Thread(target=ask, args=(srv,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.count == 3 and srv.max_concurrent == 3
    with ChatServer() as srv:
        for _ in range(3):
            ask(srv)
        assert srv.count == 3 and srv.max_concurrent == 1


# -- structured outputs


def test_json_object_and_json_schema_when_supported():
    with ChatServer(responder=lambda body: '{"name": "koala"}') as srv:
        r = ask(srv, response_format={"type": "json_object"})
        assert json.loads(r.choices[0].message.content) == {"name": "koala"}
        r = ask(srv, response_format=SCHEMA)
        assert json.loads(r.choices[0].message.content) == {"name": "koala"}
        assert srv.requests[1].body["response_format"] == SCHEMA
        assert ask(srv, response_format={"type": "text"}).choices[0].message.content == '{"name": "koala"}'


@pytest.mark.parametrize("fmt", [{"type": "json_object"}, SCHEMA])
def test_structured_output_unsupported_is_400(fmt):
    with ChatServer(supports=()) as srv:
        srv.script.append("the fallback answer")
        with pytest.raises(openai.BadRequestError) as e:
            ask(srv, response_format=fmt)
        assert e.value.status_code == 400 and e.value.param == "response_format"
        assert e.value.type == "invalid_request_error"
        assert e.value.body["message"] == f"response_format {fmt['type']} is not supported by this server"
        # the refused request did not use up the scripted answer: the plain retry gets it
        assert ask(srv).choices[0].message.content == "the fallback answer"
        raw = post(srv, {"model": "test-model", "messages": MESSAGES, "response_format": fmt})
        assert raw.status_code == 400 and set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_malformed_response_format_is_400():
    with ChatServer() as srv:
        with pytest.raises(openai.BadRequestError, match=r"json_schema\.name"):
            ask(srv, response_format={"type": "json_schema", "json_schema": {"schema": {}}})
        with pytest.raises(openai.BadRequestError, match="Supported values"):
            ask(srv, response_format={"type": "yaml"})


def test_guided_choice():
    with ChatServer(responder=lambda body: "Probably a koala.") as srv:
        choices = ["koala", "panda"]
        r = ask(srv, extra_body={"guided_choice": choices})
        assert r.choices[0].message.content == "koala"  # enforced: outside the choices -> the first one
        assert srv.requests[0].body["guided_choice"] == choices  # a top-level key, as vLLM reads it
    with ChatServer(responder=lambda body: "panda") as srv:
        assert (
            ask(srv, extra_body={"guided_choice": ["koala", "panda"]}).choices[0].message.content == "panda"
        )
    with ChatServer(responder=lambda body: "Probably a koala.", enforce_guided=False) as srv:
        r = ask(srv, extra_body={"guided_choice": ["koala", "panda"]})
        assert r.choices[0].message.content == "Probably a koala."
    with ChatServer() as srv, pytest.raises(openai.BadRequestError, match="non-empty list"):
        ask(srv, extra_body={"guided_choice": []})


def test_guided_unsupported_or_combined_is_400():
    with ChatServer(supports=("json_object",)) as srv:
        for extra in ({"guided_choice": ["a"]}, {"guided_json": {"type": "object"}}, {"guided_regex": "a+"}):
            with pytest.raises(openai.BadRequestError, match="Unrecognized request argument") as e:
                ask(srv, extra_body=extra)
            assert e.value.param == next(iter(extra))
    with ChatServer(supports=("guided_choice",)) as srv:
        assert ask(srv, extra_body={"guided_choice": ["ok"]}).choices[0].message.content == "ok"
        with pytest.raises(openai.BadRequestError):
            ask(srv, extra_body={"guided_json": {"type": "object"}})
    with ChatServer() as srv:
        assert ask(srv, extra_body={"guided_json": {"type": "object"}}).choices[0].message.content == "ok"
        with pytest.raises(openai.BadRequestError, match="one kind of guided decoding"):
            ask(srv, extra_body={"guided_json": {"type": "object"}, "guided_regex": "a"})


# -- special answers


def test_refusal_shape():
    with ChatServer(responder=lambda body: Reply(refusal="I can't help with that.")) as srv:
        r = ask(srv)
        message = r.choices[0].message
        assert message.content is None and message.refusal == "I can't help with that."
        assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 5
        raw = post(srv, {"model": "test-model", "messages": MESSAGES}).json()
        assert raw["choices"][0]["message"] == {
            "role": "assistant",
            "content": None,
            "refusal": "I can't help with that.",
            "annotations": [],
        }


def test_finish_reason_length_scripted_and_from_max_tokens():
    with ChatServer(responder=lambda body: "one two  three four five") as srv:
        srv.script.append(Reply(content='{"name": "koa', finish_reason="length"))
        r = ask(srv)
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == '{"name": "koa'
        r = ask(srv, max_tokens=3)
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == "one two  three"
        assert r.usage.completion_tokens == 3
        r = ask(srv, max_completion_tokens=5)
        assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 5
    assert truncate("a b", 5) == "a b" and truncate(" a  b c", 2) == " a  b"


def test_content_filter_finish_reason():
    with ChatServer(responder=lambda body: Reply(content=None, finish_reason="content_filter")) as srv:
        r = ask(srv)
        assert r.choices[0].finish_reason == "content_filter" and r.choices[0].message.content is None


# -- failures and the exceptions the client raises for them


def test_429_retry_after_headers_and_client_retry():
    with ChatServer() as srv:
        srv.script.append(Reply(status=429, headers={"Retry-After": "1"}))
        raw = post(srv, {"model": "test-model", "messages": MESSAGES})
        assert raw.status_code == 429 and raw.headers["retry-after"] == "1"
        assert raw.headers["content-type"] == "application/json"
        assert raw.json() == {
            "error": {
                "message": "Rate limit reached for requests. Please try again later.",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
        srv.script.append(Reply(status=429, headers={"Retry-After": "1"}))
        start = time.monotonic()
        r = ask(srv, max_retries=1)
        assert r.choices[0].message.content == "ok" and time.monotonic() - start >= 0.9
        assert srv.count == 3
        srv.script += [Reply(status=429, headers={"Retry-After-Ms": "10"})] * 2
        with pytest.raises(openai.RateLimitError) as e:  # still 429 after its one retry
            ask(srv, max_retries=1)
        assert e.value.status_code == 429 and e.value.code == "rate_limit_exceeded" and srv.count == 5
        assert e.value.response.headers["retry-after-ms"] == "10"


def test_500_and_custom_error():
    with ChatServer() as srv:
        srv.script.append(Reply(status=500))
        with pytest.raises(openai.InternalServerError) as e:
            ask(srv)
        assert e.value.status_code == 500 and e.value.type == "server_error"
        srv.script.append(Reply(status=503, error={"message": "overloaded", "code": "busy"}))
        with pytest.raises(openai.InternalServerError, match="overloaded") as e:
            ask(srv)
        assert e.value.status_code == 503 and e.value.code == "busy" and e.value.param is None
        srv.script.append(Reply(status=400, error={"message": "context too long", "param": "messages"}))
        with pytest.raises(openai.BadRequestError) as e:
            ask(srv)
        assert e.value.param == "messages" and e.value.type == "invalid_request_error"
    with pytest.raises(ValueError, match="error status"):
        Reply(error={"message": "x"})


def test_malformed_json_body_raises_json_decode_error():
    with ChatServer() as srv:
        srv.script.append(Reply(raw=b'{"id": "chatcmpl-1", "choices": ['))
        with pytest.raises(json.JSONDecodeError) as e:
            ask(srv)
        assert not isinstance(e.value, openai.OpenAIError)  # the client lets the stdlib error through
        srv.script.append(Reply(raw=b""))
        with pytest.raises(json.JSONDecodeError):
            ask(srv)


def test_well_formed_json_of_the_wrong_shape():
    with ChatServer() as srv:
        srv.script.append(Reply(raw=b'{"foo": 1}'))
        assert ask(srv).choices is None  # not validated by default
        srv.script.append(Reply(raw=b'{"foo": 1}'))
        strict = client(srv, _strict_response_validation=True)
        with pytest.raises(openai.APIResponseValidationError):
            strict.chat.completions.create(model="test-model", messages=MESSAGES)


def test_wrong_content_type():
    page = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
    with ChatServer() as srv:
        srv.script.append(Reply(raw=page, content_type="text/html; charset=utf-8"))
        result = ask(srv)
        assert result == page.decode()  # no exception: the client returns the body as a str
        srv.script.append(Reply(raw=page, content_type="text/html"))
        strict = client(srv, _strict_response_validation=True)
        with pytest.raises(openai.APIResponseValidationError, match="text/html"):
            strict.chat.completions.create(model="test-model", messages=MESSAGES)
        srv.script.append(Reply(content="fine", content_type="text/plain"))
        assert ask(srv).choices[0].message.content == "fine"  # JSON under a wrong type still parses
        raw = post(srv, {"model": "test-model", "messages": MESSAGES})
        assert raw.headers["content-type"] == "application/json"


def test_401_on_bad_or_missing_key():
    with ChatServer() as srv:
        srv.script.append("kept for the first authorized request")
        with pytest.raises(openai.AuthenticationError) as e:
            ask(srv, api_key="wrong-key")
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
        assert e.value.type == "invalid_request_error" and "wrong-key" not in str(e.value)
        missing = post(srv, {"model": "test-model", "messages": MESSAGES}, headers={})
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{srv.url}/models").status_code == 401
        assert ask(srv).choices[0].message.content == "kept for the first authorized request"
        assert "wrong-key" not in repr(srv.requests)
    with ChatServer(api_key=None) as srv:
        assert post(srv, {"model": "test-model", "messages": MESSAGES}, headers={}).status_code == 200


def test_models_endpoint():
    with ChatServer(model="qwen") as srv:
        models = list(client(srv).models.list())
        assert [(m.id, m.object, m.owned_by) for m in models] == [("qwen", "model", "test")]
        raw = httpx.get(f"{srv.url}/models", headers=AUTH).json()
        assert raw["object"] == "list" and raw["data"][0]["id"] == "qwen"


def test_script_order_then_responder():
    with ChatServer(responder=lambda body: "from the responder") as srv:
        srv.script += [Reply(status=429, headers={"Retry-After": "1"}), Reply(status=500), "the real answer"]
        body = {"model": "test-model", "messages": MESSAGES}
        assert [post(srv, body).status_code for _ in range(2)] == [429, 500]
        assert post(srv, body).json()["choices"][0]["message"]["content"] == "the real answer"
        assert post(srv, body).json()["choices"][0]["message"]["content"] == "from the responder"
        srv.script += [Reply(status=429, headers={"retry-after-ms": "10"}), Reply(status=500), "retried"]
        assert ask(srv, max_retries=2).choices[0].message.content == "retried"
        assert srv.count == 7 and srv.script == []


def test_delay_timeout_and_interruptible_stop():
    with ChatServer() as srv:
        srv.script.append(Reply(content="late", delay=2))
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            ask(srv, timeout=0.3)
        assert time.monotonic() - start < 1.5
        srv.script.append(Reply(content="a bit late", delay=0.2))
        start = time.monotonic()
        assert ask(srv).choices[0].message.content == "a bit late" and time.monotonic() - start >= 0.2
    srv = ChatServer(responder=lambda body: Reply(content="never", delay=30)).start()
    outcome = []

    def call():
        try:
            ask(srv)
        except openai.APIError as e:
            outcome.append(e)

    worker = threading.Thread(target=call)
    worker.start()
    while srv.count == 0:
        time.sleep(0.01)
    start = time.monotonic()
    srv.stop()
    worker.join(timeout=5)
    assert time.monotonic() - start < 3 and not worker.is_alive()
    assert isinstance(outcome[0], openai.APIConnectionError)  # closed without an answer


def test_request_validation_errors():
    with ChatServer() as srv:
        bad_json = post(srv, b"{not json")
        assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
        assert srv.requests[0].body is None
        with pytest.raises(openai.NotFoundError) as e:
            client(srv).chat.completions.create(model="gpt-9", messages=MESSAGES)
        assert e.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError, match="messages"):
            ask(srv, messages=[])
        with pytest.raises(openai.BadRequestError, match="temperature"):
            ask(srv, temperature=3)
        with pytest.raises(openai.BadRequestError, match="stream"):
            ask(srv, stream=True)
        missing = httpx.post(f"{srv.url}/completions", json={}, headers=AUTH)
        assert missing.status_code == 404 and "Invalid URL" in missing.json()["error"]["message"]


def test_responder_failure_is_500_and_recorded():
    def broken(body):
        raise KeyError("oops")

    with ChatServer(responder=broken) as srv:
        with pytest.raises(openai.InternalServerError, match="KeyError"):
            ask(srv)
        assert isinstance(srv.errors[0], KeyError)
    with ChatServer(responder=lambda body: 42) as srv:
        with pytest.raises(openai.InternalServerError):
            ask(srv)
        assert isinstance(srv.errors[0], TypeError)
