"""A local image-text corpus as a search backend: SQLite FTS5 with BM25 ranking.

It stands in for a web image search in the offline default and lets users search a
collection they already own with the same pipeline.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import orjson
from PIL import Image, UnidentifiedImageError

from kgclip import __version__
from kgclip.config import Config
from kgclip.localfiles import open_regular
from kgclip.progress import meter
from kgclip.search.base import Found, Outcome
from kgclip.search.importers import CorpusItem, Skipped, corpus_roots, import_source, read_by_importers
from kgclip.search.kinds import KindCheck
from kgclip.search.subject import RULE_VERSION, caption_subject, key_tokens
from kgclip.tables import Query
from kgclip.workdir import Workdir, atomic_path, atomic_write_bytes, digest_of

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items(
    id INTEGER PRIMARY KEY, uri TEXT NOT NULL UNIQUE, text TEXT NOT NULL, category TEXT NOT NULL,
    license TEXT, attribution TEXT, page_url TEXT, width INTEGER, height INTEGER, subject TEXT NOT NULL);
CREATE TABLE subject_keys(key TEXT NOT NULL, item_id INTEGER NOT NULL, PRIMARY KEY(key, item_id))
    WITHOUT ROWID;
CREATE VIRTUAL TABLE items_fts USING fts5(
    text, category, content='items', content_rowid='id', tokenize='unicode61 remove_diacritics 2');
CREATE TABLE skipped(path TEXT NOT NULL, reason TEXT NOT NULL);
"""
BUILD_CACHE_KIB = 16384
BUILD_PRAGMAS = f"""
PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE;
PRAGMA cache_size = -{BUILD_CACHE_KIB}; PRAGMA temp.cache_size = -{BUILD_CACHE_KIB // 2};
"""
# Subject keys as they come, sorted into subject_keys at the end (a B-tree filled in key order
# is written once, page by page, where keys in caption order would touch a random page each).
STAGED_KEYS = "CREATE TEMP TABLE staged_keys(key TEXT NOT NULL, item_id INTEGER NOT NULL)"
# 2: captions' subjects (search/subject.py) are stored; a format-1 index cannot match by subject.
FORMAT = "kgclip-corpus-2"
# A caption match counts more than a folder-name match ("A koala." vs animals/marsupials).
BM25_WEIGHTS = (1.0, 0.3)
TOKEN = re.compile(r"\w+", re.UNICODE)
MATCH_MODES = ("subject", "subject_first", "anywhere")
KINDS = "kinds"  # match_categories: a category links a picture only to what its subject is a kind of
KINDS_RULE = "wordnet-hypernyms-3"  # search/kinds.py's rule; a change re-asks every corpus query
UNEXPLAINED = "unexplained"  # evidence field of a row FTS5 matched for words Python did not find
KINDS_OVERFETCH = 4  # rows read per result wanted when category matches may be filtered out


def corpus_index_path(config: Config, workdir: Workdir) -> Path:
    corpus = config.search.corpus
    assert corpus is not None  # guaranteed by SearchConfig validation
    if corpus.index is None:
        return workdir.path("corpus.sqlite")
    return corpus.index if corpus.index.is_absolute() else workdir.path(str(corpus.index))


def missing_corpus(config: Config, workdir: Workdir) -> str | None:
    """Why the configured corpus cannot be searched (no index and nothing to build one from), or
    None: checked before any stage runs, not when the search stage comes to it."""
    corpus = config.search.corpus
    if "corpus" not in config.search.active or corpus is None:
        return None
    index = corpus_index_path(config, workdir)
    if index.is_file():
        return None
    if corpus.source is None:
        return (
            f"no corpus index at {index} ([search.corpus] index): build it with "
            f"`kgclip corpus index SOURCE -o {index}`, or set [search.corpus] source to build it here"
        )
    if not corpus.source.exists():
        return f"no corpus index at {index}, and no {corpus.source} to build it from ([search.corpus] source)"
    return None


class CorpusError(RuntimeError):
    """A corpus index that is missing or not a kgclip corpus."""


class StaleIndex(CorpusError):
    """A kgclip corpus index built by an older version (another format or subject rule)."""


@dataclass(frozen=True)
class IndexReport:
    path: Path
    items: int
    skipped: dict[str, int]
    corpus_id: str
    seconds: float


