"""The Wikidata dump source against the fixture's independent oracle (tests/fixtures/wikidata)."""

import gzip
import shutil

import pyarrow.parquet as pq
import pytest

from kgclip.config import load, parse
from kgclip.kg import entities as entities_stage
from kgclip.kg.wikidata import dump as dump_module
from kgclip.kg.wikidata.dump import DumpError, blocks, scan, scan_block
from kgclip.kg.wikidata.item import parse_line
from kgclip.kg.wikidata.select import select, to_entities
from kgclip.pipeline import StageContext
from kgclip.tables import Entity, EntityLink, Rejected, read_records
from kgclip.workdir import Workdir
from wikidata_fixture import ANIMAL, EXPECTED, PLANT, ROOTS_TOML, expected_qids, write_dump


@pytest.fixture(scope="module")
def dump_gz(tmp_path_factory):
    return write_dump(tmp_path_factory.mktemp("dump"), ".gz")


@pytest.fixture(scope="module")
def scanned(dump_gz):
    return {image: scan(dump_gz, require_image=image, workers=1) for image in (True, False)}


@pytest.mark.parametrize("require_image", [True, False])
@pytest.mark.parametrize(("name", "rule"), [("animal", ANIMAL), ("plant", PLANT)])
def test_selection_equals_the_oracle(scanned, name, rule, require_image):
    result = scanned[require_image]
    chosen, _ = select(result.candidates, result.graph, [rule], cap=None)
    assert {c.item.qid for c in chosen} == expected_qids(name, require_image)


@pytest.mark.parametrize(("name", "rule"), [("animal", ANIMAL), ("plant", PLANT)])
def test_every_exclusion_is_recorded_with_its_reason(scanned, name, rule):
    result = scanned[True]
    _, rejects = select(result.candidates, result.graph, [rule], cap=None)
    got = {r.item.removeprefix("wd:"): f"{r.reason}:{r.detail}" for r in rejects}
    want = {
        qid: reason.replace("has_coordinates:", "excluded_property:")
        for qid, reason in EXPECTED[name]["excluded"].items()
        if reason.startswith(("excluded_class:", "has_coordinates:"))
    }
    assert want and got == want


def test_both_roots_together_first_root_owns(scanned):
    result = scanned[True]
    chosen, _ = select(result.candidates, result.graph, [ANIMAL, PLANT], cap=None)
    by_root = {}
    for c in chosen:
        by_root.setdefault(c.root.name, set()).add(c.item.qid)
    assert by_root["animal"] == expected_qids("animal", True)
    assert by_root["plant"] == expected_qids("plant", True) - expected_qids("animal", True)


def test_popularity_cap_keeps_the_most_linked_and_records_the_rest(scanned):
    result = scanned[True]
    chosen, rejects = select(result.candidates, result.graph, [ANIMAL], cap=10)
    kept = sorted((c.item for c in chosen), key=lambda i: -i.sitelinks)
    assert len(kept) == 10
    capped = [r for r in rejects if r.reason == "popularity_cap"]
    assert len(capped) == len(expected_qids("animal", True)) - 10
    assert min(i.sitelinks for i in kept) >= max(
        i.sitelinks for i in result.candidates if f"wd:Q{i.qid}" in {r.item for r in capped}
    )


def test_lion_row(scanned):
    result = scanned[True]
    chosen, _ = select(result.candidates, result.graph, [ANIMAL], cap=None)
    lion = next(e for e in to_entities(chosen) if e.id == "wd:Q140")
    assert (lion.name, lion.taxon_name, lion.common_names) == ("lion", "Panthera leo", ["lion"])
    assert lion.parents[0] == "wd:Q127960"  # Panthera, the parent taxon
    assert lion.popularity == EXPECTED["animal"]["rows"]["Q140"]["sitelinks"]
    assert lion.image == "Lion waiting in Namibia.jpg"
    assert lion.external_ids == {
        "inaturalist": "41964",
        "gbif": "5219404",
        "commons_category": "Panthera leo",
        "wordnet31": "02131817-n",
    }
    assert lion.root == "wd:Q729" and lion.sources == ["wikidata"] and lion.is_leaf
    assert lion.kg_hints == {}  # labels of hint values come from the source's second look-up


