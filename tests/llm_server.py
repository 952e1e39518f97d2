"""A loopback OpenAI-compatible chat-completions server for offline tests of the LLM client.

It speaks the Chat Completions protocol as OpenAI and vLLM serve it: ``POST /v1/chat/completions``
(non-streaming) and ``GET /v1/models``, Bearer auth, ``response_format`` (``json_object``,
``json_schema``) and vLLM's ``guided_choice`` / ``guided_json`` / ``guided_regex`` extra fields, the
``{"error": {"message", "type", "param", "code"}}`` body on every failure, and ``usage`` counted
in whitespace tokens (prompt: the text of all messages; completion: the answer, times ``n``).

Usage::

    with ChatServer(responder=lambda body: "a koala", supports=("json_object",)) as srv:
        srv.script += [Reply(status=429, headers={"Retry-After": "1"}), Reply(status=500)]
        client = OpenAI(base_url=srv.url, api_key="test-key")
        ...
        srv.requests, srv.count, srv.max_concurrent

Order of checks for a chat request: auth (401), JSON body (400), then the script: a fault entry
(status >= 400, ``error`` or ``raw``) is sent as it is, before any validation, as a proxy or a
rate limiter would; otherwise the request is validated (model 404, fields and structured-output
capabilities 400) and only a valid request consumes the script's next answer, else the responder
answers. ``max_tokens`` / ``max_completion_tokens`` are obeyed: a longer answer is cut to that
many whitespace tokens with finish_reason "length".

Guided choice: with ``enforce_guided=True`` (default) an answer that is not one of
``guided_choice`` is replaced by the first choice, as a constrained decoder never answers
outside the choices; with ``enforce_guided=False`` the answer goes out unchanged (a server that
ignores the constraint). ``guided_json``, ``guided_regex`` and ``response_format`` are checked
for shape and capability but not enforced: the responder decides what the content is.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
GUIDED = ("guided_choice", "guided_json", "guided_regex")
DEFAULT_ERRORS = {  # status -> (type, code, message), as OpenAI words them
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to sample from this model."),
    404: ("invalid_request_error", None, "Not found."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass
class Reply:
    """A scripted answer. ``content``/``refusal``/``finish_reason`` shape a 200 completion;
    ``status`` >= 400 (with ``error``, the inner error dict, or a default one for that status)
    sends an OpenAI error body; ``raw`` is sent verbatim as the body with ``status``;
    ``content_type`` overrides the Content-Type of whatever is sent; ``headers`` are added;
    ``delay`` seconds pass before answering (cut short when the server stops)."""

    content: str | None = None
    refusal: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    raw: bytes | None = None
    content_type: str | None = None
    delay: float = 0

    def __post_init__(self) -> None:
        if self.error is not None and self.status < 400:
            raise ValueError("a Reply with an error needs an error status (>= 400)")

    @property
    def is_fault(self) -> bool:
        """Sent as it is, without looking at the request."""
        return self.status >= 400 or self.error is not None or self.raw is not None


class Request(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased; the Authorization value is redacted
    body: Any  # the parsed JSON body; None when absent or not JSON


class ApiError(Exception):
    """An error answer: HTTP status plus the OpenAI error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"error": {...}}`` with all four fields, defaults for ``status`` filling the gaps."""
    kind, code, message = DEFAULT_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code, **(error or {})}}


def count_tokens(text: str | None) -> int:
    return len(text.split()) if text else 0


def prompt_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """Whitespace tokens of the messages' text (string content or ``{"type": "text"}`` parts)."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += count_tokens(content)
        elif isinstance(content, list):
            total += sum(count_tokens(p.get("text")) for p in content if isinstance(p, dict))
    return total


def truncate(text: str, limit: int) -> str:
    """The first ``limit`` whitespace tokens of ``text``, original spacing kept."""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return text[: ends[limit - 1]] if 0 < limit <= len(ends) else ("" if limit <= 0 else text)


