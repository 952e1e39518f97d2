"""The Wikidata SPARQL source against a loopback endpoint that speaks WDQS's or QLever's dialect."""

import socket

import pyarrow.parquet as pq
import pytest

from kgclip import __version__
from kgclip.config import load
from kgclip.kg.wikidata.select import finalize
from kgclip.kg.wikidata.source import wikidata_entities
from kgclip.kg.wikidata.sparql import Endpoint, SparqlCache, SparqlClient, SparqlError
from kgclip.kg.wikidata.sparql_source import sparql_evaluate
from kgclip.tables import Entity, Rejected, to_table
from sparql_server import SparqlServer
from wikidata_fixture import ANIMAL, PLANT, ROOTS_TOML, entities, expected_qids, write_dump


@pytest.fixture(scope="module")
def items():
    return entities()


@pytest.fixture(scope="module", params=["qlever", "wdqs"])
def server(request, items):
    with SparqlServer(items, dialect=request.param) as srv:
        yield srv


def wikidata_config(tmp_path, source: str, url: str = "", dialect: str = "", dump=None):
    where = f'dump = "{dump}"\n' if dump else f'endpoint = "{url}"\ndialect = "{dialect}"\n'
    path = tmp_path / f"{source}.toml"
    path.write_text(
        f'extends = "demo"\nname = "wd"\n[entities.wikidata]\nsource = "{source}"\n{where}'
        f'contact = "tests@example.org"\nbatch_size = 40\nworkers = 1\ncap_per_root = 0\n{ROOTS_TOML}'
    )
    return load(path).entities.wikidata


def client_for(srv, cache=None, **kw):
    return SparqlClient(Endpoint(srv.url, srv.dialect), "tests@example.org", cache, **kw)


def test_selection_equals_the_oracle(server):
    client = client_for(server)
    try:
        ev = sparql_evaluate(client, [ANIMAL, PLANT], require_image=True, batch_size=50)
    finally:
        client.close()
    assert {i.qid for i in ev.members[729]} == expected_qids("animal", True)
    assert {i.qid for i in ev.members[756]} == expected_qids("plant", True)
    assert ev.excluded[42] == ("excluded_class", "Q5")
    assert ev.excluded[900000001] == ("excluded_property", "P625")
    chosen, _ = finalize(ev, [ANIMAL, PLANT], cap=None)
    assert len(chosen) == len(expected_qids("animal", True) | expected_qids("plant", True))


@pytest.fixture(scope="module")
def harvested(server, tmp_path_factory):
    """One SPARQL run of the source per dialect: its result and the requests it sent."""
    tmp = tmp_path_factory.mktemp(f"sparql-{server.dialect}")
    config = wikidata_config(tmp, "sparql", server.url, server.dialect)
    before = len(server.requests)
    result = wikidata_entities(config, tmp / "cache")
    return config, tmp / "cache", result, server.requests[before:]


def test_sparql_and_dump_give_equal_tables(harvested, tmp_path):
    sparql = harvested[2]
    dump = wikidata_entities(wikidata_config(tmp_path, "dump", dump=write_dump(tmp_path)), tmp_path / "d")
    assert len(sparql.entities) == len(expected_qids("animal", True) | expected_qids("plant", True))
    assert to_table(sparql.entities, Entity).equals(to_table(dump.entities, Entity))
    assert to_table(sparql.rejects, Rejected).equals(to_table(dump.rejects, Rejected))
    pq.write_table(to_table(sparql.entities, Entity), tmp_path / "e.parquet")  # the schema holds


def test_polite_requests_serial_identified_and_in_the_dialect(server, harvested):
    sent = harvested[3]
    assert sent and server.max_concurrent == 1
    for req in sent:
        assert req.method == "POST"
        agent = req.headers["user-agent"]
        assert agent.startswith(f"kgclip/{__version__} (") and "tests@example.org" in agent
        assert "application/sparql-results+json" in req.headers["accept"]
        if server.dialect == "qlever":
            assert req.headers["content-type"] == "application/sparql-query"
            assert "@en@" in req.query and "FILTER(LANG(" not in req.query
        else:
            assert req.headers["content-type"].startswith("application/x-www-form-urlencoded")
            assert "FILTER(LANG(" in req.query and "@en@" not in req.query