def build_index(src: Path, out: Path, importer: str = "auto") -> IndexReport:
    """Index `src` into a new SQLite file at `out`, replacing it atomically when done.

    The temporary file is removed when the build fails or is interrupted; one left by a build
    that was killed outright is removed by the next build.
    """
    began = time.monotonic()
    skipped: Counter[str] = Counter()
    digest = hashlib.sha256()
    count = 0
    _remove_stale_temporaries(out)
    state = source_state(src)  # before reading: a change made during the build is seen next time
    with atomic_path(out) as tmp:
        db = sqlite3.connect(tmp)
        try:
            # A file no one reads until it is complete (atomic_path fsyncs and renames it): no journal,
            # no syncs, and a page cache of a fixed size, so time and memory stay linear in the items.
            db.executescript(BUILD_PRAGMAS)
            db.executescript(SCHEMA)
            db.execute(STAGED_KEYS)
            with meter(f"indexing {src}", None) as m:
                for entry in import_source(src, importer):
                    if isinstance(entry, Skipped):
                        skipped[entry.reason.split(":")[0]] += 1
                        db.execute("INSERT INTO skipped VALUES (?, ?)", (entry.path, entry.reason))
                        continue
                    _insert(db, entry)
                    digest.update(f"{entry.uri}\0{entry.text}\0{entry.category}\0{entry.license}\n".encode())
                    count += 1
                    m.advance()
            # subject keys arrive in caption order; inserted sorted, the table is written page by page
            db.execute(
                "INSERT OR IGNORE INTO subject_keys SELECT key, item_id FROM temp.staged_keys"
                " ORDER BY key, item_id"
            )
            db.execute("DROP TABLE temp.staged_keys")
            db.execute("INSERT INTO items_fts(items_fts) VALUES ('rebuild')")
            corpus_id = digest.hexdigest()[:16]
            meta = {
                "format": FORMAT,
                "subject_rule": str(RULE_VERSION),
                "kgclip_version": __version__,
                "source": str(src),
                "source_real": os.path.realpath(src),
                "source_state": state,
                "importer": importer,
                "roots": orjson.dumps(corpus_roots(src)).decode(),
                "corpus_id": corpus_id,
                "items": str(count),
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            db.commit()
        finally:
            db.close()
    return IndexReport(out, count, dict(skipped), corpus_id, time.monotonic() - began)


def source_state(src: Path) -> str:
    """What a stat tells of a corpus source: the path, size and modification time of every file
    below a folder that an importer reads (images, captions, sidecars; sorted, as the importers
    walk), or the table file's. Two states are equal when no such file was added, removed, renamed
    or rewritten (a rewrite that keeps size and time is missed)."""
    digest = hashlib.sha256()

    def add(path: str, rel: str) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            digest.update(f"{rel}\0{exc.errno}\n".encode(errors="surrogateescape"))
            return
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(errors="surrogateescape"))

    if os.path.isdir(src):
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames):
                if read_by_importers(name):
                    path = os.path.join(dirpath, name)
                    add(path, os.path.relpath(path, src))
    else:
        add(str(src), ".")
    return digest.hexdigest()[:16]


def outdated(index: Path, src: Path, importer: str = "auto") -> str | None:
    """Why a current index no longer shows `src` as the importer reads it now (built from another
    source or importer, or the source changed since); None when it still does, and when `src` is
    gone (the index is all there is left of it)."""
    if not os.path.exists(src):
        return None
    meta = _read_meta(index)
    built = meta.get("source_real") or os.path.realpath(meta.get("source", ""))
    if built != os.path.realpath(src):
        return f"it was built from {meta.get('source')}, not {src}"
    if meta.get("importer", importer) != importer:
        return f"it was built with the {meta['importer']} importer, not {importer}"
    if meta.get("source_state") != source_state(src):
        return f"{src} changed since it was built"
    return None


def skipped_files(index: Path) -> list[tuple[str, str]]:
    """Every file the build of `index` skipped, with its reason, in the order met."""
    _read_meta(index)
    db = sqlite3.connect(f"{index.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [(str(p), str(r)) for p, r in db.execute("SELECT path, reason FROM skipped ORDER BY rowid")]
    finally:
        db.close()


def write_skip_report(index: Path, out: Path) -> int:
    """The skipped files of `index` as a CSV table (`path,reason`) at `out`; returns how many."""
    rows = skipped_files(index)
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("path", "reason"))
    writer.writerows(rows)
    atomic_write_bytes(out, text.getvalue().encode())
    return len(rows)


def _remove_stale_temporaries(out: Path) -> None:
    """Remove what killed builds of `out` left (the temporary index and its SQLite journal):
    atomic_path names it `.<name>.tmp-<pid>`, and a build whose process is gone is over."""
    prefix = f".{out.name}.tmp-"
    for path in out.parent.iterdir() if out.parent.is_dir() else ():
        pid = path.name.removeprefix(prefix).split("-")[0]
        if path.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def index_roots(db: sqlite3.Connection) -> tuple[str, ...]:
    """The folders a corpus's local files lie under, from its index; an index built before they
    were recorded has them from the source it names."""
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('roots', 'source')"))
    if "roots" in meta:
        return tuple(orjson.loads(meta["roots"]))
    return tuple(corpus_roots(Path(meta["source"])))