def validate(body: Any, model: str | None, supports: Iterable[str]) -> None:
    """Raise ApiError for what OpenAI or vLLM would refuse (a subset of their checks)."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    if not body.get("model"):
        raise ApiError(400, "you must provide a model parameter", "model")
    if model is not None and body["model"] != model:
        raise ApiError(404, f"The model `{body['model']}` does not exist.", "model", "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
        ):
            raise ApiError(400, f"Invalid value for 'messages[{i}].role'.", f"messages[{i}].role")
    if body.get("stream"):
        raise ApiError(400, "stream=true is not supported by this test server", "stream")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float) and 0 <= temperature <= 2):
        raise ApiError(400, f"Invalid 'temperature': {temperature!r}; expected 0 to 2.", "temperature")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ApiError(400, f"Invalid '{name}': {value!r}; expected an integer >= 1.", name)
    supports = set(supports)
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"Invalid value: {kind!r}. Supported values are: 'json_object', 'json_schema', and 'text'.",
                "response_format.type",
                "invalid_value",
            )
        if kind != "text" and kind not in supports:
            raise ApiError(400, f"response_format {kind} is not supported by this server", "response_format")
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not spec.get("name"):
                raise ApiError(
                    400,
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    "response_format.json_schema.name",
                    "missing_required_parameter",
                )
            if not isinstance(spec.get("schema", {}), dict):
                raise ApiError(400, "'response_format.json_schema.schema' must be an object.")
    used = [name for name in GUIDED if body.get(name) is not None]
    for name in used:
        if "guided" not in supports and name not in supports:
            raise ApiError(400, f"Unrecognized request argument supplied: {name}", name)
    if len(used) > 1:
        raise ApiError(400, f"You can only use one kind of guided decoding, not {' and '.join(used)}.")
    choices = body.get("guided_choice")
    if choices is not None and not (
        isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)
    ):
        raise ApiError(400, "guided_choice must be a non-empty list of strings", "guided_choice")


class ChatServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 in a background thread (``with`` or start/stop).

    ``responder(body) -> str | Reply`` answers chat requests the script does not (default "ok");
    ``model``: the only model served (None: any name); ``api_key``: the Bearer token required
    (None: no auth); ``supports``: structured outputs accepted, from "json_object",
    "json_schema", "guided" (all three guided_* fields) or a single "guided_choice" etc.

    Attributes: ``url`` (``http://127.0.0.1:PORT/v1``), ``script`` (Replies or strings, one per
    chat request, consumed first), ``requests`` (every request as a ``Request``), ``count``,
    ``max_concurrent`` (most requests in flight at once), ``errors`` (exceptions the responder
    raised; each was answered with a 500).
    """

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str | Reply] | None = None,
        model: str | None = "test-model",
        api_key: str | None = "test-key",
        supports: Iterable[str] = ("json_schema", "json_object", "guided"),
        *,
        enforce_guided: bool = True,
    ):
        self.responder = responder or (lambda body: "ok")
        self.model = model
        self.api_key = api_key
        self.supports = tuple(supports)
        self.enforce_guided = enforce_guided
        self.script: list[Reply | str] = []
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.max_concurrent = 0
        self._in_flight = 0
        self._served = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        """Requests received so far (all paths, refused ones included)."""
        return len(self.requests)

    def start(self) -> ChatServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler
    def _begin(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
            self._in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self._in_flight)

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next(self, body: Any) -> Reply | ApiError | None:
        """The script's next fault, else the validation error, else the script's next answer;
        None when the responder should answer."""
        try:
            validate(body, self.model, self.supports)
            problem = None
        except ApiError as e:
            problem = e
        with self._lock:
            head = self.script[0] if self.script else None
            head = Reply(content=head) if isinstance(head, str) else head
            if head is not None and head.is_fault:
                self.script.pop(0)
                return head
            if problem is not None:
                return problem
            if head is not None:
                self.script.pop(0)
            self._served += 1
            return head

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content, finish = reply.content, reply.finish_reason
        choices = body.get("guided_choice")
        if self.enforce_guided and choices and content is not None and content not in choices:
            content = choices[0]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit and content and count_tokens(content) > limit:
            content, finish = truncate(content, limit), "length"
        n = body.get("n") or 1
        message = {
            "role": "assistant",
            "content": None if reply.refusal else content,
            "refusal": reply.refusal,
            "annotations": [],
        }
        used = count_tokens(message["content"]) + count_tokens(reply.refusal)
        prompt = prompt_tokens(body["messages"])
        return {
            "id": f"chatcmpl-test{self._served}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": i, "message": dict(message), "logprobs": None, "finish_reason": finish}
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": used * n,
                "total_tokens": prompt + used * n,
            },
            "system_fingerprint": "fp_test",
        }


def _make_handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: simple, and shutdown never waits

        def log_message(self, format: str, *args: Any) -> None:
            pass  # nothing is logged, the Authorization header least of all

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else None
                parsed = True
            except ValueError:
                body, parsed = None, False
            headers = {k.lower(): v for k, v in self.headers.items()}
            if "authorization" in headers:
                headers["authorization"] = "<redacted>"
            path = self.path.split("?", 1)[0].rstrip("/")
            server._begin(Request(self.command, path, headers, body))
            try:
                self._answer(path, body, parsed)
            except ApiError as e:
                self._error(e)
            except (ConnectionError, TimeoutError):
                pass  # the client gave up (a timeout test)
            finally:
                server._end()

        def _send(self, status: int, payload: Any, reply: Reply | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            ctype = (reply and reply.content_type) or "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_test{server.count}")
            for name, value in (reply.headers if reply else {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, e: ApiError) -> None:
            self._send(
                e.status, error_body(e.status, {"message": e.message, "param": e.param, "code": e.code})
            )

        def _authorized(self) -> bool:
            return server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}"

        def _answer(self, path: str, body: Any, parsed: bool) -> None:
            if not self._authorized():
                raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
            if path == MODELS_PATH and self.command == "GET":
                models = [server.model or "test-model"]
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in models]
                return self._send(200, {"object": "list", "data": data})
            if path != CHAT_PATH or self.command != "POST":
                raise ApiError(404, f"Invalid URL ({self.command} {self.path})")
            if not parsed:
                raise ApiError(400, "We could not parse the JSON body of your request.")
            step = server._next(body)
            if isinstance(step, ApiError):
                raise step
            if step is None:
                try:
                    step = server.responder(body)
                    step = Reply(content=step) if isinstance(step, str) else step
                    if not isinstance(step, Reply):
                        raise TypeError(f"the responder returned {type(step).__name__}, not str or Reply")
                except Exception as e:  # a server answers 500, it does not crash
                    server.errors.append(e)
                    raise ApiError(500, f"responder failed: {type(e).__name__}: {e}") from e
            if step.delay and server._stopping.wait(step.delay):
                return None  # shutting down
            if step.raw is not None:
                return self._send(step.status, step.raw, step)
            if step.is_fault:
                return self._send(step.status, error_body(step.status, step.error), step)
            return self._send(200, server._completion(body, step), step)

    return Handler
