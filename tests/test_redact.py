"""Secrets masked in every log record and in stored messages (kgclip/redact.py)."""

import logging

from kgclip.redact import protect, redact


def test_a_key_containing_another_is_masked_whole(caplog):
    protect("t0ken")
    protect("long-t0ken-value")  # registered after the shorter key it contains
    assert redact("key=long-t0ken-value&other=t0ken") == "key=[redacted]&other=[redacted]"
    caplog.set_level(logging.DEBUG)
    logging.getLogger("httpcore.http11").debug("GET /?api_key=%s", "long-t0ken-value")
    assert caplog.records[-1].getMessage() == "GET /?api_key=[redacted]"


def test_url_encoded_keys_and_exception_text_are_masked(caplog):
    protect("k3y/with+odd=chars")
    caplog.set_level(logging.DEBUG)
    try:
        raise ValueError("refused k3y/with+odd=chars")
    except ValueError:
        logging.getLogger("httpx").exception("GET /?key=k3y%2Fwith%2Bodd%3Dchars failed")
    assert "k3y" not in caplog.text
    assert "GET /?key=[redacted] failed" in caplog.text and "ValueError: refused [redacted]" in caplog.text
