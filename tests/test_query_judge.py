"""The optional LLM query judge (text/judge.py) against a loopback OpenAI-compatible server."""

import json
import logging
import re
import time

import pytest

from kgclip.config import ConfigError, QueryJudgeConfig, load_raw, parse
from kgclip.pipeline import harvest, stage_by_name, state_of
from kgclip.tables import Query, QueryParams, Rejected, read_records
from kgclip.text.judge import judge_queries
from kgclip.text.llm import LLMCache
from kgclip.text.queries import query_id
from kgclip.workdir import Workdir
from llm_server import ChatServer, Reply

UPSTREAM = ("entities", "filter", "types", "attributes")


def asked(body: dict) -> str:
    """The query string of a judge prompt (the last line, as JSON)."""
    first = body["messages"][0]["content"]
    return json.loads(re.search(r"^Query: (.+)$", first, flags=re.M).group(1))


def respond(body: dict) -> str:
    """A stand-in model: toys, flags and heraldic griffins are what a search engine returns."""
    text = asked(body).lower()
    if "toy" in text or "flag" in text or text == "griffon":
        return json.dumps({"in_domain": False, "reason": "a search returns toys and flags"})
    return json.dumps({"in_domain": True, "reason": "a dog"})


def raw_config(url: str | None = None, **judge) -> dict:
    """livingthings below dog.n.01, entity and type-attribute queries; a judge when `url` is given."""
    raw = load_raw("livingthings")
    raw["entities"]["wordnet"]["roots"] = ["dog.n.01"]
    raw["search"]["corpus"] = {"source": "/nowhere"}
    raw["queries"]["kinds"] = ["entity", "type_attribute"]
    if url is not None:
        raw["queries"]["judge"] = {"llm": {"base_url": url, "model": "test-model"}, **judge}
    return raw


def upstream(path) -> Workdir:
    wd = Workdir(path / "work")
    config = parse(raw_config())
    for stage in UPSTREAM:
        harvest(config, wd, only=stage)
    return wd


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """The queries stage judged once, then run again; the server's request counts after each."""
    with ChatServer(responder=respond, api_key=None) as srv:
        wd = upstream(tmp_path_factory.mktemp("judge"))
        config = parse(raw_config(srv.url, enabled=True))
        harvest(config, wd, only="queries")
        first = srv.count
        prompt = srv.requests[0].body["messages"][0]["content"]
        texts = {asked(r.body) for r in srv.requests}
        harvest(config, wd, only="queries")
        yield wd, first, srv.count - first, prompt, texts


def test_verdicts_are_applied(judged):
    wd, _, _, _, _ = judged
    queries = list(read_records(wd.path("queries.parquet"), Query))
    texts = {q.text for q in queries}
    assert "toy poodle" not in texts and "dog flag" not in texts
    assert "Airedale" in texts and "dog tail" in texts
    rejects = [
        r
        for r in read_records(wd.path("rejects/queries.parquet"), Rejected)
        if r.reason == "judged_not_in_domain"
    ]
    assert {r.detail.split("'")[1] for r in rejects} >= {"toy poodle", "dog flag"}
    assert all(": a search returns toys and flags [llm:test-model]" in r.detail for r in rejects)
    assert {q.decision for q in queries} == {"judged_yes"}  # every kind is judged by default
    stats = wd.load_manifest()["queries"].stats
    judge = stats["judge"]
    assert judge["verdicts"]["not_in_domain"] == len({r.detail.split("'")[1] for r in rejects})
    assert judge["queries_dropped"] == len(rejects) == stats["rejects"]["judged_not_in_domain"]
    assert judge["verdicts"]["in_domain"] + judge["verdicts"]["not_in_domain"] == judge["texts"]
    assert stats["queries"] == len(queries)


