"""Any OpenAI-compatible chat endpoint, made safe for a long harvest.

- The key is read from the environment variable the config names, never stored or logged; a
  missing variable is an error before any request.
- Answers are cached in SQLite by (model, messages, parameters): an identical prompt is never
  sent twice, across runs too. Only valid answers are cached.
- Answers are constrained as strongly as the server allows: guided choice (vLLM) for a fixed
  set of answers, a JSON schema for structured ones, else JSON mode, else plain text. A server
  that refuses a constraint is asked again without it, and remembered as not supporting it.
- Every answer is validated (choice membership, pydantic schema); an invalid one gets a single
  corrective retry that quotes the error, then `InvalidAnswer` for the caller to fall back.
- 429 (Retry-After honoured), 5xx and timeouts are retried with backoff by the openai client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
import orjson
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from kgclip.config import LLMConfig
from kgclip.redact import protect

Mode = Literal["guided", "json_schema", "json_object", "none"]


class LLMError(RuntimeError):
    """An LLM endpoint that cannot be used (missing key, unreachable after retries, refused request)."""


class InvalidAnswer(ValueError):
    """The model answered, twice, with something that does not validate; `answer` is the last one."""

    def __init__(self, message: str, answer: str | None) -> None:
        super().__init__(message)
        self.answer = answer


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    corrective_retries: int = 0
    invalid: int = 0
    garbled: int = 0
    downgrades: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class LLMCache:
    def __init__(self, path: os.PathLike[str] | str) -> None:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers(key TEXT PRIMARY KEY, content TEXT NOT NULL, at REAL)"
        )

    @staticmethod
    def key(model: str, messages: Sequence[dict[str, str]], params: dict[str, Any]) -> str:
        payload = orjson.dumps([model, list(messages), params], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(payload).hexdigest()

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT content FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, content: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (key, content, time.time()))

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class Answer:
    text: str
    value: Any  # the validated choice (str) or model instance
    cached: bool


class LLM:
    def __init__(self, cfg: LLMConfig, cache: LLMCache) -> None:
        key = "not-needed"
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env, "")
            if not key:
                raise LLMError(f"the API key variable {cfg.api_key_env} (llm.api_key_env) is not set")
            protect(key)  # masked in every log record, whichever transport library writes it
        self.cfg = cfg
        self.cache = cache
        self.usage = Usage()
        self.label = f"llm:{cfg.model}"
        self._unsupported: set[Mode] = set()
        self._gate = asyncio.Semaphore(cfg.concurrency)
        self._first = asyncio.Lock()
        self._reached = False
        self._unreachable: str | None = None
        self._client = openai.AsyncOpenAI(
            base_url=cfg.base_url, api_key=key, max_retries=cfg.max_retries, timeout=cfg.timeout_s
        )

    async def choose(self, messages: list[dict[str, str]], choices: Sequence[str]) -> Answer:
        """One of `choices`, exactly (surrounding whitespace and a trailing period forgiven)."""
        allowed = {c.strip(): c for c in choices}

        def check(text: str) -> str:
            cleaned = text.strip().strip('"').rstrip(".").strip()
            if cleaned not in allowed:
                raise ValueError(f"{cleaned[:80]!r} is not one of the allowed answers")
            return allowed[cleaned]

        hint = "Answer with exactly one of: " + "; ".join(choices)
        return await self._ask(messages, {"choices": list(choices)}, check, hint)

    async def structured(self, messages: list[dict[str, str]], schema: type[BaseModel]) -> Answer:
        """An instance of `schema`, parsed from the model's JSON."""

        def check(text: str) -> BaseModel:
            return schema.model_validate_json(_strip_fences(text))

        hint = (
            "Answer with one JSON object matching this schema:\n"
            + orjson.dumps(schema.model_json_schema()).decode()
        )
        return await self._ask(
            messages, {"schema": schema.model_json_schema(), "name": schema.__name__}, check, hint
        )

    async def _ask(
        self, messages: list[dict[str, str]], want: dict[str, Any], check: Any, hint: str
    ) -> Answer:
        modes = self._modes(want)
        base = {
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
            "max_tokens": self.cfg.max_tokens,
        }
        key = LLMCache.key(self.cfg.model, messages, {**base, **want})
        cached = self.cache.get(key)
        if cached is not None:
            self.usage.cached += 1
            return Answer(cached, check(cached), True)
        conversation = list(messages)
        last = None
        for attempt in range(2):
            text = await self._send(conversation, modes, want, base)
            last = text
            try:
                value = check(text)
            except (ValueError, ValidationError) as exc:
                if attempt == 1:
                    break
                self.usage.corrective_retries += 1
                conversation += [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That answer is not valid: {str(exc)[:500]}\n{hint}"},
                ]
                continue
            self.cache.put(key, text)
            return Answer(text, value, False)
        self.usage.invalid += 1
        raise InvalidAnswer(f"{self.label}: no valid answer after a corrective retry", last)

    def _modes(self, want: dict[str, Any]) -> list[Mode]:
        if self.cfg.structured != "auto":
            preferred: list[Mode] = [self.cfg.structured, "none"]  # type: ignore[list-item]
        elif "choices" in want:
            preferred = ["guided", "none"]
        else:
            preferred = ["json_schema", "json_object", "none"]
        return [m for m in preferred if m not in self._unsupported or m == "none"]

    async def _send(
        self, messages: list[dict[str, str]], modes: list[Mode], want: dict[str, Any], base: dict[str, Any]
    ) -> str:
        for mode in modes:
            if mode in self._unsupported and mode != "none":
                continue
            kwargs = _constraint(mode, want)
            try:
                response = await self._create(
                    messages, {**{k: v for k, v in base.items() if v is not None}, **kwargs}
                )
            except openai.BadRequestError as exc:
                if mode == "none":
                    raise LLMError(f"{self.label}: request refused: {exc}") from None
                self._unsupported.add(mode)
                self.usage.downgrades.append(mode)
                continue
            except openai.APIConnectionError as exc:
                raise LLMError(self._connection_failure(exc)) from None
            except openai.APIStatusError as exc:
                where = f"{self.label} at {self.cfg.base_url}"
                raise LLMError(f"{where}: {type(exc).__name__}: {exc}") from None
            if response.usage is not None:
                self.usage.prompt_tokens += response.usage.prompt_tokens
                self.usage.completion_tokens += response.usage.completion_tokens
            choice = response.choices[0]
            refusal = getattr(choice.message, "refusal", None)
            if refusal:
                return f"[refused] {refusal}"
            if choice.finish_reason == "length":
                return f"[truncated] {choice.message.content or ''}"
            return choice.message.content or ""
        raise LLMError(f"{self.label}: no request form was accepted")

    def _connection_failure(self, exc: openai.APIConnectionError) -> str:
        if isinstance(exc, openai.APITimeoutError):
            why = f"no answer within {self.cfg.timeout_s:g} s"
        else:
            why = _root_cause(exc)
        tries = f" ({self.cfg.max_retries + 1} attempts)" if self.cfg.max_retries else ""
        return f"{self.label}: cannot reach the LLM server at {self.cfg.base_url}: {why}{tries}"

    async def _create(self, messages: list[dict[str, str]], params: dict[str, Any]) -> ChatCompletion:
        """One completion; the first goes alone, so that a server that cannot be reached fails
        once, with its URL, rather than once for every request waiting (`concurrency` of them)."""
        if not self._reached:
            async with self._first:
                if self._unreachable is not None:
                    raise LLMError(self._unreachable)
                if not self._reached:
                    try:
                        response = await self._complete(messages, params)
                    except openai.APIConnectionError as exc:
                        self._unreachable = self._connection_failure(exc)
                        raise LLMError(self._unreachable) from None
                    self._reached = True
                    return response
        return await self._complete(messages, params)

    async def _complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> ChatCompletion:
        """The openai client retries 429 (Retry-After), 5xx and timeouts itself; a garbled body
        (not JSON, or not a completion) it passes through, so that is retried here."""
        for attempt in range(self.cfg.max_retries + 1):
            async with self._gate:
                self.usage.requests += 1
                try:
                    response = await self._client.chat.completions.create(
                        model=self.cfg.model,
                        messages=messages,
                        **params,  # type: ignore[arg-type]
                    )
                except json.JSONDecodeError:
                    response = None
            if isinstance(response, ChatCompletion) and response.choices:
                return response
            self.usage.garbled += 1
            if attempt < self.cfg.max_retries:
                await asyncio.sleep(min(0.5 * 2**attempt, 30.0))
        raise LLMError(
            f"{self.label}: the server kept answering with something that is not a chat completion"
        )

    async def close(self) -> None:
        await self._client.close()


def _root_cause(exc: BaseException) -> str:
    """The innermost reason in an exception chain: `Connection refused`, not `Connection error.`"""
    why = str(exc)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None and current.errno > 0:
            why = os.strerror(current.errno)
        elif isinstance(current, OSError) and current.strerror:
            why = current.strerror
        elif str(current):
            why = str(current)
        current = current.__cause__ or current.__context__
    return why


def _constraint(mode: Mode, want: dict[str, Any]) -> dict[str, Any]:
    if mode == "guided" and "choices" in want:
        return {"extra_body": {"guided_choice": want["choices"]}}
    if mode == "guided" and "schema" in want:
        return {"extra_body": {"guided_json": want["schema"]}}
    if mode == "json_schema" and "schema" in want:
        spec = {"name": want["name"], "schema": want["schema"], "strict": False}
        return {"response_format": {"type": "json_schema", "json_schema": spec}}
    if mode == "json_object" and "schema" in want:
        return {"response_format": {"type": "json_object"}}
    return {}


def _strip_fences(text: str) -> str:
    """Models without JSON mode often wrap JSON in ``` fences."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped
