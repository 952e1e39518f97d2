"""The docs say what the code does: every figure and default they quote is checked here.

A page that quotes a number the code (or the demo) no longer gives fails its test, so the page is
corrected in the same change that moves the number. The demo figures are read from a fresh demo
harvest (the `demo_run` fixture); the sentences are matched with their words, so a reworded
sentence has to be matched again here, on purpose."""

from __future__ import annotations

import ast
import json
import re
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kgclip.config import FetchConfig, RayConfig
from kgclip.fetch.http import FetchPolicy
from kgclip.search import corpus

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def page(relative: str) -> str:
    """The page's text with every run of whitespace made one space (sentences wrap anywhere)."""
    return " ".join((ROOT / relative).read_text(encoding="utf-8").split())


def quoted(relative: str, pattern: str) -> tuple[int, ...]:
    """The numbers a sentence of the page quotes (commas as thousands separators)."""
    found = re.search(pattern, page(relative))
    assert found, f"{relative}: no sentence matches {pattern!r}; was it reworded? match it here again"
    return tuple(int(g.replace(",", "")) for g in found.groups())


N = r"([\d,]+)"


# -- the code's constants -------------------------------------------------------------------------


def test_the_corpus_tokenizer_is_the_one_the_architecture_page_names():
    (tokenizer,) = re.findall(r"tokenize='([^']+)'", corpus.SCHEMA)
    found = re.search(
        r"\| corpus search \| SQLite FTS5 \(stdlib\), `([^`]+)` tokenizer", page("docs/architecture.md")
    )
    assert found and found.group(1) == tokenizer
    assert "porter" not in tokenizer


@pytest.mark.parametrize("phrase", ["`kg` now", "LLM later", "`entity` now", "(later) attributes"])
def test_no_page_or_docstring_says_a_finished_feature_comes_later(phrase):
    files = [ROOT / "README.md", *DOCS.rglob("*.md"), *(ROOT / "src").rglob("*.py")]
    assert [str(f.relative_to(ROOT)) for f in files if phrase in f.read_text(encoding="utf-8")] == []


def test_decontamination_figures_agree_on_every_page():
    """The out-of-sample figures (report half of the clip art, real photos) wherever they are quoted:
    kgclip's and imagehash's recall, and imagehash's precision on the clip art."""
    pct, dec = r"(\d+(?:\.\d+)?)%", r"(0\.\d+|1\.000)"
    names = {
        "README.md": (
            rf"finds {pct} of altered copies of evaluation images with no false positive "
            rf"\(imagehash's pHash, tuned the same way: {pct} at {pct} precision\), "
            rf"and {pct} on real photos \(GCompris; imagehash {pct}\)",
            ("ours", "theirs", "theirs_precision", "ours_photos", "theirs_photos"),
        ),
        "docs/stages/curate.md": (
            rf"On the report half kgclip finds {dec} of the copies .*? with no false positive; "
            rf"imagehash {dec} at precision {dec}\. Real photos .*?: kgclip {dec} .*? imagehash {dec}",
            ("ours", "theirs", "theirs_precision", "ours_photos", "theirs_photos"),
        ),
        "docs/architecture.md": (
            rf"its pHash finds {dec} / {dec} of the altered copies where ours finds {dec} / {dec}",
            ("theirs", "theirs_photos", "ours", "ours_photos"),
        ),
        "benchmarks/README.md": (
            rf"Clip art, report half: kgclip \*\*recall {dec}, precision 1\.000\*\* .*?; imagehash {dec} at "
            rf"precision {dec} .*? Real photos: kgclip \*\*{dec}, precision 1\.000\*\* .*?; imagehash {dec}",
            ("ours", "theirs", "theirs_precision", "ours_photos", "theirs_photos"),
        ),
    }
    quoted_by: dict[str, dict[str, float]] = {}
    for relative, (pattern, keys) in names.items():
        found = re.search(pattern, page(relative))
        assert found, f"{relative}: the decontamination figures are not where this test looks"
        scale = 100 if relative == "README.md" else 1
        for key, value in zip(keys, found.groups(), strict=True):
            quoted_by.setdefault(key, {})[relative] = round(float(value) / scale, 3)
    for key, pages in quoted_by.items():
        assert len(set(pages.values())) == 1, (key, pages)


def _documented(section: str, relative: str) -> dict[str, str]:
    """key -> default of the first table under the heading `## Config `[section]``."""
    text = (ROOT / relative).read_text(encoding="utf-8")
    start = text.index(f"## Config `[{section}]`")
    table = re.search(r"\n(\|.*\|\n)+", text[start:]).group(0)
    out: dict[str, str] = {}
    for row in table.strip().splitlines()[2:]:
        keys, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`([a-z_]+)`", keys)
        values = [v.strip() for v in default.split(", ")] if len(names) > 1 else [default]
        if len(values) == 1:
            values *= len(names)
        out.update(zip(names, values, strict=True))
    return out


def _value(text: str):
    text = text.strip("`")
    if text == "none":
        return None
    return ast.literal_eval(
        text.replace(",", "")
        if re.fullmatch(r"[\d,.]+", text)
        else text.replace("false", "False").replace("true", "True")
    )


