"""A loopback SPARQL endpoint for offline tests of the Wikidata SPARQL source.

Items in the Wikidata JSON dump format are converted to the RDF that WDQS and QLever serve
(labels, truthy `wdt:` claims, sitelinks) and queried with rdflib's SPARQL 1.1 engine behind the
SPARQL 1.1 protocol. Two dialects are emulated:

- ``wdqs`` (path ``/sparql``): the well-known prefixes are predeclared, ``hint:`` triples are
  ignored, QLever's ``@en@rdfs:label`` shortcut is a syntax error (400);
- ``qlever`` (path ``/api/wikidata``): every prefix must be declared (else 400), and
  ``S @lang@P O`` is rewritten to ``S P O`` plus ``FILTER(LANG(O) = "lang")``.

Usage::

    with SparqlServer(entities, dialect="qlever") as srv:
        srv.faults.append(("status", 429, {"Retry-After": "1"}))
        httpx.post(srv.url, content=query, headers={"Content-Type": "application/sparql-query"})
        srv.requests, srv.max_concurrent

Fault entries in ``srv.faults`` are consumed one per request, in order:
``("status", code, headers)``, ``("sleep", seconds)`` (then answer normally), ``("malformed",)``
(200, JSON content type, truncated JSON), ``("wrong_type",)`` (200 text/html),
``("slow_body", seconds)`` (headers, then the body in 10 pieces ``seconds`` apart) and
``("close",)`` (drop the connection without answering).

Claims follow Wikibase's best-rank rule; an "unknown value" shows as a skolem IRI on WDQS and
a blank node on QLever, as the real endpoints serve it. Importing this module patches three
rdflib internals: aggregates with DISTINCT skip unbound values instead of raising
(RDFLib/rdflib#716), and joins and MINUS are hashed instead of nested loops (same results).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import RDF, RDFS, SKOS, XSD
from rdflib.plugins.sparql import aggregates, evaluate, prepareQuery
from rdflib.plugins.sparql.sparql import NotBoundError

WD = Namespace("http://www.wikidata.org/entity/")
WDT = Namespace("http://www.wikidata.org/prop/direct/")
SCHEMA = Namespace("http://schema.org/")
WIKIBASE = Namespace("http://wikiba.se/ontology#")
DATA = Namespace("https://www.wikidata.org/wiki/Special:EntityData/")
GEO = Namespace("http://www.opengis.net/ont/geosparql#")
FILE_PATH = "http://commons.wikimedia.org/wiki/Special:FilePath/"
EARTH = "http://www.wikidata.org/entity/Q2"
GENID = "http://www.wikidata.org/.well-known/genid/"
WDNO = Namespace("http://www.wikidata.org/prop/novalue/")

# Prefixes WDQS declares for every query (a subset of its list: the ones tests are likely to use).
WDQS_PREFIXES = {
    "wd": str(WD),
    "wdt": str(WDT),
    "wdno": str(WDNO),
    "wikibase": str(WIKIBASE),
    "p": "http://www.wikidata.org/prop/",
    "ps": "http://www.wikidata.org/prop/statement/",
    "pq": "http://www.wikidata.org/prop/qualifier/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "rdfs": str(RDFS),
    "xsd": str(XSD),
    "owl": "http://www.w3.org/2002/07/owl#",
    "schema": str(SCHEMA),
    "skos": str(SKOS),
    "geo": str(GEO),
    "data": str(DATA),
    "wdata": str(DATA),
    "bd": "http://www.bigdata.com/rdf#",
    "hint": "http://www.bigdata.com/queryHints#",
}
NOT_WIKIPEDIAS = {"commons", "species", "meta", "wikidata", "mediawiki", "sources", "incubator", "outreach"}
PATHS = {"wdqs": "/sparql", "qlever": "/api/wikidata"}
JSON_TYPE = "application/sparql-results+json"
FAULTS = {None, "status", "sleep", "malformed", "wrong_type", "slow_body", "close"}
TSV_TYPE = "text/tab-separated-values"


# rdflib bug (RDFLib/rdflib#716, #882): an aggregate with DISTINCT over a variable that OPTIONAL left
# unbound, e.g. GROUP_CONCAT(DISTINCT ?image), raises NotBoundError instead of skipping the row.
_use_row = aggregates.Accumulator.use_row


def _use_bound_row(self: aggregates.Accumulator, row: Any) -> bool:
    try:
        return _use_row(self, row)
    except NotBoundError:
        return False  # unbound values never count in an aggregate


aggregates.Accumulator.use_row = _use_bound_row  # type: ignore[method-assign]


class _Hashed:
    """The right-hand rows of a join or MINUS, grouped by their variables and hashed on the
    variables a left row shares with them. rdflib compares every left row with every right row:
    3,000 x 1,000 rows of MINUS took 7 s, a 100-QID VALUES batch joined with its UNION 0.7 s."""

    def __init__(self, rows: Iterable[Any]):
        self.groups: dict[frozenset[Any], list[Any]] = {}
        for row in rows:
            self.groups.setdefault(frozenset(row), []).append(row)
        self.tables: dict[tuple[Any, ...], dict[tuple[Any, ...], list[Any]]] = {}

    def matches(self, row: Any) -> Iterator[tuple[tuple[Any, ...], list[Any]]]:
        """(shared variables, the compatible right rows) for each group of right rows."""
        for domain, rows in self.groups.items():
            shared = tuple(sorted(domain.intersection(row)))
            table = self.tables.get((domain, shared))
            if table is None:
                table = self.tables[(domain, shared)] = {}
                for r in rows:
                    table.setdefault(tuple(r[v] for v in shared), []).append(r)
            yield shared, table.get(tuple(row[v] for v in shared), [])


def _hashed_join(left: Iterable[Any], right: Iterable[Any]) -> Iterator[Any]:
    hashed = _Hashed(right)
    for row in left:
        for _, rows in hashed.matches(row):
            for other in rows:
                yield row.merge(other)


def _hashed_minus(left: Iterable[Any], right: Iterable[Any]) -> Iterator[Any]:
    """A left row goes if a right row shares a variable with it and agrees on all shared ones."""
    hashed = _Hashed(right)
    for row in left:
        if not any(shared and rows for shared, rows in hashed.matches(row)):
            yield row


# evalJoin and evalMinus look these helpers up in their module at call time
evaluate._join = _hashed_join
evaluate._minus = _hashed_minus

# ---------------------------------------------------------------------------------------------
# Wikidata entity JSON -> RDF


def read_entities(path: str | Path) -> Iterator[dict[str, Any]]:
    """Entities from a JSON-lines file or a dump (``[``/``]`` framing, lines ending in ``,``)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip().removesuffix(",")
            if line.startswith("{"):
                yield json.loads(line)


