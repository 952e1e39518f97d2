"""The one Retry-After reader (kgclip.retryafter) and the clients that use it."""

import email.utils
import time

import pytest

from kgclip.retryafter import parse_retry_after

NOW = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("0.25", 0.25),  # not RFC, but servers send it and waiting a quarter second is what they mean
        ("Sun, 06 Nov 1994 08:51:37 GMT", 120.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:50:37 GMT", 60.0),  # obsolete RFC 850 form
        ("Sun Nov  6 08:49:47 1994", 10.0),  # asctime: no zone, read as GMT
        ("Sun, 06 Nov 1994 08:49:57 -0000", 20.0),  # no zone either
        ("Sun, 06 Nov 1994 09:50:37 +0100", 60.0),  # a zone other than GMT is converted
        ("Sun, 06 Nov 1994 08:00:00 GMT", 0.0),  # a date past: go now
    ],
)
def test_seconds_and_http_dates(value, seconds):
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "  ", "-5", "soon", "nan", "inf", "1e999", "Sun, 99 Nov 1994"])
def test_no_usable_answer_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


def test_the_default_clock_is_now():
    value = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(value) <= 30


def test_every_client_reads_retry_after_through_the_one_parser():
    """No second parser: the fetcher, the web search backends and the SPARQL client all call it."""
    from kgclip.fetch import http
    from kgclip.kg.wikidata import sparql
    from kgclip.search import web

    for module in (http, web):
        assert module.parse_retry_after is parse_retry_after
    assert sparql._retry_after("Sun, 06 Nov 1994 08:51:37 GMT", default=60.0) == 0.0  # past
    assert sparql._retry_after("soon", default=60.0) == 60.0
    assert sparql.parse_retry_after is parse_retry_after
