"""The Openverse backend and the web-backend machinery against a loopback API."""

import asyncio
import socket
import time

import pytest

from kgclip.config import OpenverseConfig, parse
from kgclip.pipeline import StageContext
from kgclip.search import stage as search_stage
from kgclip.search.openverse import OpenverseBackend
from kgclip.search.web import SearchError
from kgclip.tables import Hit, Query, QueryParams, Rejected, read_records, write_records
from kgclip.workdir import Workdir
from web_api_server import JsonApi

IMAGES = [
    {
        "id": f"id{i}",
        "title": f"{name} photo {i}",
        "url": f"https://img.example/{name}{i}.jpg",
        "foreign_landing_url": f"https://commons.example/{name}{i}",
        "width": 800,
        "height": 600,
        "license": lic,
        "license_version": "4.0",
        "creator": "someone",
        "attribution": f'"{name}" by someone, {lic}',
    }
    for i, (name, lic) in enumerate([("koala", "by"), ("koala", "cc0"), ("lion", "by-sa")] * 15)
]


def openverse(request_path: str, params: dict, headers: dict) -> dict:
    """Answers like /v1/images/: results matching every word of q, paged."""
    words = [w for w in params["q"].split() if not w.startswith("-")]
    found = [r for r in IMAGES if all(w in r["title"] for w in words)]
    size, page = int(params.get("page_size", 20)), int(params.get("page", 1))
    count = max(1, -(-len(found) // size))
    return {
        "result_count": len(found),
        "page_count": count,
        "page_size": size,
        "page": page,
        "results": found[(page - 1) * size : page * size],
    }


def query(text: str, kind: str = "entity", photo: bool = True) -> Query:
    return Query(f"q-{text}", kind, text, "wn:1", None, QueryParams([], ["cartoon"], photo))


def config(api: JsonApi, **kw) -> OpenverseConfig:
    settings = {"rate_per_s": 200, "backoff_s": 0.01, **kw}
    return OpenverseConfig(base_url=api.url + "/v1", contact="tests@example.org", **settings)


def search(backend, q, k):
    async def go():
        try:
            return await backend.search(q, k)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_results_are_normalised_with_licences_and_pages_followed():
    with JsonApi(openverse) as api:
        out = search(OpenverseBackend(config(api, page_size=10)), query("koala"), 25)
        first = api.requests[0]
    assert len(out.results) == 25 and len(api.requests) == 3
    koala = out.results[0]
    assert (koala.url, koala.page_url, koala.width, koala.license) == (
        "https://img.example/koala0.jpg",
        "https://commons.example/koala0",
        800,
        "BY-4.0",
    )
    assert out.results[1].license == "CC0" and koala.attribution.startswith('"koala" by')
    assert first.path == "/v1/images/" and first.params["q"] == "koala -cartoon"
    assert first.params["category"] == "photograph" and first.params["license"] == "cc0,pdm,by,by-sa"
    assert (
        first.headers["user-agent"].startswith("kgclip/")
        and "tests@example.org" in first.headers["user-agent"]
    )


def test_the_key_goes_in_a_header_never_in_the_ledger_key(monkeypatch):
    monkeypatch.setenv("OV_TOKEN", "s3cret")
    with JsonApi(openverse) as api:
        backend = OpenverseBackend(config(api, api_key_env="OV_TOKEN"))
        key = backend.request_key(query("lion"), 5)
        search(backend, query("lion"), 5)
        assert api.requests[0].headers["authorization"] == "Bearer s3cret"
    assert "s3cret" not in key


def test_missing_key_is_named_before_any_request(monkeypatch):
    monkeypatch.delenv("OV_TOKEN", raising=False)
    with JsonApi(openverse) as api, pytest.raises(SearchError, match="OV_TOKEN"):
        OpenverseBackend(config(api, api_key_env="OV_TOKEN"))
        assert not api.requests


@pytest.mark.parametrize(
    "fault",
    [
        (429, {"Retry-After": "0.05"}, b"{}", "application/json"),
        (503, {}, b"", "text/plain"),
        (200, {}, b'{"results": [', "application/json"),
        (200, {}, b"<html>maintenance</html>", "text/html"),
    ],
)
def test_transient_failures_are_retried(fault):
    with JsonApi(openverse) as api:
        api.faults.append(fault)
        out = search(OpenverseBackend(config(api)), query("lion"), 5)
        assert len(api.requests) == 2
    assert len(out.results) == 5 and out.failure is None


def test_a_rejected_key_stops_instead_of_recording_failures():
    with JsonApi(openverse) as api:
        api.faults.append((401, {}, b'{"detail": "bad token"}', "application/json"))
        with pytest.raises(SearchError, match="401"):
            search(OpenverseBackend(config(api)), query("lion"), 5)


def test_persistent_failure_is_retryable_and_empty_results_are_fine():
    with JsonApi(openverse) as api:
        api.faults.extend([(500, {}, b"", "text/plain")] * 3)
        out = search(OpenverseBackend(config(api, max_retries=2)), query("lion"), 5)
        assert out.retryable and "HTTP 500" in out.failure
        assert search(OpenverseBackend(config(api)), query("zebra"), 5).results == []


def test_rate_limit_reaches_the_allowed_rate_without_429s():
    allowed = 20.0
    with JsonApi(openverse, allowed_per_s=allowed) as api:
        backend = OpenverseBackend(config(api, rate_per_s=allowed, max_retries=0))

        async def many():
            try:
                return await asyncio.gather(*(backend.search(query(f"koala {i % 3}"), 1) for i in range(60)))
            finally:
                await backend.aclose()

        asyncio.run(many())
        times = [r.at for r in api.requests]
        statuses = [r.status for r in api.requests]
    achieved = (len(times) - 1) / (times[-1] - times[0])
    print(
        f"\nrate limit: achieved {achieved:.2f} requests/s against {allowed:.0f} allowed "
        f"({achieved / allowed:.1%}); 429s: {statuses.count(429)}"
    )
    assert statuses.count(429) == 0
    assert achieved >= 0.95 * allowed


def test_daily_quota_stops_cleanly_and_the_stage_resumes(tmp_path, capsys):
    with JsonApi(openverse) as api:
        raw = {
            "name": "t",
            "search": {
                "backend": "openverse",
                "top_k": 2,
                "openverse": {
                    "base_url": api.url + "/v1",
                    "contact": "tests@example.org",
                    "rate_per_s": 200,
                    "daily_quota": 3,
                },
            },
        }
        ctx = StageContext(parse(raw), Workdir(tmp_path))
        queries = [query(t) for t in ("koala", "lion", "koala photo", "lion photo", "koala 1")]
        write_records(ctx.path("queries.parquet"), queries, Query)
        first = search_stage.run(ctx)
        assert first.stats["queries_asked"] == 5 and len(api.requests) == first.stats["requests_sent"] == 3
        assert first.stats["retry_later"] == 2
        plan = "search: openverse: 5 queries need up to 5 requests (1 each); daily quota 3 (0 used today)"
        assert plan + ": 2 days" in capsys.readouterr().err
        left = [
            r for r in read_records(ctx.path("rejects/search.parquet"), Rejected) if r.reason == "retry_later"
        ]
        assert len(left) == 2
        # the next day: a larger quota (as if the counter had reset) finishes the rest, and only the rest
        raw["search"]["openverse"]["daily_quota"] = 10
        again = search_stage.run(StageContext(parse(raw), Workdir(tmp_path)))
        assert len(api.requests) == 5 and again.stats["retry_later"] == 0
        assert {h.query_id for h in read_records(ctx.path("hits.parquet"), Hit)} == {
            q.query_id for q in queries
        }


def test_routing_sends_each_kind_to_its_backends(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (64, 64), "red").save(src / "koala.png")
    (src / "koala.txt").write_text("A koala.")
    with JsonApi(openverse) as api:
        raw = {
            "name": "t",
            "search": {
                "backends": ["corpus", "openverse"],
                "top_k": 2,
                "route": {"entity_attribute": ["openverse"]},
                "corpus": {"source": str(src)},
                "openverse": {"base_url": api.url + "/v1", "contact": "t@example.org", "rate_per_s": 200},
            },
        }
        ctx = StageContext(parse(raw), Workdir(tmp_path / "w"))
        write_records(
            ctx.path("queries.parquet"), [query("koala"), query("koala photo", "entity_attribute")], Query
        )
        search_stage.run(ctx)
    hits = list(read_records(ctx.path("hits.parquet"), Hit))
    by = {(h.query_id, h.backend) for h in hits}
    assert ("q-koala", "corpus") in by and ("q-koala", "openverse") in by
    assert ("q-koala photo", "openverse") in by and ("q-koala photo", "corpus") not in by
    with pytest.raises(ValueError, match=r"route\.entity names backends not in use"):
        parse(
            {
                **raw,
                "search": {
                    **raw["search"],
                    "route": {"entity": ["openverse", "corpus"]},
                    "backends": ["corpus"],
                },
            }
        )


def test_request_budget_stops_cleanly_and_the_cli_flag_sets_it(tmp_path):
    from kgclip.cli import with_request_budget

    with JsonApi(openverse) as api:
        raw = {
            "name": "t",
            "search": {
                "backends": ["openverse"],
                "top_k": 2,
                "openverse": {"base_url": api.url + "/v1", "contact": "tests@example.org", "rate_per_s": 200},
            },
        }
        config = with_request_budget(parse(raw), 2)
        assert config.search.openverse.max_requests == 2
        ctx = StageContext(config, Workdir(tmp_path))
        write_records(
            ctx.path("queries.parquet"), [query(t) for t in ("koala", "lion", "koala 1", "lion 2")], Query
        )
        result = search_stage.run(ctx)
        assert len(api.requests) == 2 and result.stats["retry_later"] == 2
    assert result.stats["requests_sent"] == 2 and result.stats["queries_asked"] == 4
    assert "4 asked, 2 HTTP requests sent" in result.summary


def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_service_stops_after_a_few_connection_failures():
    """Offline, every query would fail all its retries, each after a backoff: days for a big harvest."""
    cfg = OpenverseConfig(
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        contact="tests@example.org",
        rate_per_s=200,
        backoff_s=0.01,
        max_connect_failures=3,
    )
    backend = OpenverseBackend(cfg)

    async def many():
        try:
            return await asyncio.gather(*(backend.search(query(f"koala {i}"), 5) for i in range(50)))
        finally:
            await backend.aclose()

    started = time.monotonic()
    stopped = r"openverse: cannot reach 127\.0\.0\.1: 3 connection attempts in a row failed, the last with "
    with pytest.raises(SearchError, match=stopped + "ConnectError"):
        asyncio.run(many())
    assert time.monotonic() - started < 5
    assert backend.limiter.sent == 3  # attempted
    assert backend.requests == 0  # none reached the service, so none counts as sent


def test_an_unreachable_service_stops_the_stage_and_its_queries_stay_retryable(tmp_path):
    port = closed_port()
    raw = {
        "name": "t",
        "search": {
            "backend": "openverse",
            "top_k": 2,
            "openverse": {
                "base_url": f"http://127.0.0.1:{port}/v1",
                "contact": "tests@example.org",
                "rate_per_s": 200,
                "backoff_s": 0.01,
                "max_retries": 1,
                "max_connect_failures": 3,
            },
        },
    }
    ctx = StageContext(parse(raw), Workdir(tmp_path))
    write_records(ctx.path("queries.parquet"), [query(t) for t in ("koala", "lion", "koala photo")], Query)
    with pytest.raises(SearchError, match=r"openverse: cannot reach 127\.0\.0\.1"):
        search_stage.run(ctx)  # the first query gave up after 2 attempts, the second stopped the stage
    with JsonApi(openverse, port=port) as api:
        result = search_stage.run(ctx)
        assert len(api.requests) == 3
    assert result.stats["queries_asked"] == 3 and result.stats["retry_later"] == 0
    assert result.stats["requests_sent"] == 3 and result.stats["queries_with_hits"] == 3