def test_every_fetch_key_is_documented_with_its_default_and_no_other():
    documented = _documented("fetch", "docs/stages/fetch.md")
    fields = FetchConfig.model_fields
    assert set(documented) == set(fields)
    for key, text in documented.items():
        default = fields[key].get_default(call_default_factory=True)
        assert _value(text) == default, (key, text, default)
    assert "tasks_in_flight" in RayConfig.model_fields  # the [ray] keys live in their own table


def test_the_client_page_quotes_the_clients_size_limit():
    assert quoted("docs/stages/fetch-http.md", rf"\| `max_bytes` \| {N} ") == (FetchPolicy().max_bytes,)
    assert quoted("docs/stages/fetch-images.md", r"\| `max_bytes` \| `(\d+)` \|") == (
        FetchConfig().max_bytes,
    )


# -- the demo --------------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _entity_strings_dropped(workdir: Path) -> int:
    """Entity queries (a name or alias as it is) dropped as ambiguous; attribute queries are longer."""
    entities = {e["id"]: e for e in _rows(workdir / "entities.parquet")}
    n = 0
    for r in _rows(workdir / "rejects/queries.parquet"):
        if r["reason"] != "ambiguous":
            continue
        text = ast.literal_eval(
            re.match(r"""^('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") \(""", r["detail"]).group(1)
        )
        entity = entities[r["item"]]
        n += text.lower() in {entity["name"].lower(), *(a.lower() for a in entity["aliases"])}
    return n


def test_the_demo_figures_of_the_queries_page(demo_run):
    queries = _rows(demo_run / "queries.parquet")
    rejects = _rows(demo_run / "rejects/queries.parquet")
    stats = json.loads((demo_run / "manifest.json").read_text())["stages"]
    entity = [q for q in queries if q["kind"] == "entity"]
    actual = (
        stats["entities"]["stats"]["selected"],
        stats["attributes"]["stats"]["entities"],
        len(queries),
        len(entity),
        len({q["entity_id"] for q in entity}),
        sum(q["decision"] == "qualified" for q in entity),
        _entity_strings_dropped(demo_run),
        sum(r["reason"] == "homonym" for r in rejects),
        sum(q["kind"] == "entity_attribute" for q in queries),
        sum(q["kind"] == "type_attribute" for q in queries),
        len({q["entity_id"] for q in queries if q["entity_id"]}),
    )
    assert actual == quoted(
        "docs/stages/queries.md",
        rf"The demo queries all {N} entities with all their lemmas, plus the KG attributes of the {N} most "
        rf"popular: {N} queries — {N} entity \(for {N} entities; {N} of them qualified, {N} entity strings "
        rf"dropped as ambiguous, {N} claims on shared names went elsewhere\), {N} entity-attribute and {N} "
        rf"type-attribute \({N} entities have a query of some kind\)",
    )
    kinds = {q["query_id"]: q["kind"] for q in queries}
    hits = _rows(demo_run / "hits.parquet")
    assert {kinds[h["query_id"]] for h in hits} == {"entity"}
    assert quoted("docs/stages/queries.md", rf"all {N} hits are entity queries'") == (len(hits),)
    example = re.search(
        r"\{'query_id': '(\w+)', 'kind': 'entity', 'text': 'koala', 'entity_id': '([\w:]+)'",
        page("docs/stages/queries.md"),
    )
    koala = next(q for q in entity if q["text"] == "koala")
    assert example and example.groups() == (koala["query_id"], koala["entity_id"])


def test_the_demo_figures_of_the_search_and_curate_pages(demo_run):
    with sqlite3.connect(demo_run / "corpus.sqlite") as db:
        indexed = db.execute("SELECT count(*) FROM items").fetchone()[0]
        vector = db.execute("SELECT count(*) FROM skipped WHERE reason = 'vector_image'").fetchone()[0]
    assert quoted(
        "docs/stages/search.md", rf"The Tux Paint index holds {N} PNG stamps \({N} SVG drawings skipped"
    ) == (indexed, vector)

    queries = {q["query_id"]: q for q in _rows(demo_run / "queries.parquet")}
    hits = _rows(demo_run / "hits.parquet")
    samples = _rows(demo_run / "samples.parquet")
    rejected = _rows(demo_run / "rejected.parquet")
    too_small = sum(r["reason"] == "too_small" for r in rejected)
    assert {queries[h["query_id"]]["kind"] for h in hits} == {"entity"}
    assert quoted(
        "docs/stages/search.md",
        rf"the demo's {N} queries find {N} hits for {N} queries, all of them entity queries, on {N} distinct "
        rf"pictures; {N} of them become samples \({N} are `too_small`\) with {N} \(picture, entity\) "
        rf"links to {N} entities",
    ) == (
        len(queries),
        len(hits),
        len({h["query_id"] for h in hits}),
        len({h["url"] for h in hits}),
        len(samples),
        too_small,
        sum(len(set(s["entity_ids"])) for s in samples),
        len({e for s in samples for e in s["entity_ids"]}),
    )
    shards = sorted((demo_run / "shards").glob("*.tar"))
    per_shard = json.loads((demo_run / "shards" / "sizes.json").read_text())
    assert quoted(
        "docs/stages/curate.md",
        rf"{N} samples for {N} entities in {N} shards of up to {N}; {N} images rejected as `too_small`",
    ) == (
        len(samples),
        len({e for s in samples for e in s["entity_ids"]}),
        len(shards),
        max(per_shard.values()),
        too_small,
    )