def test_hint_values_get_their_labels_from_a_second_pass(tmp_path, dump_gz):
    cfg = parse(
        {
            "name": "x",
            "search": {"corpus": {"source": "/x"}},
            "entities": {
                "wikidata": {
                    "dump": str(dump_gz),
                    "workers": 1,
                    "roots": [{"qid": "Q756", "name": "plant"}, {"qid": "Q729", "name": "animal"}],
                }
            },
        }
    ).entities.wikidata
    from kgclip.kg.wikidata.source import wikidata_entities

    result = wikidata_entities(cfg, tmp_path)
    rows = {e.id: e for e in result.entities}
    assert rows["wd:Q140"].kg_hints == {"P462": ["brown"]}
    assert rows["wd:Q171497"].kg_hints == {"P462": ["brown", "yellow"]}
    assert result.stats["hint_values_labelled"] == 2


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2", ".zst"])
def test_every_compression_gives_the_same_candidates(tmp_path, scanned, suffix):
    result = scan(write_dump(tmp_path, suffix), require_image=True, workers=1)
    assert [i.qid for i in result.candidates] == [i.qid for i in scanned[True].candidates]
    assert result.lines == 294  # 292 entities plus the [ and ] lines


def test_python_decompression_when_no_tool_is_installed(tmp_path, scanned, monkeypatch):
    monkeypatch.setattr(dump_module.shutil, "which", lambda name: None)
    path = write_dump(tmp_path, ".gz")
    assert dump_module.decompressor(path) == []
    assert len(scan(path, require_image=True, workers=1).candidates) == len(scanned[True].candidates)
    with pytest.raises(DumpError, match="install one of zstd"):
        dump_module.decompressor(write_dump(tmp_path, ".zst"))


def test_a_process_pool_gives_the_same_result(dump_gz, scanned):
    pooled = scan(dump_gz, require_image=True, workers=2)
    assert [i.qid for i in pooled.candidates] == [i.qid for i in scanned[True].candidates]


def test_blocks_never_split_a_line(dump_gz):
    with gzip.open(dump_gz) as fh:
        data = fh.read()
    import io

    parts = list(blocks(io.BytesIO(data), size=4096))
    assert b"".join(parts) == data
    assert all(p.endswith(b"\n") for p in parts)
    small = [c for p in parts for c in scan_block(p, True).candidates]
    assert len(small) == len(scan_block(data, True).candidates)


def test_truthy_rules():
    line = (
        b'{"type":"item","id":"Q1","labels":{"en":{"language":"en","value":"x"}},"claims":{"P171":['
        b'{"mainsnak":{"snaktype":"value","property":"P171","datavalue":{"value":{"id":"Q2"}}},"rank":"normal"},'
        b'{"mainsnak":{"snaktype":"value","property":"P171","datavalue":{"value":{"id":"Q3"}}},"rank":"preferred"},'
        b'{"mainsnak":{"snaktype":"value","property":"P171","datavalue":{"value":{"id":"Q4"}}},"rank":"deprecated"}'
        b'],"P279":[{"mainsnak":{"snaktype":"novalue","property":"P279"},"rank":"normal"}]},"sitelinks":{}},'
    )
    item = parse_line(line)
    assert item.values("P171") == (3,)
    assert item.values("P279") == () and "P279" not in item.present
    assert parse_line(b"[") is None and parse_line(b'{"type":"property","id":"P31"}') is None


def test_unknown_values_take_part_in_ranking_and_count_as_present():
    """As Wikibase ranks: a preferred unknown value hides the normal values; it still makes a
    `wdt:` triple, so `?ent wdt:P625 ?x` (the coordinates exclusion) matches it."""
    line = (
        b'{"type":"item","id":"Q1","claims":{"P171":['
        b'{"mainsnak":{"snaktype":"value","property":"P171","datavalue":{"value":{"id":"Q2"}}},"rank":"normal"},'
        b'{"mainsnak":{"snaktype":"somevalue","property":"P171"},"rank":"preferred"}],'
        b'"P625":[{"mainsnak":{"snaktype":"somevalue","property":"P625"},"rank":"normal"}]}}'
    )
    item = parse_line(line)
    assert item.values("P171") == ()
    assert {"P171", "P625"} <= item.present


def test_missing_and_corrupt_dumps_are_clear_errors(tmp_path):
    with pytest.raises(DumpError, match="no such dump"):
        scan(tmp_path / "none.json.gz", True, 1)
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(b"[\n{}\n]\n")[:-12])
    if shutil.which("gzip") or shutil.which("pigz"):
        with pytest.raises(DumpError, match=r"(gzip|pigz) failed"):  # pigz when installed
            scan(bad, True, 1)