def test_the_judge_reads_the_strings_after_the_kg_rules(judged):
    """It runs after the ambiguity step: it sees "boxer dog", never the bare "boxer", and keeps
    that step's record (original_text, senses) in the query and in the reject's detail."""
    wd, _, _, _, texts = judged
    assert "boxer dog" in texts and "boxer" not in texts
    queries = {q.text: q for q in read_records(wd.path("queries.parquet"), Query)}
    boxer = queries["boxer dog"]
    assert (boxer.original_text, boxer.ambiguity, boxer.decision) == ("boxer", "out_of_domain", "judged_yes")
    assert "griffon" not in queries
    (griffon,) = [
        r for r in read_records(wd.path("rejects/queries.parquet"), Rejected) if "'griffon'" in r.detail
    ]
    assert griffon.detail.startswith("'griffon' for wn:")
    assert "[llm:test-model]; also n02112497 griffon: breed of various very small" in griffon.detail


def test_the_prompt_names_the_roots_and_the_query(judged):
    _, _, _, prompt, _ = judged
    assert "this domain: dog (a member of the genus Canis" in prompt
    assert re.search(r'^Query: "[^"]+"$', prompt, flags=re.M)


def test_a_rerun_is_answered_from_the_cache(judged):
    wd, first, second, _, _ = judged
    stats = wd.load_manifest()["queries"].stats["judge"]
    assert first == stats["texts"] > 300  # one request per distinct text
    assert second == 0
    assert stats["llm"]["cached"] == stats["texts"] and stats["llm"]["requests"] == 0


def test_off_by_default(tmp_path):
    assert QueryJudgeConfig().enabled is False
    with ChatServer(responder=respond, api_key=None) as srv:
        wd = upstream(tmp_path)
        harvest(parse(raw_config(srv.url)), wd, only="queries")  # an [llm] section, not enabled
        assert srv.count == 0
    texts = {q.text for q in read_records(wd.path("queries.parquet"), Query)}
    assert "toy poodle" in texts
    assert "judge" not in wd.load_manifest()["queries"].stats


def test_enabled_needs_a_model():
    raw = raw_config()
    raw["queries"]["judge"] = {"enabled": True}
    with pytest.raises(ConfigError, match=r"queries\.judge: .*needs a \[queries\.judge\.llm\] section"):
        parse(raw)


def test_a_config_change_makes_queries_stale(tmp_path):
    wd = upstream(tmp_path)
    harvest(parse(raw_config()), wd, only="queries")
    stage = stage_by_name("queries")
    for raw in (
        raw_config("http://127.0.0.1:9/v1", enabled=True),
        raw_config("http://127.0.0.1:9/v1", kinds=["entity"]),
    ):
        state = state_of(stage, parse(raw), wd, wd.load_manifest())
        assert (state.state, state.why) == ("stale", "config [queries] changed")
    with ChatServer(responder=respond, api_key=None) as srv:
        judged = parse(raw_config(srv.url, enabled=True))
        harvest(judged, wd, only="queries")
        other = raw_config(srv.url, enabled=True)
        other["queries"]["judge"]["llm"]["model"] = "another-model"
        assert state_of(stage, judged, wd, wd.load_manifest()).state == "done"
        assert state_of(stage, parse(other), wd, wd.load_manifest()).state == "stale"


def query(kind: str, text: str) -> Query:
    params = QueryParams([], [], True)
    return Query(
        query_id(kind, text, params), kind, text, None if kind == "type_attribute" else "e1", None, params
    )


QUERIES = [query("entity", "hobby"), query("entity", "hobby falcon"), query("type_attribute", "toy dog")]


def verdicts_for(body: dict) -> str:
    text = asked(body)
    if text == "hobby":
        return json.dumps({"in_domain": False, "reason": "pastimes"})
    return json.dumps({"in_domain": "toy" not in text, "reason": "checked"})


