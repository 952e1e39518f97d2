"""The caption sampler (method.md §7): its tables, the kind shares it draws, determinism, the
text-source switches, plain shards, the shard JSON it needs, and `kgclip captions`. No torch."""

import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from kgclip.cli import _run, app
from kgclip.config import CaptionsConfig, ConfigError, load, parse
from kgclip.tables import NaturalType, Query, QueryParams
from kgclip.train.captions import (
    ATTRIBUTE_KINDS,
    DESCRIPTION_KINDS,
    Caption,
    CaptionSampler,
    caption_of,
    read_samples,
)

DRAWS = 100_000


@pytest.fixture(scope="module")
def demo_metas(demo_run, tmp_path_factory) -> list[dict]:
    """The demo's sample JSONs, harvested with folder categories matching
    (`[search.corpus] match_categories`): only then do its attribute queries ("aquatic animal",
    whose words are the folder `animals/mammals/aquatic`) find pictures, and every caption kind
    occurs."""
    work = tmp_path_factory.mktemp("categories") / "work"
    shutil.copytree(demo_run, work)
    config = load("demo")
    corpus = config.search.corpus.model_copy(update={"match_categories": True})
    _run(config.model_copy(update={"search": config.search.model_copy(update={"corpus": corpus})}), work)
    shards = sorted((work / "shards").glob("*.tar"))
    return [orjson.loads(files["json"]) for _, files in read_samples(shards)]


def chi2_sf(x: float, k: int) -> float:
    """P(X > x) for X ~ chi-square with k degrees of freedom: the regularised upper incomplete gamma
    Q(k/2, x/2), by its series below a + 1 and Lentz's continued fraction above (Numerical Recipes)."""
    a, z = k / 2, x / 2
    if z <= 0:
        return 1.0
    front = math.exp(-z + a * math.log(z) - math.lgamma(a))
    if z < a + 1:
        term = total = 1 / a
        n = a
        while abs(term) > abs(total) * 1e-15:
            n += 1
            term *= z / n
            total += term
        return 1 - total * front
    tiny = 1e-300
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    f = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        f *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return f * front


def test_chi2_sf_matches_tabulated_values():
    assert chi2_sf(2.0, 2) == pytest.approx(math.exp(-1), rel=1e-12)  # k = 2: exactly exp(-x/2)
    for x, k, p in [(3.841459, 1, 0.05), (9.487729, 4, 0.05), (23.209251, 10, 0.01), (100.425184, 70, 0.01)]:
        assert chi2_sf(x, k) == pytest.approx(p, rel=1e-5)
    assert chi2_sf(0.1, 10) == pytest.approx(1.0, abs=1e-6)