def _insert(db: sqlite3.Connection, item: CorpusItem) -> None:
    """One item with its caption's subject (search/subject.py) and the keys that match it."""
    width, height = _header_size(item.uri)
    subject = caption_subject(item.text)
    cursor = db.execute(
        "INSERT OR IGNORE INTO items(uri, text, category, license, attribution, page_url, width, height,"
        " subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            item.uri,
            item.text,
            item.category,
            item.license,
            item.attribution,
            item.page_url,
            width,
            height,
            " | ".join(subject.phrases),
        ),
    )
    if cursor.rowcount:
        db.executemany(
            "INSERT INTO temp.staged_keys VALUES (?, ?)", ((k, cursor.lastrowid) for k in subject.keys)
        )


def _header_size(uri: str) -> tuple[int | None, int | None]:
    """Image size from the file header only; unknown (None) for remote or unreadable files,
    which the fetch stage will then judge with a recorded reason."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None, None
    try:
        with open_regular(url2pathname(parsed.path)) as fh, Image.open(fh) as img:
            return img.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None, None


def number_variants(token: str) -> list[str]:
    """Singular and plural forms of an English word ("koala"/"koalas", "berry"/"berries").

    A full stemmer (Porter) matches far too much for entity names: it makes "ani" (a bird)
    match "any" and "orang" match "orange". Number is the variation captions actually add.
    """
    forms = {token, token + "s", token + "es"}
    if token.endswith("ies") and len(token) > 4:
        forms.add(token[:-3] + "y")
    elif token.endswith("y") and len(token) > 2:
        forms.add(token[:-1] + "ies")
    if token.endswith("es") and len(token) > 4:
        forms.add(token[:-2])
    if token.endswith("s") and len(token) > 3:
        forms.add(token[:-1])
    return sorted(forms)


def _any_number(token: str) -> str:
    return "(" + " OR ".join(f'"{form}"' for form in number_variants(token)) + ")"


def _all_words(query: Query) -> str:
    """Every query word, each in any number: the FTS5 expression one field must match."""
    return " AND ".join(_any_number(t) for t in TOKEN.findall(query.text.lower()))


class CorpusBackend:
    """BM25 search over a built corpus; every query word must match in some number, like a web engine.

    `match` says where the words must be: `subject` (the caption's subject, search/subject.py),
    `subject_first` (anywhere in the caption, subject matches ranked first) or `anywhere` (the
    caption, BM25 order only). A folder category matches only with `match_categories`, and all the
    words must then be in it: words never match half in the caption and half in the category.
    Honours `exclude_terms` (FTS NOT, on caption and category). Or-terms and photo-only have no
    meaning for a corpus of captions and are ignored.
    """

    name = "corpus"
    max_concurrency = 1

    def __init__(
        self,
        path: Path,
        match: str = "subject",
        match_categories: bool | str = False,
        wordnet: Path | None = None,
    ) -> None:
        if match not in MATCH_MODES:
            raise ValueError(f"match must be one of {', '.join(MATCH_MODES)}, not {match!r}")
        if match_categories not in (True, False, KINDS):
            raise ValueError(f"match_categories must be true, false or {KINDS!r}, not {match_categories!r}")
        meta = _read_meta(path)
        self.path, self.match, self.match_categories = path, match, match_categories
        self._wordnet = wordnet
        self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        self.corpus_id = meta["corpus_id"]
        self.items = int(meta["items"])
        self.roots = index_roots(self._db)

    @functools.cached_property
    def kinds(self) -> KindCheck:
        """WordNet, opened on the first category match to check (a fingerprint never needs it)."""
        return KindCheck.open(number_variants, self._wordnet)

    def fingerprint(self) -> str:
        return digest_of(
            self.corpus_id, FORMAT, str(RULE_VERSION), self.match, str(self.match_categories), KINDS_RULE
        )

    def request_key(self, query: Query, k: int) -> str:
        return digest_of(self.fingerprint(), query.text, *query.params.exclude_terms, str(k))

    def match_expression(self, query: Query) -> str | None:
        """The FTS5 expression: all the query's words in the caption (or all in the category),
        none of the excluded words in either."""
        words = _all_words(query)
        if not words:
            return None
        expr = f"text : ({words})"
        if self.match_categories:
            expr = f"({expr}) OR (category : ({words}))"
        excluded = [
            _any_number(t) for term in query.params.exclude_terms for t in TOKEN.findall(term.lower())
        ]
        if excluded:
            expr = f"({expr}) NOT ({' OR '.join(excluded)})"
        return expr

    async def search(self, query: Query, k: int) -> Outcome:
        return self.search_now(query, k)

    def search_now(self, query: Query, k: int) -> Outcome:
        expr = self.match_expression(query)
        tokens = key_tokens(query.text)
        if expr is None or not tokens:
            return Outcome(failure="no_searchable_terms")
        keys = [" ".join([*tokens[:-1], form]) for form in number_variants(tokens[-1])]
        subject = (
            "(SELECT key FROM subject_keys WHERE item_id = i.id"
            f" AND key IN ({', '.join('?' * len(keys))}) LIMIT 1) AS subject_key"
        )
        where, category = "items_fts MATCH ?", []
        if self.match == "subject" and self.match_categories:  # True or KINDS
            where += " AND (subject_key IS NOT NULL OR i.id IN"
            where += " (SELECT rowid FROM items_fts WHERE items_fts MATCH ?))"
            category.append(f"category : ({_all_words(query)})")
        elif self.match == "subject":
            where += " AND subject_key IS NOT NULL"
        order = f"bm25(items_fts, {BM25_WEIGHTS[0]}, {BM25_WEIGHTS[1]}), i.id"
        if self.match != "anywhere":
            order = f"subject_key IS NULL, {order}"
        rows = self._db.execute(
            "SELECT i.uri, i.text, i.page_url, i.width, i.height, i.license, i.attribution, i.category,"
            f" {subject}, i.subject FROM items_fts JOIN items i ON i.id = items_fts.rowid"
            f" WHERE {where} ORDER BY {order} LIMIT ?",
            (*keys, expr, *category, k if self.match_categories != KINDS else KINDS_OVERFETCH * k),
        ).fetchall()
        found = []
        for r in rows:
            # in `subject` mode a row without a subject match is there for its category alone
            evidence = _evidence(tokens, r[1], r[7], r[8], by_category=self.match == "subject")
            checked = evidence["field"] in ("category", UNEXPLAINED) and self.match_categories == KINDS
            if checked and not self.kinds.is_kind(r[9].split(" | "), query.entity_id):
                continue  # a rabbit in rodents/: the folder names a group it is not in
            if self.match_categories == KINDS and not self.kinds.folder_fits(r[7], query.entity_id):
                continue  # a clock in office/: no storksbill, whatever the caption says
            subject = r[9].split(" | ")[0]
            if self.match_categories == KINDS and self.kinds.compound_denies(subject, query.entity_id):
                continue  # a hot dog: WordNet's compound is no kind of dog
            found.append(Found(*r[:7], evidence=orjson.dumps(evidence).decode()))  # type: ignore[misc]
        return Outcome(results=found[:k])

    def close(self) -> None:
        self._db.close()


def _read_meta(path: Path) -> dict[str, str]:
    """The index's meta table; refuses what is not a current kgclip corpus index, with how to fix it."""
    if not path.is_file():
        raise CorpusError(f"{path}: no corpus index (build one with `kgclip corpus index SRC -o {path}`)")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError as exc:
        raise CorpusError(f"{path}: not a kgclip corpus index ({exc})") from None
    finally:
        db.close()
    found = meta.get("format", "")
    if not found.startswith("kgclip-corpus-"):
        raise CorpusError(f"{path}: not a kgclip corpus index (format {found!r})")
    if found != FORMAT or meta.get("subject_rule") != str(RULE_VERSION):
        raise StaleIndex(
            f"{path}: a corpus index built by an older kgclip ({found}, subject rule "
            f"{meta.get('subject_rule', 'none')}; this kgclip reads {FORMAT}, rule {RULE_VERSION}): rebuild "
            f"it with `kgclip corpus index {meta.get('source', 'SRC')} -o {path}`, or delete it when the "
            "config names its `source` (the search stage then builds it again)"
        )
    return meta


def index_is_current(path: Path) -> bool:
    """Whether `path` is a corpus index this kgclip can search (False for a missing or older one)."""
    try:
        _read_meta(path)
    except CorpusError:
        return False
    return True


def _evidence(
    tokens: list[str], caption: str, category: str, subject_key: str | None, by_category: bool = False
) -> dict[str, Any]:
    """What matched (stored as compact JSON): the field, the words as they are there, and whether
    they were the caption's subject. `by_category`: the row matched for its category, whatever
    else its caption mentions."""
    if subject_key is not None:
        return {"field": "caption", "words": subject_key.split(), "subject": True}
    fields = (("category", category),) if by_category else (("caption", caption), ("category", category))
    for field, text in fields:
        words = _matched(tokens, key_tokens(text))
        if words is not None:
            return {"field": field, "words": words, "subject": False}
    # FTS5 matched what Python tokenises differently (rare scripts): say so rather than guess,
    # and check it as a category match would be.
    return {"field": UNEXPLAINED, "words": [], "subject": False}


def _matched(tokens: list[str], field: list[str]) -> list[str] | None:
    """The field's word matching each query token (in either number), or None if one is missing."""
    words = []
    for token in tokens:
        forms = set(number_variants(token))
        word = next((w for w in field if w in forms), None)
        if word is None:
            return None
        words.append(word)
    return words