def judge(srv: ChatServer, tmp_path, queries=QUERIES, **cfg):
    llm = {"base_url": srv.url, "model": "test-model", **cfg.pop("llm", {})}
    config = QueryJudgeConfig(enabled=True, llm=llm, **cfg)
    cache = LLMCache(tmp_path / "llm.sqlite")
    try:
        return judge_queries(queries, config, "living thing", cache)
    finally:
        cache.close()


def test_kinds_not_configured_pass_unjudged(tmp_path):
    with ChatServer(responder=verdicts_for, api_key=None) as srv:
        got = judge(srv, tmp_path, kinds=["entity"])
        assert sorted(asked(r.body) for r in srv.requests) == ["hobby", "hobby falcon"]
    assert [(q.text, q.decision) for q in got.kept] == [
        ("hobby falcon", "judged_yes"),
        ("toy dog", "unambiguous"),
    ]
    assert [(r.item, r.reason, r.detail) for r in got.rejected] == [
        (QUERIES[0].query_id, "judged_not_in_domain", "'hobby' for e1: pastimes [llm:test-model]")
    ]


def test_malformed_json_gets_one_corrective_retry(tmp_path):
    with ChatServer(responder=verdicts_for, api_key=None) as srv:
        srv.script.append("Sure! The query names a bird.")
        got = judge(srv, tmp_path, queries=QUERIES[1:2])
        assert srv.count == 2
        retry = srv.requests[1].body["messages"]
    assert retry[1]["content"] == "Sure! The query names a bird."
    assert retry[2]["content"].startswith("That answer is not valid")
    assert [q.text for q in got.kept] == ["hobby falcon"]
    assert got.stats["llm"]["corrective_retries"] == 1 and got.stats["verdicts"] == {"in_domain": 1}


def test_no_valid_answer_keeps_the_query_and_names_it(tmp_path):
    with ChatServer(responder=lambda body: '{"in_domain": "perhaps"', api_key=None) as srv:
        got = judge(srv, tmp_path, queries=QUERIES[:1])
        assert srv.count == 2
        again = judge(srv, tmp_path, queries=QUERIES[:1])  # an invalid answer is never cached
        assert srv.count == 4
    for result in (got, again):
        assert [q.text for q in result.kept] == ["hobby"] and result.rejected == []
        assert result.stats["verdicts"] == {"no_answer": 1} and result.stats["no_answer_texts"] == ["hobby"]
    assert got.judgements["hobby"].reason.startswith('no valid answer: \'{"in_domain": "perhaps"\'')


def test_rate_limits_server_errors_and_garbled_bodies_are_retried(tmp_path):
    with ChatServer(responder=verdicts_for, api_key=None) as srv:
        srv.script += [
            Reply(status=429, headers={"Retry-After": "0.4"}),
            Reply(status=503),
            Reply(raw=b'{"id": "x", "choi', content_type="application/json"),
        ]
        began = time.monotonic()
        got = judge(srv, tmp_path, queries=QUERIES[:1])
        elapsed = time.monotonic() - began
        assert srv.count == 4
    assert elapsed >= 0.4  # Retry-After honoured
    assert got.rejected[0].reason == "judged_not_in_domain"
    assert got.stats["llm"]["garbled"] == 1


def test_the_api_key_is_never_stored_or_logged(tmp_path, monkeypatch, caplog):
    secret = "judge-s3cret-key"
    monkeypatch.setenv("KGCLIP_JUDGE_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with ChatServer(responder=respond, api_key=secret) as srv:
        wd = upstream(tmp_path)
        raw = raw_config(srv.url, enabled=True, kinds=["entity"])
        raw["queries"]["judge"]["llm"]["api_key_env"] = "KGCLIP_JUDGE_KEY"
        harvest(parse(raw), wd, only="queries")
        assert srv.count > 100
    assert "judged_not_in_domain" in wd.load_manifest()["queries"].stats["rejects"]
    assert "HTTP Request" in caplog.text and secret not in caplog.text
    stored = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert any(p.name == "llm.sqlite" for p in stored)
    assert all(secret.encode() not in p.read_bytes() for p in stored)