def expected_shares(sampler: CaptionSampler, cfg: CaptionsConfig, meta: dict) -> Counter:
    """The method's mixture written out on its own: alt with p when the image has alt texts (1 when
    no query is left), otherwise a usable query uniformly, then its table's normalised weights."""
    alts = meta["alt_texts"] if cfg.sources != "kg" else []
    queries = [q for q in meta["queries"] if cfg.sources != "alt"]
    if not cfg.attribute_queries:
        queries = [q for q in queries if q["kind"] == "entity"]
    tables = [t for t in (sampler.table(q, meta) for q in queries) if t]
    p_alt = (cfg.alt_text_p if tables else 1.0) if alts else 0.0
    shares = Counter({"alt": p_alt})
    for table in tables:
        total = sum(r.weight for r in table)
        for r in table:
            shares[r.kind] += (1 - p_alt) / len(tables) * r.weight / total
    return shares


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"alt_text_p": 0.3, "hierarchy_chance": 0.5, "attribute": {"attribute": 1.0, "pseudo_query": 0.6}},
    ],
    ids=["defaults", "changed-weights"],
)
def test_kind_shares_over_100k_demo_draws_match_the_configured_weights(demo_metas, settings):
    cfg = CaptionsConfig(**settings)
    sampler = CaptionSampler(cfg, seed=7)
    n = len(demo_metas)
    observed: Counter = Counter()
    expected: Counter = Counter()
    for i in range(DRAWS):
        meta = demo_metas[i % n]
        observed[sampler.sample(meta, epoch=i // n).kind] += 1
    for i, meta in enumerate(demo_metas):
        draws = DRAWS // n + (i < DRAWS % n)
        shares = expected_shares(sampler, cfg, meta)
        assert sampler.kind_shares(meta) == pytest.approx({k: v for k, v in shares.items() if v})
        for kind, share in shares.items():
            expected[kind] += draws * share
    assert sum(observed.values()) == DRAWS
    assert not {k for k in observed if expected[k] == 0}, "a kind drawn that the tables never offer"
    # every kind of both tables occurs in the demo, so each weight is really tested
    assert {"alt", "query", "entity_synonym", "type_synonym", "attribute_query", "pseudo_query"} <= set(
        observed
    )
    bins = sorted(k for k in expected if expected[k] >= 5)
    small = [k for k in expected if 0 < expected[k] < 5]
    pairs = [(observed[k], expected[k]) for k in bins]
    if small:
        pairs.append((sum(observed[k] for k in small), sum(expected[k] for k in small)))
    stat = sum((o - e) ** 2 / e for o, e in pairs)
    p = chi2_sf(stat, len(pairs) - 1)
    assert p > 0.01, f"chi-square {stat:.1f} on {len(pairs) - 1} dof: p = {p:.4f}; {observed} vs {expected}"


def eagle(type_id: str = "wd:Q5113", type_name: str = "bird") -> dict:
    """A Wikidata entity whose names, descriptions and type share no string with each other."""
    return {
        "id": "wd:Q2092",
        "name": "golden eagle",
        "aliases": ["Aquila chrysaetos", "golden eagle"],
        "common_names": ["mountain eagle"],
        "taxon_name": "Aquila chrysaetos",
        "description": "a bird of prey",
        "natural_type": {
            "id": type_id,
            "name": type_name,
            "aliases": ["aves"],
            "description": "a warm-blooded egg-laying vertebrate",
        },
    }


def one_query(kind: str, text: str, attribute: str | None = None, entity: dict | None = None) -> dict:
    entity = entity or eagle()
    query = {"id": "q1", "kind": kind, "text": text, "entity_id": entity["id"], "attribute": attribute}
    return {"key": "k1", "alt_texts": [], "queries": [query], "entities": [entity]}


def kind_percent(sampler: CaptionSampler, meta: dict) -> dict[str, float]:
    return {k: round(100 * v, 1) for k, v in sampler.kind_shares(meta).items()}


@pytest.mark.parametrize(
    ("type_id", "shares"),
    [
        ("wd:Q5113", [36.4, 43.6, 10.9, 7.3, 1.8]),  # "bird": h = 0.2
        ("wd:Q729", [36.4, 49.1, 5.5, 8.2, 0.9]),  # "animal": a living type, h = 0.1
    ],
)
def test_noun_table_gives_the_methods_shares(type_id, shares):
    sampler = CaptionSampler(CaptionsConfig(), seed=0)
    meta = one_query("entity", "eagle", entity=eagle(type_id))
    kinds = ["query", "entity_synonym", "type_synonym", "entity_description", "type_description"]
    assert kind_percent(sampler, meta) == dict(zip(kinds, shares, strict=True))
    rows = {r.text: r for r in sampler.table(meta["queries"][0], meta)}
    h = 0.2 if type_id == "wd:Q5113" else 0.1
    for name in ("golden eagle", "Aquila chrysaetos", "mountain eagle"):  # split equally, repeats once
        assert rows[name].weight == pytest.approx(0.6 * (1 - h) / 3) and rows[name].entity_id == "wd:Q2092"
    assert rows["aves"].weight == pytest.approx(0.6 * h / 2) and rows["aves"].entity_id == type_id


def test_attribute_table_gives_the_methods_shares():
    sampler = CaptionSampler(CaptionsConfig(), seed=0)
    # the mention differs in case from every synonym, so no generated string equals another
    meta = one_query("entity_attribute", "talons of a Golden Eagle", "talons")
    assert kind_percent(sampler, meta) == {
        "attribute_query": 54.1,
        "attribute_synonym": 10.8,
        "pseudo_query": 10.8,
        "replaced_query": 10.8,
        "attribute": 10.8,
        "attribute_description": 2.7,
    }
    rows = {r.text: r for r in sampler.table(meta["queries"][0], meta)}
    assert rows["talons of a mountain eagle"].weight == pytest.approx(0.2 * 0.8 / 3)
    assert rows["talons of a aves"].entity_id == "wd:Q5113"
    assert rows["aves talons"].weight == pytest.approx(0.2 * 0.2 / 4)
    # no in-query replacement when the query does not name the entity: keep 1 / 1.65 = 61%
    unnamed = one_query("entity_attribute", "talons of a raptor", "talons")
    shares = kind_percent(sampler, unnamed)
    assert shares["attribute_query"] == 60.6 and "replaced_query" not in shares


def test_identical_strings_are_merged_keeping_the_highest_weight():
    sampler = CaptionSampler(CaptionsConfig(), seed=0)
    # the query "golden eagle" is also a synonym (0.48/3) and, as "{syn}", nothing else: the query's 0.4 wins
    meta = one_query("entity", "golden eagle")
    table = sampler.table(meta["queries"][0], meta)
    texts = [r.text for r in table]
    assert len(texts) == len(set(texts))
    eagle_row = next(r for r in table if r.text == "golden eagle")
    assert (eagle_row.kind, eagle_row.weight) == ("query", 0.4)
    # a lone synonym outweighs the query (0.6 * 0.8 > 0.4): the string keeps the synonym's weight and kind
    lone = {"id": "wn:n1", "name": "aquatic", "aliases": [], "description": "", "natural_type": None}
    meta = one_query("entity", "aquatic", entity=lone)
    assert [(r.text, r.kind, r.weight) for r in sampler.table(meta["queries"][0], meta)] == [
        ("aquatic", "entity_synonym", pytest.approx(0.48))
    ]
    # the attribute table: replacing the mention with itself, and "{syn} {attr}", both give the query back
    meta = one_query("entity_attribute", "golden eagle talons", "talons")
    rows = {r.text: r for r in sampler.table(meta["queries"][0], meta)}
    assert (rows["golden eagle talons"].kind, rows["golden eagle talons"].weight) == ("attribute_query", 1.0)
    assert rows["Aquila chrysaetos talons"].kind == "replaced_query"  # 0.16/3 beats the pseudo query's 0.16/6
    assert rows["Aquila chrysaetos talons"].weight == pytest.approx(0.2 * 0.8 / 3)


def draws(sampler: CaptionSampler, metas: list[dict], epochs: int = 8) -> list[Caption | None]:
    return [sampler.sample(m, e) for e in range(epochs) for m in metas]


def test_same_seed_same_captions_other_epoch_or_seed_differ(demo_metas):
    cfg = CaptionsConfig()
    first = draws(CaptionSampler(cfg, seed=3), demo_metas)
    assert first == draws(CaptionSampler(cfg, seed=3), demo_metas)
    n = len(demo_metas)
    epoch0, epoch1 = first[:n], first[n : 2 * n]
    assert sum(a != b for a, b in zip(epoch0, epoch1, strict=True)) > n // 4
    other = draws(CaptionSampler(cfg, seed=4), demo_metas)
    assert sum(a != b for a, b in zip(first, other, strict=True)) > len(first) // 4


def test_draws_do_not_depend_on_the_process_hash_seed(demo_run):
    code = (
        "import sys, orjson; from pathlib import Path;"
        "from kgclip.config import CaptionsConfig;"
        "from kgclip.train.captions import CaptionSampler, read_samples;"
        "s = CaptionSampler(CaptionsConfig(), 5);"
        f"shards = sorted(Path({str(demo_run / 'shards')!r}).glob('*.tar'));"
        "metas = [orjson.loads(f['json']) for _, f in read_samples(shards)];"
        "print([s.sample(m, e).text for e in range(3) for m in metas])"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outs[0] == outs[1] and len(outs[0]) > 1000


def support(sampler: CaptionSampler, meta: dict) -> set[tuple[str, str]]:
    """Every (text, kind) the sampler can draw for the image."""
    texts = {(a, "alt") for a in sampler.alt_texts(meta)}
    return texts | {(r.text, r.kind) for t in sampler.tables(meta) for r in t}


@pytest.mark.parametrize(
    ("settings", "removed"),
    [
        ({"sources": "alt"}, "every kind but alt"),
        ({"sources": "kg"}, {"alt"}),
        ({"attribute_queries": False}, set(ATTRIBUTE_KINDS)),
        ({"descriptions": False}, set(DESCRIPTION_KINDS)),
    ],
    ids=["alt-only", "kg-only", "no-attribute-queries", "no-descriptions"],
)
def test_each_ablation_switch_removes_exactly_its_texts(demo_metas, settings, removed):
    full = CaptionSampler(CaptionsConfig(), seed=1)
    cut = CaptionSampler(CaptionsConfig(**settings), seed=1)
    if removed == "every kind but alt":
        removed = {k for m in demo_metas for _, k in support(full, m)} - {"alt"}
    # 40 epochs: the few attribute-query images (about 15) show every kind they offer
    before = Counter(c.kind for c in draws(full, demo_metas, epochs=40))
    assert removed & set(before), "the texts the switch removes are drawn without it"
    after = draws(cut, demo_metas, epochs=40)
    assert all(c is not None for c in after), "every demo image keeps a text under each switch"
    kinds = Counter(c.kind for c in after)
    assert not removed & set(kinds)
    assert set(kinds) <= {k for m in demo_metas for _, k in support(full, m)} - removed  # rare kinds vary
    for meta in demo_metas:
        assert support(cut, meta) == {(t, k) for t, k in support(full, meta) if k not in removed}


def test_alt_only_skips_an_image_without_alt_texts_and_kg_only_never_draws_one():
    meta = one_query("entity", "eagle")
    assert CaptionSampler(CaptionsConfig(sources="alt"), 0).sample(meta, 0) is None
    meta["alt_texts"] = ["An eagle on a branch."]
    alt = CaptionSampler(CaptionsConfig(sources="alt"), 0)
    kg = CaptionSampler(CaptionsConfig(sources="kg"), 0)
    assert {alt.sample(meta, e).kind for e in range(50)} == {"alt"}
    assert "alt" not in {kg.sample(meta, e).kind for e in range(200)}


def test_captions_carry_the_entity_they_were_drawn_from():
    sampler = CaptionSampler(CaptionsConfig(), seed=0)
    meta = one_query("entity", "eagle")
    meta["alt_texts"] = ["An eagle."]
    by_kind = {c.kind: c for c in (sampler.sample(meta, e) for e in range(2000))}
    assert by_kind["alt"].entity_id is None
    assert by_kind["query"].entity_id == by_kind["entity_description"].entity_id == "wd:Q2092"
    assert by_kind["type_synonym"].entity_id == by_kind["type_description"].entity_id == "wd:Q5113"


def test_prompt_templates_take_their_share():
    cfg = CaptionsConfig(prompt_weight=1.0, prompt_templates=["a photo of a {}."], descriptions=False)
    sampler = CaptionSampler(cfg, seed=0)
    meta = one_query("entity", "eagle")
    texts = {sampler.sample(meta, e).text for e in range(300)}
    assert texts and all(t.startswith("a photo of a ") and t.endswith(".") for t in texts)
    assert CaptionSampler(CaptionsConfig(), 0).sample(meta, 0).text.startswith("a photo") is False


def test_plain_shards_fall_back_to_their_txt_caption(demo_metas):
    sampler = CaptionSampler(CaptionsConfig(), seed=0)
    img2dataset = orjson.dumps({"key": "000010003", "caption": "a dog", "url": "http://x/y.jpg"})
    assert caption_of(sampler, {"json": img2dataset, "txt": b"a dog on grass\n"}, 0) == Caption(
        "a dog on grass", "txt", None
    )
    assert caption_of(sampler, {"txt": "decoded already"}, 3) == Caption("decoded already", "txt", None)
    assert caption_of(sampler, {"json": b"not json", "txt": b"x"}, 0) == Caption("x", "txt", None)
    assert caption_of(sampler, {"jpg": b"..."}, 0) is None
    meta = demo_metas[0]
    ours = {"json": orjson.dumps(meta), "txt": b"ignored"}
    assert caption_of(sampler, ours, 2) == sampler.sample(meta, 2) != Caption("ignored", "txt", None)


def test_type_attribute_queries_carry_their_natural_type(demo_metas):
    """The shard JSON names the type a type-attribute query was made from; the sampler needs its
    synonyms and description, and an image found only by such a query names no entity."""
    found = [(q, m) for m in demo_metas for q in m["queries"] if q["kind"] == "type_attribute"]
    assert found
    for q, _ in found:
        t = q["natural_type"]
        assert t["id"].startswith("wn:n") and t["name"] in q["text"] and t["description"]
    others = [q for m in demo_metas for q in m["queries"] if q["kind"] != "type_attribute"]
    assert others and all(q["natural_type"] is None for q in others)
    sampler = CaptionSampler(CaptionsConfig(), seed=0)
    aquatic = next((q, m) for q, m in found if q["text"] == "aquatic animal")
    rows = {r.text: r for r in sampler.table(*aquatic)}
    assert {"animal", "creature", "aquatic creature", "animal aquatic", "aquatic"} <= set(rows)
    assert rows["aquatic creature"].kind == "replaced_query" and rows["creature"].entity_id == "wn:n00015388"


def test_a_shared_type_name_goes_to_the_type_more_entities_have():
    from kgclip.curate.samples import type_attribute_types as _type_attribute_types

    def nt(entity: str, type_id: str) -> NaturalType:
        return NaturalType(entity, type_id, "crane", [], f"{type_id} description", "kg")

    types = {"e1": nt("e1", "wn:bird"), "e2": nt("e2", "wn:machine"), "e3": nt("e3", "wn:machine")}
    made = [
        Query("q1", "type_attribute", "red crane", None, "red", QueryParams()),
        Query("q2", "type_attribute", "crane wing", None, "wing", QueryParams()),
        Query("q3", "entity", "crane", "e1", None, QueryParams()),
        Query("q4", "type_attribute", "tall heron", None, "tall", QueryParams()),
    ]
    got = _type_attribute_types(made, types)
    assert {q: t.type_id for q, t in got.items()} == {"q1": "wn:machine", "q2": "wn:machine"}


def test_config_defaults_are_the_methods_and_the_section_is_strict():
    cfg = parse({"name": "x", "search": {"corpus": {"source": "/x"}}}).train.captions
    assert (cfg.sources, cfg.alt_text_p, cfg.hierarchy_chance, cfg.hierarchy_chance_living) == (
        "mixed",
        0.5,
        0.2,
        0.1,
    )
    assert set(cfg.living_types) == {"wd:Q729", "wd:Q756", "wn:n00015388", "wn:n00017222"}
    assert (cfg.noun.query, cfg.noun.synonym, cfg.noun.description) == (0.4, 0.6, 0.1)
    a = cfg.attribute
    assert (a.query, a.synonym, a.pseudo_query, a.replaced_query, a.attribute, a.description) == (
        1.0,
        0.2,
        0.2,
        0.2,
        0.2,
        0.05,
    )
    assert cfg.prompt_weight == 0 and cfg.attribute_queries and cfg.descriptions
    base = {"name": "x", "search": {"corpus": {"source": "/x"}}}
    with pytest.raises(ConfigError, match=r"train\.captions\.noun\.synonyms: unknown key"):
        parse({**base, "train": {"captions": {"noun": {"synonyms": 0.5}}}})
    with pytest.raises(ConfigError, match=r"train\.captions\.sources: "):
        parse({**base, "train": {"captions": {"sources": "both"}}})
    with pytest.raises(ConfigError, match="prompt templates need exactly one"):
        parse({**base, "train": {"captions": {"prompt_templates": ["a photo"]}}})


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_captions_command_on_the_demo(demo_run, tmp_path):
    result = invoke("captions", str(demo_run), "--samples", "3", "--draws", "4")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "000000000  alt texts: 1 (first: 'A koala.'); queries: 2 entity (koala; marsupial)" in out
    assert out.count("  chances: alt 50%") == 3 and "000000003" not in out
    epochs = [line.split() for line in out.splitlines() if line.startswith("  epoch ")]
    assert len(epochs) == 12 and {e[1] for e in epochs} == {"0", "1", "2", "3"}
    kinds = {e[2] for e in epochs}
    assert "alt" in kinds and kinds - {"alt"}
    # the same captions the sampler draws with the workdir's config and seed
    meta = orjson.loads(next(read_samples(sorted((demo_run / "shards").glob("*.tar"))))[1]["json"])
    first = CaptionSampler(CaptionsConfig(), 0).sample(meta, 0)
    assert f"  epoch 0   {first.kind:<22s} {first.text}" in out
    cfg = tmp_path / "alt.toml"
    cfg.write_text('extends = "demo"\n[train.captions]\nsources = "alt"\n')
    result = invoke("captions", str(demo_run), "--samples", "2", "--epoch", "5", "-c", str(cfg))
    epochs = [line.split() for line in result.output.splitlines() if line.startswith("  epoch ")]
    assert [e[1] for e in epochs] == ["5", "6", "7", "8", "9"] * 2 and {e[2] for e in epochs} == {"alt"}


def test_captions_command_without_shards_is_one_clear_line(tmp_path):
    result = invoke("captions", str(tmp_path), "-c", "demo")
    assert result.exit_code == 2 and "no shards under" in result.output and "Traceback" not in result.output


def test_captions_never_import_torch(demo_run):
    code = (
        "import sys; from typer.testing import CliRunner; from kgclip.cli import app;"
        f"r = CliRunner().invoke(app, ['captions', {str(demo_run)!r}, '--samples', '2']);"
        "assert r.exit_code == 0, r.output;"
        "import kgclip.train.captions;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_read_samples_groups_members_by_key(tmp_path):
    import tarfile

    from kgclip.tario import add_member

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        members = [("a/1.jpg", b"J"), ("a/1.txt", b"one"), ("a/2.seg.png", b"P"), ("a/2.txt", b"two")]
        for name, data in members:
            add_member(tar, name, data)
    assert list(read_samples([Path(shard)])) == [
        ("a/1", {"jpg": b"J", "txt": b"one"}),
        ("a/2", {"seg.png": b"P", "txt": b"two"}),
    ]