def test_second_run_sends_no_query(server, harvested):
    config, cache, first, _ = harvested
    before = len(server.requests)
    again = wikidata_entities(config, cache)
    assert len(server.requests) == before and again.stats["queries_sent"] == 0
    assert first.stats["queries_sent"] > 0
    assert to_table(again.entities, Entity).equals(to_table(first.entities, Entity))


QUERY = "PREFIX wd: <http://www.wikidata.org/entity/>\nSELECT ?x WHERE { VALUES ?x { wd:Q140 } }"


@pytest.mark.parametrize(
    ("fault", "waited"),
    [
        (("status", 429, {"Retry-After": "7"}), [7.0]),
        (("status", 429, {}), [60.0]),  # no Retry-After: the documented minute
        (("status", 500, {}), [0.5]),
        (("status", 503, {"Retry-After": "3"}), [3.0]),
        (("malformed",), [0.5]),
        (("wrong_type",), [0.5]),
        (("close",), [0.5]),
    ],
)
def test_transient_failures_are_retried(items, fault, waited):
    slept: list[float] = []
    with SparqlServer(items[:5], dialect="qlever") as srv:
        srv.faults.append(fault)
        client = client_for(srv, backoff=0.5, sleep=slept.append)
        try:
            rows = client.select(QUERY)
        finally:
            client.close()
        assert rows == [{"x": {"type": "uri", "value": "http://www.wikidata.org/entity/Q140"}}]
        assert slept == waited and len(srv.requests) == 2


def test_a_slow_answer_times_out_and_is_retried(items):
    slept: list[float] = []
    with SparqlServer(items[:5], dialect="qlever") as srv:
        srv.faults.append(("sleep", 2.0))
        client = client_for(srv, timeout=0.3, backoff=0.1, sleep=slept.append)
        try:
            assert client.select(QUERY)
        finally:
            client.close()
    assert slept == [0.1]


def test_backoff_grows_and_gives_up_with_every_reason(items):
    slept: list[float] = []
    with SparqlServer(items[:5], dialect="qlever") as srv:
        srv.faults.extend([("status", 500, {}), ("malformed",), ("status", 502, {}), ("wrong_type",)])
        client = client_for(srv, attempts=4, backoff=1.0, sleep=slept.append)
        with pytest.raises(
            SparqlError, match=r"gave up after 4 attempts: HTTP 500; malformed .*HTTP 502; unexpected"
        ):
            client.select(QUERY)
        client.close()
    assert slept == [1.0, 2.0, 4.0]


def test_a_refused_query_fails_at_once(items):
    with SparqlServer(items[:5], dialect="wdqs") as srv:
        client = client_for(srv, sleep=lambda s: pytest.fail("no retry for a 400"))
        with pytest.raises(SparqlError, match="HTTP 400"):
            client.select("SELECT ?x WHERE { ?x @en@rdfs:label ?y }")
        client.close()
        assert len(srv.requests) == 1


def test_failed_answers_are_not_cached(items, tmp_path):
    cache = SparqlCache(tmp_path / "s.sqlite")
    with SparqlServer(items[:5], dialect="qlever") as srv:
        srv.faults.append(("status", 500, {}))
        client = client_for(srv, cache, attempts=1)
        with pytest.raises(SparqlError):
            client.select(QUERY)
        assert cache.get(srv.url, QUERY) is None
        assert client.select(QUERY) and cache.get(srv.url, QUERY) is not None
        client.close()
    cache.close()


def test_named_endpoints_and_dialects():
    assert Endpoint.resolve("qlever", None) == Endpoint("https://qlever.dev/api/wikidata", "qlever")
    assert Endpoint.resolve("wdqs", None).url == "https://query.wikidata.org/sparql"
    assert Endpoint.resolve("http://localhost:7001", "qlever").dialect == "qlever"
    with pytest.raises(SparqlError, match="dialect"):
        Endpoint.resolve("http://localhost:7001", None)


def test_an_unreachable_endpoint_is_named_once_with_the_reason_counted():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/sparql"
    slept: list[float] = []
    client = SparqlClient(Endpoint(url, "qlever"), "tests@example.org", attempts=5, sleep=slept.append)
    try:
        with pytest.raises(SparqlError) as err:
            client.select("SELECT ?x WHERE {}")
    finally:
        client.close()
    message = str(err.value)
    assert message.count(f"127.0.0.1:{port}") == 1 and "gave up after 5 attempts" in message
    assert message.count("cannot connect") == 1 and "(5 times)" in message
    assert len(slept) == 4
