"""Keeping API keys out of logs and stored messages, whichever library writes them.

Transport libraries log what they send: httpx logs every request URL at INFO
(`HTTP Request: GET https://serpapi.com/search.json?...&api_key=...`), httpcore and openai log
request details at DEBUG. A key that can only travel in the query string (SerpAPI's) would reach
any log a user turns on. So every client that holds a key registers it with `protect`; from then
on every log record has the key masked as it is made, before any handler or filter sees it (a
filter on one logger would miss its children, such as `httpcore.http11`). Messages kgclip
stores or raises from server answers go through `redact`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "[redacted]"
_secrets: dict[str, None] = {}  # in the order registered
_lock = threading.Lock()
_installed = False


def protect(secret: str) -> None:
    """Mask `secret` (and its URL-encoded forms) in every log record from now on."""
    global _installed
    if not secret:
        return
    with _lock:
        _secrets.update(dict.fromkeys((secret, quote(secret, safe=""), quote_plus(secret))))
        if not _installed:
            _install()
            _installed = True


def redact(text: str) -> str:
    """`text` with every protected secret masked, longest first (one key may contain another)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _install() -> None:
    made = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _scrubbed(made(*args, **kwargs))

    logging.setLogRecordFactory(factory)


def _scrubbed(record: logging.LogRecord) -> logging.LogRecord:
    """The record with secrets masked in its message and in its formatted exception."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        return record  # a malformed call; logging reports it when a handler formats the record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(text)
    return record
