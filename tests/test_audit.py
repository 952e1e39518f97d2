"""`kgclip audit`: drawing (picture, entity) links for a person to mark, and scoring the marks."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tarfile
from collections import Counter
from pathlib import Path

import orjson
import pytest
from PIL import Image
from typer.testing import CliRunner

from kgclip.audit import (
    AuditError,
    choose,
    draw,
    link_id,
    link_ids,
    links,
    read_csv,
    score,
    wilson,
    write_csv,
)
from kgclip.cli import app
from kgclip.curate.shards import write_shard
from kgclip.tables import Entity, Query, QueryParams, Sample, write_records

DATA = Path(__file__).parent / "data" / "audit"
HAND_AUDIT = DATA / "demo-before-seed1.csv"
FRESH_AUDIT = DATA / "demo-after-seed2.csv"  # drawn from the second rules' harvest, --exclude HAND_AUDIT
LAST_AUDIT = DATA / "demo-after-seed3.csv"  # the final rules' demo links neither audit had seen
OPENCLIPART_AUDIT = DATA / "openclipart-seed3.csv"  # every link of two harvests of unseen pictures
OPENCLIPART_NEW = DATA / "openclipart-after-seed4.csv"  # the links the fourth rules added there
GCOMPRIS_AUDIT = DATA / "gcompris-names-seed5.csv"  # pictures nobody had seen, the final rules frozen
DOCS = Path(__file__).parents[1] / "docs" / "audit.md"

# sample key -> its entities: one picture has three, the others one
HARVEST = {
    "000000000": ["wn:koala", "wn:marsupial", "wn:mammal"],
    "000000001": ["wn:apple"],
    "000000002": ["wn:chess"],
    "000000003": ["wn:lion"],
}


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _sha(key: str) -> str:
    return hashlib.sha256(f"pixels of {key}".encode()).hexdigest()


def _harvest(workdir: Path, harvest: dict[str, list[str]] = HARVEST, evidence: bool = False) -> Path:
    """A curated work directory: samples.parquet, entities, queries and one shard."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = {e for ids in harvest.values() for e in ids}
    entities = [Entity(e, e[3:], [], f"gloss of {e[3:]}", "wn:root", [], True) for e in sorted(names)]
    queries = [Query(f"q-{e}", "entity", e[3:], e, None, QueryParams()) for e in sorted(names)]
    queries.append(Query("q-attr", "entity_attribute", "red apple", "wn:apple", "red", QueryParams()))
    samples, members = [], []
    for i, (key, ids) in enumerate(sorted(harvest.items())):
        qids = [f"q-{e}" for e in ids] + (["q-attr"] if "wn:apple" in ids else [])
        samples.append(
            Sample(
                key, "shard-00000.tar", _sha(key), 8, 8, 8, 8, [f"file:///{key}.png"], [], [], qids, ids,
                "CC0-1.0", None, f"caption {key}",
            )
        )
        meta: dict = {"key": key}
        if evidence:
            meta["evidence"] = [
                {"query_id": q, "entity_id": e, "field": "caption", "words": [e[3:]], "subject": i % 2 == 0}
                for q, e in zip(qids, ids, strict=False)
            ]
        members.append((key, _jpeg((40 * i, 100, 200)), f"caption {key}", meta))
    write_records(workdir / "samples.parquet", samples, Sample)
    write_records(workdir / "entities.parquet", entities, Entity)
    write_records(workdir / "queries.parquet", queries, Query)
    (workdir / "shards").mkdir(exist_ok=True)
    write_shard(workdir / "shards" / "shard-00000.tar", members)
    return workdir


def _cli(*args: str):
    return CliRunner().invoke(app, ["audit", *args], catch_exceptions=False)


def test_link_id_is_the_pixel_hash_and_entity_not_the_key():
    assert link_id("ab" * 32, "wn:n1") == hashlib.sha256(f"{'ab' * 32}|wn:n1".encode()).hexdigest()[:16]