def best_rank(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The preferred statements if there are any, else the normal ones (Wikibase's "best
    statements", the ones ``wdt:`` shows). As in Wikibase, somevalue/novalue statements take
    part in the rank contest: a preferred "unknown value" hides the normal values."""
    ranked = [s for s in statements if s.get("rank") != "deprecated"]
    return [s for s in ranked if s.get("rank") == "preferred"] or ranked


def _value(snak: dict[str, Any]) -> URIRef | Literal | None:
    """The RDF term WDQS uses for a snak's value; None for types this server skips."""
    datavalue = snak.get("datavalue") or {}
    kind, value = datavalue.get("type"), datavalue.get("value")
    datatype = snak.get("datatype") or ("commonsMedia" if snak.get("property") == "P18" else None)
    if kind == "wikibase-entityid":
        letter = {"item": "Q", "property": "P", "lexeme": "L"}.get(value.get("entity-type", "item"), "Q")
        return WD[value.get("id") or f"{letter}{value['numeric-id']}"]
    if kind == "string":
        if datatype == "commonsMedia":
            return URIRef(FILE_PATH + quote(value, safe=""))
        if datatype == "url":
            return URIRef(value)
        return Literal(value)
    if kind == "monolingualtext":
        return Literal(value["text"], lang=value["language"])
    if kind == "globecoordinate":
        point = f"Point({value['longitude']} {value['latitude']})"
        globe = value.get("globe") or EARTH
        return Literal(point if globe == EARTH else f"<{globe}> {point}", datatype=GEO.wktLiteral)
    if kind == "quantity":
        return Literal(value["amount"].lstrip("+"), datatype=XSD.decimal)
    if kind == "time":  # WDQS stores unknown months/days (00) as 01
        stamp = re.sub(r"-00(?=[-T])", "-01", value["time"].lstrip("+"))
        return Literal(stamp, datatype=XSD.dateTime)
    return None


def entity_triples(entity: dict[str, Any], somevalue: str | None = None) -> Iterator[tuple[Any, URIRef, Any]]:
    """The triples WDQS/QLever hold about one entity (truthy claims only, no statement nodes).

    ``somevalue``: how an "unknown value" snak shows: None (no triple), ``"iri"`` (WDQS: a
    skolem IRI under ``http://www.wikidata.org/.well-known/genid/``) or ``"bnode"`` (QLever,
    loaded from the RDF dump's blank nodes). A "no value" snak gives ``wd:Qx a wdno:Px``.
    """
    qid = entity["id"]
    node = WD[qid]
    for section, predicate in (("labels", RDFS.label), ("descriptions", SCHEMA.description)):
        for entry in (entity.get(section) or {}).values():
            yield node, predicate, Literal(entry["value"], lang=entry["language"])
    for entries in (entity.get("aliases") or {}).values():
        for entry in entries:
            yield node, SKOS.altLabel, Literal(entry["value"], lang=entry["language"])
    for prop, statements in (entity.get("claims") or {}).items():
        for n, statement in enumerate(best_rank(statements)):
            snaktype = statement["mainsnak"].get("snaktype")
            if snaktype == "value":
                value = _value(statement["mainsnak"])
                if value is not None:
                    yield node, WDT[prop], value
            elif snaktype == "novalue":
                yield node, RDF.type, WDNO[prop]
            elif snaktype == "somevalue" and somevalue:
                key = hashlib.md5(str(statement.get("id") or f"{qid}${prop}${n}").encode()).hexdigest()
                yield node, WDT[prop], URIRef(GENID + key) if somevalue == "iri" else BNode(key)
    sitelinks = entity.get("sitelinks") or {}
    for site, link in sitelinks.items():
        match = re.fullmatch(r"([a-z][a-z_-]*)wiki", site)
        if match and match.group(1) not in NOT_WIKIPEDIAS:
            lang = match.group(1).replace("_", "-")
            title = quote(link["title"].replace(" ", "_"), safe="/:_-.,()'!*~$&+;=@")
            yield URIRef(f"https://{lang}.wikipedia.org/wiki/{title}"), SCHEMA.about, node
    count = Literal(len(sitelinks), datatype=XSD.integer)
    yield DATA[qid], SCHEMA.about, node
    yield DATA[qid], WIKIBASE.sitelinks, count
    yield node, WIKIBASE.sitelinks, count  # the WDQS shortcut beside QLever's ^schema:about path


def entities_to_graph(entities: Iterable[dict[str, Any]], somevalue: str | None = None) -> Graph:
    """An rdflib graph of the given entities (dicts in the dump's entity JSON format)."""
    graph = Graph(bind_namespaces="none")
    for entity in entities:
        for triple in entity_triples(entity, somevalue):
            graph.add(triple)
    return graph


# ---------------------------------------------------------------------------------------------
# Query text: dialect checks and rewrites (token level, so strings, IRIs and comments are safe)

_TOKEN = re.compile(
    r"""(?P<comment>\#[^\n]*)
    |(?P<string>\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"|'''(?:[^'\\]|\\.|'(?!''))*'''
        |"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<iri><[^<>"{}|^`\\\s]*>)
    |(?P<langpred>@[A-Za-z]+(?:-[A-Za-z0-9]+)*@)
    |(?P<var>[?$]\w+)
    |(?P<number>\d*\.\d+(?:[eE][+-]?\d+)?|\d+\.\d*[eE][+-]?\d+|\d+(?:[eE][+-]?\d+)?)
    |(?P<bnode>_:[\w.-]*\w)
    |(?P<pname>(?:[A-Za-z][\w-]*(?:\.[\w-]+)*)?:(?:[\w%-]+(?:[.:][\w%-]+)*)?)
    |(?P<word>[A-Za-z_]\w*)
    |(?P<ws>\s+)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
# What ends a triples block in a group, or starts a pattern that cannot continue one.
_BLOCK_END = {".", "}", "{", "OPTIONAL", "FILTER", "MINUS", "BIND", "VALUES", "SERVICE", "GRAPH", "UNION"}


class QueryError(ValueError):
    """A query this dialect refuses (answered with HTTP 400)."""


def _tokens(query: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(query)]


def _code(tokens: list[tuple[str, str]]) -> list[int]:
    """Indices of the tokens that matter (no whitespace or comments)."""
    return [i for i, (kind, _) in enumerate(tokens) if kind not in ("ws", "comment")]


def _prefixes(tokens: list[tuple[str, str]]) -> tuple[set[str], set[str]]:
    """(declared, used) prefix names."""
    code = _code(tokens)
    declared, used = set(), set()
    for n, i in enumerate(code):
        kind, text = tokens[i]
        if kind != "pname":
            continue
        prefix = text.split(":", 1)[0]
        after_prefix = n > 0 and tokens[code[n - 1]][1].upper() == "PREFIX"
        (declared if after_prefix else used).add(prefix)
    return declared, used


def _rewrite_lang_shortcut(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``S @en@P O`` -> ``S P O FILTER(LANG(O) = "en")``, the FILTER placed where the triples
    block around the pattern ends (so ``;`` and ``,`` lists stay valid)."""
    tokens = list(tokens)
    while True:
        code = _code(tokens)
        at = next((n for n, i in enumerate(code) if tokens[i][0] == "langpred"), None)
        if at is None:
            return tokens
        lang = tokens[code[at]][1].strip("@")
        if at + 2 >= len(code):
            raise QueryError("language-filtered predicate without an object")
        obj = tokens[code[at + 2]][1]
        depth, end = 0, len(code)
        for n in range(at + 2, len(code)):
            text = tokens[code[n]][1]
            if text in ("(", "["):
                depth += 1
            elif text in (")", "]"):
                depth -= 1
            elif depth == 0 and (text in _BLOCK_END or text.upper() in _BLOCK_END):
                end = n
                break
        insert_at = code[end] if end < len(code) else len(tokens)
        tokens[insert_at:insert_at] = [("other", f' FILTER(LANG({obj}) = "{lang}") ')]
        tokens[code[at]] = ("ws", "")


def _strip_hints(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop Blazegraph ``hint:Subject hint:predicate value .`` triples (WDQS ignores them as data)."""
    code = _code(tokens)
    drop: set[int] = set()
    for n, i in enumerate(code[:-2]):
        if tokens[i][1].startswith("hint:") and tokens[code[n + 1]][1].startswith("hint:"):
            last = n + 2
            if last + 1 < len(code) and tokens[code[last + 1]][1] == ".":
                last += 1
            drop.update(code[n : last + 1])
    return [("ws", " ") if i in drop else tok for i, tok in enumerate(tokens)]


def prepare(query: str, dialect: str) -> str:
    """The query as rdflib should run it, or QueryError for what the dialect would refuse."""
    tokens = _tokens(query)
    if any(text.upper() == "SERVICE" for kind, text in tokens if kind == "word"):
        raise QueryError("SERVICE is not supported by this offline test server")
    declared, used = _prefixes(tokens)
    missing = used - declared
    if dialect == "qlever":
        if missing:
            raise QueryError(f"Invalid SPARQL query: prefix(es) {sorted(missing)} not declared")
        tokens = _rewrite_lang_shortcut(tokens)
    else:
        if any(kind == "langpred" for kind, _ in tokens):
            raise QueryError('MalformedQueryException: Encountered "@" (QLever syntax is not SPARQL)')
        unknown = missing - WDQS_PREFIXES.keys()
        if unknown:
            raise QueryError(f"MalformedQueryException: undeclared prefix(es) {sorted(unknown)}")
        tokens = _strip_hints(tokens)
        header = "".join(f"PREFIX {p}: <{WDQS_PREFIXES[p]}>\n" for p in sorted(missing))
        tokens = [("ws", header), *tokens]
    return "".join(text for _, text in tokens)


# ---------------------------------------------------------------------------------------------
# Result formats (W3C SPARQL 1.1 JSON and TSV)


def _json_term(term: Any) -> dict[str, str]:
    if isinstance(term, URIRef):
        return {"type": "uri", "value": str(term)}
    if isinstance(term, BNode):
        return {"type": "bnode", "value": str(term)}
    out = {"type": "literal", "value": str(term)}
    if term.language:
        out["xml:lang"] = term.language
    elif term.datatype and term.datatype != XSD.string:
        out["datatype"] = str(term.datatype)
    return out


def _tsv_term(term: Any) -> str:
    if term is None:
        return ""
    if isinstance(term, URIRef):
        return f"<{term}>"
    if isinstance(term, BNode):
        return f"_:{term}"
    escaped = str(term).translate({92: "\\\\", 34: '\\"', 10: "\\n", 13: "\\r", 9: "\\t"})
    if term.language:
        return f'"{escaped}"@{term.language}'
    if term.datatype and term.datatype != XSD.string:
        return f'"{escaped}"^^<{term.datatype}>'
    return f'"{escaped}"'


def format_results(result: Any, fmt: str) -> tuple[str, bytes]:
    """(content type, body) for an rdflib query result in ``json`` or ``tsv``."""
    if result.type == "ASK":
        return JSON_TYPE, json.dumps({"head": {}, "boolean": bool(result.askAnswer)}).encode()
    if result.type != "SELECT":
        return "text/turtle", result.graph.serialize(format="turtle").encode()
    names = [str(v) for v in result.vars]
    if fmt == "tsv":
        lines = ["\t".join(f"?{n}" for n in names)]
        lines += ["\t".join(_tsv_term(row[n]) for n in names) for row in result]
        return f"{TSV_TYPE}; charset=utf-8", ("\n".join(lines) + "\n").encode()
    bindings = [{n: _json_term(row[n]) for n in names if row[n] is not None} for row in result]
    body = {"head": {"vars": names}, "results": {"bindings": bindings}}
    return f"{JSON_TYPE}; charset=utf-8", json.dumps(body, ensure_ascii=False).encode()


def _wanted_format(accept: str) -> str:
    """``tsv`` when TSV is asked for before any JSON type, else ``json``."""
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media == TSV_TYPE:
            return "tsv"
        if media in (JSON_TYPE, "application/json"):
            return "json"
    return "json"


# ---------------------------------------------------------------------------------------------
# The server


class Request(NamedTuple):
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # names lower-cased
    query: str | None  # the SPARQL text, however it was sent


class SparqlServer:
    """A SPARQL endpoint on 127.0.0.1 over the given entities, in a background thread.

    ``items``: entity dicts (dump format); ``graph``: an rdflib graph to use instead.
    After ``start()`` (or ``with``): ``url``, ``requests`` (``Request`` tuples), ``spans``
    (``[start, end]`` monotonic times, same order; end is None while in flight),
    ``max_concurrent``, ``faults`` (consumed in order) and ``graph``.
    """

    def __init__(
        self, items: Iterable[dict[str, Any]] = (), dialect: str = "qlever", *, graph: Graph | None = None
    ):
        if dialect not in PATHS:
            raise ValueError(f"dialect must be one of {sorted(PATHS)}")
        self.dialect = dialect
        self.path = PATHS[dialect]
        somevalue = {"wdqs": "iri", "qlever": "bnode"}[dialect]
        self.graph = graph if graph is not None else entities_to_graph(items, somevalue)
        self.faults: list[tuple[Any, ...]] = []
        self.requests: list[Request] = []
        self.spans: list[list[float | None]] = []
        self.max_concurrent = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()  # one query at a time: rdflib's parser is not thread-safe
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.path}"

    def start(self) -> SparqlServer:
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
        self._stopping.set()  # wakes sleeping and trickling handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SparqlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, text: str) -> Any:
        """Run a query as the endpoint would (dialect rules included); for use in tests."""
        with self._query_lock:
            result = self.graph.query(prepareQuery(prepare(text, self.dialect)))
            if result.type == "SELECT":
                result.bindings  # noqa: B018 - evaluate now, under the lock
            return result

    # -- bookkeeping used by the handler
    def _begin(self, request: Request) -> int:
        with self._lock:
            self.requests.append(request)
            self.spans.append([time.monotonic(), None])
            self._in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self._in_flight)
            return len(self.spans) - 1

    def _end(self, index: int) -> None:
        with self._lock:
            self.spans[index][1] = time.monotonic()
            self._in_flight -= 1

    def _next_fault(self) -> tuple[Any, ...] | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None


def _make_handler(server: SparqlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: simple, and shutdown never waits
        _index: int | None = None  # this request's place in server.spans while it is in flight

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _read_query(self) -> str | None:
            parts = urlsplit(self.path)
            params = parse_qs(parts.query)
            if self.command == "POST":
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if ctype == "application/sparql-query":
                    return body
                if ctype == "application/x-www-form-urlencoded":
                    params = parse_qs(body)
            return params.get("query", [None])[0]

        def _handle(self) -> None:
            query = self._read_query()
            path = urlsplit(self.path).path
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._index = server._begin(Request(self.command, path, headers, query))
            try:
                self._answer(path, query)
            except (ConnectionError, TimeoutError):
                pass  # the client gave up (a timeout test); nothing to answer
            finally:
                self._done()

        def _done(self) -> None:
            """End the request's span; called just before the last bytes go out, because a serial
            client sends its next request the moment it has them."""
            if self._index is not None:
                server._end(self._index)
                self._index = None

        def _send(
            self, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None, pause: float = 0
        ) -> None:
            """The response; with ``pause``, the body goes in 10 pieces, each after ``pause`` s."""
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            step = -(-len(body) // 10) if pause else len(body)
            pieces = [body[i : i + step] for i in range(0, len(body), max(step, 1))] or [b""]
            for n, piece in enumerate(pieces):
                if pause and server._stopping.wait(pause):
                    return  # shutting down
                if n == len(pieces) - 1:
                    self._done()
                self.wfile.write(piece)

        def _answer(self, path: str, query: str | None) -> None:
            fault = server._next_fault()
            kind = fault[0] if fault else None
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}")
            if kind == "status":
                _, status, extra = fault
                return self._send(status, "text/plain; charset=utf-8", f"fault {status}\n".encode(), extra)
            if kind == "wrong_type":
                page = b"<!DOCTYPE html><html><body><h1>Wikimedia Error</h1></body></html>"
                return self._send(200, "text/html; charset=utf-8", page)
            if kind == "close":
                self.close_connection = True
                return None
            if kind == "sleep" and server._stopping.wait(fault[1]):
                return None  # shutting down
            status, ctype, body = self._evaluate(path, query)
            if kind == "malformed":
                return self._send(200, f"{JSON_TYPE}; charset=utf-8", body[: len(body) // 2])
            if kind == "slow_body":
                return self._send(status, ctype, body, pause=fault[1])
            return self._send(status, ctype, body)

        def _evaluate(self, path: str, query: str | None) -> tuple[int, str, bytes]:
            plain = "text/plain; charset=utf-8"
            if path != server.path:
                return 404, plain, f"no endpoint at {path}; try {server.path}\n".encode()
            if not query:
                return 400, plain, b"missing query parameter\n"
            with server._query_lock:
                try:
                    prepared = prepareQuery(prepare(query, server.dialect))
                except Exception as e:  # noqa: BLE001 - any parse or translation error is the client's
                    return 400, plain, f"{type(e).__name__}: {e}\n".encode()
                try:
                    result = server.graph.query(prepared)
                    ctype, body = format_results(result, _wanted_format(self.headers.get("Accept") or ""))
                except Exception as e:  # noqa: BLE001 - an endpoint answers 500, it does not crash
                    return 500, plain, f"{type(e).__name__}: {e}\n".encode()
            return 200, ctype, body

    return Handler