def test_entities_stage_reads_the_dump(tmp_path, dump_gz):
    config = tmp_path / "wd.toml"
    config.write_text(
        'extends = "demo"\nname = "wd"\n[entities.wikidata]\nsource = "dump"\n'
        f'dump = "{dump_gz}"\nworkers = 1\ncap_per_root = 0\n{ROOTS_TOML}'
    )
    ctx = StageContext(load(config), Workdir(tmp_path / "work"))
    result = entities_stage.run(ctx)
    rows = list(read_records(ctx.path("entities.parquet"), Entity))
    want = expected_qids("animal", True) | expected_qids("plant", True)
    assert {f"Q{q}" for q in want} == {e.wikidata for e in rows if e.wikidata}
    links = {k.wikidata_id: k for k in read_records(ctx.path("entity_links.parquet"), EntityLink)}
    assert set(links) == {f"wd:Q{q}" for q in want}  # a verdict for every item
    lion = next(e for e in rows if e.wikidata == "Q140")
    assert lion.id == "wn:n02129165" and lion.sources == ["wordnet", "wikidata"]
    assert links["wd:Q140"].status == "linked" and links["wd:Q140"].method == "taxon"
    linked = sum(k.status == "linked" for k in links.values())
    assert linked == result.stats["merge"]["linked"] > 50
    assert result.stats["wikidata"]["roots"] == {
        "animal": len(expected_qids("animal", True)),
        "plant": len(want - expected_qids("animal", True)),
    }
    assert result.stats["wordnet"]["selected"] == 8_861  # the demo's WordNet entities stay beside them
    rejects = {r.item: r.reason for r in read_records(ctx.path("rejects/entities.parquet"), Rejected)}
    assert rejects["wd:Q42"] == "excluded_class" and rejects["wd:Q900000001"] == "excluded_property"
    assert pq.read_table(ctx.path("entities.parquet")).num_rows == 8_861 + len(want) - linked
    assert not any(
        p.startswith("wd:") and p.removeprefix("wd:") in {e.wikidata for e in rows if e.id.startswith("wn:")}
        for e in rows
        for p in e.parents
    ), "parents must point at merged rows by their new id"


def test_a_dump_is_scanned_once_per_settings(tmp_path, dump_gz, monkeypatch):
    from kgclip.kg.wikidata import source

    cfg = parse(
        {
            "name": "x",
            "search": {"corpus": {"source": "/x"}},
            "entities": {
                "wikidata": {"dump": str(dump_gz), "workers": 1, "roots": [{"qid": "Q729", "name": "animal"}]}
            },
        }
    ).entities.wikidata
    first = source.wikidata_entities(cfg, tmp_path)
    monkeypatch.setattr(source, "scan", lambda *a, **k: pytest.fail("the dump was read again"))
    again = source.wikidata_entities(cfg, tmp_path)
    assert again.stats["from_cache"] and again.entities == first.entities and again.rejects == first.rejects
    assert not list(tmp_path.glob("tmp*")), "the candidate spill file is gone"


def test_config_requires_a_dump_path_or_contact():
    base = {"name": "x", "search": {"corpus": {"source": "/x"}}}
    roots = [{"qid": "Q729", "name": "animal"}]
    with pytest.raises(ValueError, match="needs `dump`"):
        parse({**base, "entities": {"wikidata": {"roots": roots}}})
    with pytest.raises(ValueError, match="needs `contact`"):
        parse({**base, "entities": {"wikidata": {"source": "sparql", "roots": roots}}})
    with pytest.raises(ValueError, match="'Q12x' is not a QID"):
        parse(
            {
                **base,
                "entities": {
                    "wikidata": {
                        "dump": "/d",
                        "roots": [{"qid": "Q729", "name": "a", "exclude_classes": ["Q12x"]}],
                    }
                },
            }
        )
    with pytest.raises(ValueError, match=r"entities\.wikidata\.roots\.0\.qid"):
        parse({**base, "entities": {"wikidata": {"dump": "/d", "roots": [{"qid": "729", "name": "a"}]}}})


def test_a_failed_scan_closes_its_spill_files(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(b"[\n{}\n]\n")[:-12])
    closed = []
    real_close = dump_module.Spill.close

    def close(self):
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(dump_module.Spill, "close", close)
    monkeypatch.setattr(dump_module.shutil, "which", lambda name: None)  # Python's gzip: EOFError
    with pytest.raises(EOFError):
        scan(bad, True, 1, state_dir=tmp_path / "state")
    assert len(closed) == 2  # the candidates and the edges log