def test_draw_writes_every_column_and_extracts_each_picture(tmp_path):
    work = _harvest(tmp_path / "work")
    out = tmp_path / "audit.csv"
    written, population = draw(work, 10, 1, out)
    assert (written, population) == (6, 6)  # every entity of every sample is a link
    rows = read_csv(out)
    assert list(rows[0]) == [
        "link_id", "key", "image", "pixel_sha256", "entity_id", "entity_name", "gloss", "caption",
        "query_texts", "query_kinds", "evidence", "mark", "note",
    ]  # fmt: skip
    assert {(r["key"], r["entity_id"]) for r in rows} == {(k, e) for k, ids in HARVEST.items() for e in ids}
    with tarfile.open(work / "shards" / "shard-00000.tar") as tar:
        for r in rows:
            picture = out.parent / r["image"]
            assert r["image"].startswith("audit_images/")
            assert picture.read_bytes() == tar.extractfile(f"{r['key']}.jpg").read()
            assert r["link_id"] == link_id(r["pixel_sha256"], r["entity_id"])
    apple = next(r for r in rows if r["entity_id"] == "wn:apple")
    assert (apple["entity_name"], apple["gloss"]) == ("apple", "gloss of apple")
    assert (apple["query_texts"], apple["query_kinds"]) == ("apple; red apple", "entity; entity_attribute")
    assert apple["caption"] == "caption 000000001" and apple["evidence"] == "" and apple["mark"] == ""
    koala = next(r for r in rows if r["entity_id"] == "wn:koala")
    assert koala["query_texts"] == "koala"  # only the queries that found this entity


def test_draw_keeps_the_link_evidence_of_the_sample_json(tmp_path):
    work = _harvest(tmp_path / "work", evidence=True)
    draw(work, 10, 1, tmp_path / "audit.csv")
    rows = {r["entity_id"]: r for r in read_csv(tmp_path / "audit.csv")}
    marsupial = orjson.loads(rows["wn:marsupial"]["evidence"])
    assert marsupial == [
        {"query_id": "q-wn:marsupial", "entity_id": "wn:marsupial", "field": "caption",
         "words": ["marsupial"], "subject": True}
    ]  # fmt: skip


def test_draw_is_seeded(tmp_path):
    work = _harvest(tmp_path / "work")
    ids = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        draw(work, 3, seed, tmp_path / f"{name}.csv")
        ids.append([r["link_id"] for r in read_csv(tmp_path / f"{name}.csv")])
    assert ids[0] == ids[1]
    assert ids[0] != ids[2]


def test_each_link_is_equally_likely_not_each_picture():
    """Drawn by picture, each of the koala picture's three links would come a third as often."""
    samples = [
        Sample(k, "s.tar", _sha(k), 1, 1, 1, 1, [], [], [], [], ids, None, None, "")
        for k, ids in HARVEST.items()
    ]
    population = links(samples)
    draws = 6000
    counts = Counter(choose(population, 1, seed)[0].id for seed in range(draws))
    assert set(counts) == {link.id for link in population}
    for link in population:  # 1000 expected each; sd ~ 29
        assert abs(counts[link.id] - draws / len(population)) < 130, (link.entity_id, counts[link.id])


def test_refuses_to_overwrite_marks(tmp_path):
    work = _harvest(tmp_path / "work")
    out = tmp_path / "audit.csv"
    draw(work, 3, 1, out)
    draw(work, 3, 2, out)  # nothing marked yet: a new draw may replace it
    rows = read_csv(out)
    rows[1]["mark"] = "wrong"
    write_csv(out, rows)
    before = out.read_bytes()
    with pytest.raises(AuditError, match="already has marks"):
        draw(work, 3, 1, out)
    result = _cli(str(work), "--sample", "3", "-o", str(out))
    assert result.exit_code == 2
    assert out.read_bytes() == before


def test_exclude_draws_links_not_audited_yet(tmp_path):
    work = _harvest(tmp_path / "work")
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    draw(work, 4, 1, first)
    written, population = draw(work, 4, 1, second, exclude=[first])
    assert (written, population) == (2, 2)
    a = {r["link_id"] for r in read_csv(first)}
    b = {r["link_id"] for r in read_csv(second)}
    assert not a & b and len(a | b) == 6


def _marked(path: Path, marks: list[tuple[str, str, str]]) -> Path:
    """An audit CSV of (link_id, query_kinds, mark) rows."""
    rows = [
        {"link_id": i, "query_kinds": kinds, "mark": mark, "evidence": "", "note": ""}
        for i, kinds, mark in marks
    ]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["link_id", "query_kinds", "evidence", "mark", "note"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_wilson_interval_worked_by_hand():
    # 8 of 10, z = 1.959964: centre = (0.8 + z²/20) / (1 + z²/10) = 0.99207 / 1.38415 = 0.71674;
    # half = z / 1.38415 · sqrt(0.8·0.2/10 + z²/400) = 1.41601 · 0.16001 = 0.22658
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(0, 10)[0] == pytest.approx(0.0)
    assert wilson(0, 0) == (0.0, 1.0)


def test_score_per_query_kind_and_evidence(tmp_path):
    marks = [(f"c{i}", "entity", "correct") for i in range(7)]
    marks += [("w1", "entity", "wrong"), ("w2", "entity; entity_attribute", "wrong")]
    marks += [("a1", "entity_attribute", "correct"), ("u1", "entity", "")]
    audit = _marked(tmp_path / "a.csv", marks)
    result = score(audit, {m[0] for m in marks}).as_dict()
    assert (result["rows"], result["unmarked"]) == (11, 1)
    assert result["overall"]["correct"] == 8 and result["overall"]["wrong"] == 2
    assert result["overall"]["precision"] == pytest.approx(0.8)
    assert result["overall"]["ci95"] == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert result["by_query_kind"]["entity"] == {
        "correct": 7, "wrong": 2, "precision": pytest.approx(7 / 9), "ci95": pytest.approx(wilson(7, 9))
    }  # fmt: skip
    kind = result["by_query_kind"]["entity_attribute"]
    assert (kind["correct"], kind["wrong"]) == (1, 1)  # a link counts under each kind that found it
    assert list(result["by_evidence_kind"]) == ["none"]


def test_score_counts_the_links_that_are_gone(tmp_path):
    work = _harvest(tmp_path / "work")
    audit = tmp_path / "audit.csv"
    draw(work, 10, 1, audit)
    rows = read_csv(audit)
    wrong = {"wn:chess", "wn:marsupial"}
    for r in rows:
        r["mark"] = "wrong" if r["entity_id"] in wrong else "correct"
        r["note"] = "not the entity" if r["entity_id"] in wrong else ""
    write_csv(audit, rows)
    # the next harvest drops the chess picture and the koala picture's mammal link (a correct one)
    after = {k: [e for e in ids if e != "wn:mammal"] for k, ids in HARVEST.items() if k != "000000002"}
    later = _harvest(tmp_path / "later", after)
    before, now = score(audit, link_ids(work)).as_dict(), score(audit, link_ids(later)).as_dict()
    assert before["still_present"] == before["overall"] and before["correct_links_lost"] == 0
    assert (now["still_present"]["correct"], now["still_present"]["wrong"]) == (3, 1)
    assert (now["correct_links_lost"], now["wrong_links_removed"]) == (1, 1)
    assert now["overall"] == before["overall"]  # the audited set itself is unchanged


def test_score_refuses_an_unknown_mark(tmp_path):
    audit = _marked(tmp_path / "a.csv", [("x", "entity", "maybe")])
    with pytest.raises(AuditError, match="maybe"):
        score(audit, set())


def test_cli_scores_and_writes_json(tmp_path):
    work = _harvest(tmp_path / "work")
    audit = tmp_path / "audit.csv"
    assert _cli(str(work), "--sample", "4", "--seed", "7", "-o", str(audit)).exit_code == 0
    rows = read_csv(audit)
    for r in rows:
        r["mark"] = "correct"
    write_csv(audit, rows)
    result = _cli(str(work), "--score", str(audit), "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0
    assert "precision 100.0% (4/4" in result.output
    assert orjson.loads((tmp_path / "s.json").read_bytes())["overall"]["correct"] == 4
    assert _cli(str(work)).exit_code == 2  # neither --sample nor --score


# --- the hand audit of the demo (docs/audit.md) -----------------------------------------------


@pytest.mark.parametrize(
    ("audit", "least"),
    [
        (HAND_AUDIT, 300),
        (FRESH_AUDIT, 100),
        (LAST_AUDIT, 5),
        (OPENCLIPART_AUDIT, 150),
        (OPENCLIPART_NEW, 5),
        (GCOMPRIS_AUDIT, 100),
    ],
    ids=["before", "fresh", "last", "openclipart", "openclipart-new", "gcompris"],
)
def test_hand_audit_is_complete(audit: Path, least: int):
    rows = read_csv(audit)
    assert len(rows) >= least
    assert len({r["link_id"] for r in rows}) == len(rows)
    assert {r["mark"] for r in rows} <= {"correct", "wrong"}  # every row marked
    assert all(r["note"].strip() for r in rows if r["mark"] == "wrong")
    assert all(r["link_id"] == link_id(r["pixel_sha256"], r["entity_id"]) for r in rows)
    for r in rows:
        assert r["image"].startswith("images/"), r["image"]  # one folder for both audits, relative
        assert (audit.parent / r["image"]).is_file(), r["image"]


def test_fresh_audits_have_no_link_of_the_earlier_ones():
    """Each later figure is on links nobody had looked at before."""
    seen: set[str] = set()
    for audit in (HAND_AUDIT, FRESH_AUDIT, LAST_AUDIT, OPENCLIPART_AUDIT, OPENCLIPART_NEW, GCOMPRIS_AUDIT):
        ids = {r["link_id"] for r in read_csv(audit)}
        assert not ids & seen, audit.name
        seen |= ids


@pytest.mark.parametrize(
    ("audit", "label"),
    [
        (HAND_AUDIT, "precision before"),
        (FRESH_AUDIT, "precision on the fresh sample"),
        (LAST_AUDIT, "precision on the last demo links"),
        (OPENCLIPART_AUDIT, "precision on the openclipart links"),
        (GCOMPRIS_AUDIT, "precision on the GCompris links"),
    ],
    ids=["before", "fresh", "last", "openclipart", "gcompris"],
)
def test_hand_audit_scores_as_docs_state(audit: Path, label: str):
    rows = read_csv(audit)
    result = score(audit, {r["link_id"] for r in rows}).as_dict()["overall"]
    stated = re.search(rf"{label}: \*\*(\d+) of (\d+) links correct, ([\d.]+)%", DOCS.read_text())
    assert stated, f"docs/audit.md states the {label}"
    correct, total, percent = int(stated[1]), int(stated[2]), float(stated[3])
    assert (result["correct"], result["correct"] + result["wrong"]) == (correct, total)
    assert round(100 * result["precision"], 1) == percent



# --- the card's "Ambiguous queries" section -----------------------------------------------------


def _card(tmp_path: Path, queries_path: Path) -> str:
    from kgclip.curate.card import ambiguity_summary, write_card

    summary = ambiguity_summary(queries_path, tmp_path / "rejects" / "queries.parquet")
    write_card(tmp_path / "card", "t", [], [], {}, {}, {}, {}, Counter(), summary)
    return (tmp_path / "card" / "README.md").read_text()


def test_card_says_when_the_harvest_recorded_no_ambiguity(tmp_path):
    import pyarrow.parquet as pq

    from kgclip.tables import to_table

    path = tmp_path / "queries.parquet"  # as a kgclip before the homonym rule wrote it
    table = to_table([Query("q1", "entity", "chess", "wn:chess", None, QueryParams())], Query)
    pq.write_table(table.drop_columns(["original_text", "ambiguity", "decision", "senses"]), path)
    card = _card(tmp_path, path)
    assert "## Ambiguous queries\n\nNot recorded: this harvest's `queries.parquet` has no `ambiguity`" in card


def test_card_counts_ambiguous_queries_by_decision_with_examples(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kgclip.tables import Rejected

    rows = [
        ("hobby falcon", "hobby", "out_of_domain", "qualified", ["wn:n00431125 hobby: a pastime"]),
        ("chess grass", "chess", "out_of_domain", "qualified", ["wn:n00502415 chess: a board game"]),
        ("koala", None, "none", "unambiguous", []),
        ("lion", None, "none", "unambiguous", []),
        ("drum", None, "both", "kept", ["wn:n03249569 drum: a percussion instrument"]),
    ]
    schema = Query.SCHEMA
    table = pa.Table.from_pylist(
        [
            {"query_id": f"q{i}", "kind": "entity", "text": t, "entity_id": "wn:x", "attribute": None,
             "params": {"or_terms": [], "exclude_terms": [], "photo_only": False},
             "original_text": o, "ambiguity": a, "decision": d, "senses": s}
            for i, (t, o, a, d, s) in enumerate(rows)
        ],
        schema=schema,
    )  # fmt: skip
    pq.write_table(table, tmp_path / "queries.parquet")
    (tmp_path / "rejects").mkdir()
    write_records(
        tmp_path / "rejects" / "queries.parquet",
        [
            Rejected("queries", "wn:giant", "ambiguous", "'giant' also names: a very large person"),
            Rejected("queries", "wn:box", "homonym", "'box' goes to box.n.01"),
        ],
        Rejected,
    )
    card = _card(tmp_path, tmp_path / "queries.parquet")
    assert "3 of 5 kept queries name something else too; 1 were dropped for it (ambiguous 1)" in card
    assert "| entity | out_of_domain | qualified | 2 |" in card
    assert "| entity | none | unambiguous | 2 |" in card and "| entity | both | kept | 1 |" in card
    assert "- 'chess' → 'chess grass' (also: wn:n00502415 chess: a board game)" in card
    assert "- ambiguous: 'giant' also names: a very large person" in card
    assert "box.n.01" not in card  # an in-domain homonym that went to the first synset is not counted here
