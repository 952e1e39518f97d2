"""The command line: each command, and clear one-line errors with exit code 2."""

import csv
import json
import re
import socket
import subprocess
import sys
import tomllib

import pytest
from PIL import Image
from typer.testing import CliRunner

from kgclip import __version__
from kgclip.cli import STAGE_NAMES, app
from kgclip.config import Config, ConfigError, builtin_names, load, parse, resolve
from kgclip.configdoc import _model_of, describe
from kgclip.pipeline import STAGES

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_version():
    assert invoke("--version").output.strip() == f"kgclip {__version__}"


def test_bad_config_names_the_key_and_exits_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('extends = "demo"\n[fetch]\nsizee = 3\n')
    result = invoke("harvest", str(cfg), "-w", str(tmp_path / "w"))
    assert result.exit_code == 2
    assert "fetch.sizee: unknown key" in result.output
    assert "Traceback" not in result.output


def test_only_needs_its_inputs(tmp_path):
    result = invoke("harvest", "demo", "-w", str(tmp_path / "w"), "--only", "queries")
    assert result.exit_code == 2
    assert "queries needs entities, filter, types, attributes first" in result.output


def test_missing_wordnet_names_the_packages(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'extends = "demo"\n[entities.wordnet]\npath = "{tmp_path / "nowhere"}"\n')
    result = invoke("harvest", str(cfg), "-w", str(tmp_path / "w"))
    assert result.exit_code == 2
    assert "wordnet-base" in result.output and "wordnet-sense-index" in result.output


def test_status_table(demo_run):
    result = invoke("status", str(demo_run))
    assert result.exit_code == 0
    for stage in ("entities", "types", "queries", "search", "fetch", "curate"):
        assert stage in result.output
    assert result.output.count("done") >= 6 and "8,861" in result.output


def test_status_against_a_changed_config(demo_run, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('extends = "demo"\n[curate]\nsamples_per_shard = 7\n')
    result = invoke("status", str(demo_run), "-c", str(cfg))
    assert "stale" in result.output and "config [curate] changed" in result.output


def test_status_of_a_folder_that_is_not_a_workdir(tmp_path):
    result = invoke("status", str(tmp_path))
    assert result.exit_code == 2 and "not a kgclip work directory" in result.output


def test_corpus_index_and_search(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (64, 64), "red").save(src / "fox.png")
    (src / "fox.txt").write_text("A red fox in the snow.")
    (src / "logo.svg").write_text("<svg/>")
    out = tmp_path / "c.sqlite"
    result = invoke("corpus", "index", str(src), "-o", str(out))
    assert (
        result.exit_code == 0
        and "indexed 1 items" in result.output
        and "skipped 1: vector_image" in result.output
    )
    found = invoke("corpus", "search", str(out), "foxes")
    assert "A red fox in the snow." in found.output
    assert invoke("corpus", "search", str(out), "...").exit_code == 2


def test_corpus_index_report_lists_skipped_files_with_reasons(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (64, 64), "red").save(src / "fox.png")
    (src / "fox.txt").write_text("A red fox.")
    Image.new("RGB", (64, 64), "red").save(src / "wolf.png")  # no caption
    (src / "logo.svg").write_text("<svg/>")
    report = tmp_path / "skipped.csv"
    result = invoke("corpus", "index", str(src), "-o", str(tmp_path / "c.sqlite"), "--report", str(report))
    assert result.exit_code == 0 and f"2 skipped files listed in {report}" in result.output
    with report.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {"path": str(src / "logo.svg"), "reason": "vector_image"},
        {"path": str(src / "wolf.png"), "reason": "no_caption"},
    ]


def test_config_list_and_show():
    assert {"demo", "livingthings"} <= set(invoke("config", "list").output.split())
    shown = invoke("config", "show", "livingthings").output
    assert 'name = "livingthings"' in shown and "person.n.01" in shown


def test_demo_reuses_with_keep_describes_the_shards_and_trains(demo_copy):
    """The demo trains the tiny model after harvesting (here for fewer steps than its default)."""
    result = invoke("demo", "-w", str(demo_copy), "--keep", "--train-steps", "120")
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output and "WebDataset shards under" in result.output
    assert "Training kgclip-tiny on the demo shards" in result.output
    assert "train: step 120/120" in result.output
    assert f"Run folder: {demo_copy / 'runs' / 'demo'}" in result.output
    with open(demo_copy / "runs" / "demo" / "log.csv", newline="") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.3  # its loss falls
    # then zero-shot on GCompris' photos: every (names, prompts) pair and the best over prompts
    assert "Evaluating demo zero-shot on GCompris' animal photos" in result.output
    run = demo_copy / "runs" / "demo"
    found = [json.loads(p.read_text()) for p in sorted((run / "eval").glob("*.json"))]
    assert len(found) == 6 and {r["dataset"] for r in found} == {"gcompris"}
    assert sum(r["kgclip"]["best_over_prompts"] for r in found) == 2
    assert all(r["kgclip"]["images"] == 84 and r["kgclip"]["classes"] == 70 for r in found)
    assert all(r["kgclip"]["chance"]["acc1"] == pytest.approx(1 / 70) for r in found)
    assert (run / "report" / "report.md").is_file() and list((run / "report").glob("confused_*.png"))
    # validated a third of the way, two thirds and at the end: the report's curve has three points
    assert sorted(p.name for p in (run / "eval").glob("step_*")) == [f"step_{s:08d}" for s in (40, 80, 120)]
    assert "| demo@40 |" in (run / "report" / "report.md").read_text()
    again = invoke("demo", "-w", str(demo_copy), "--keep")
    assert "is trained already (--keep)" in again.output
    assert "84 images read from the cache" in again.output  # the same pair again: no embedding


def test_demo_refuses_to_clear_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = invoke("demo", "-w", str(tmp_path))
    assert result.exit_code == 2 and (tmp_path / "precious.txt").exists()


@pytest.mark.parametrize("stage", ["zz"])
def test_unknown_stage(tmp_path, stage):
    result = invoke("harvest", "demo", "-w", str(tmp_path / "w"), "--from", stage)
    assert result.exit_code == 2 and "unknown stage 'zz'" in result.output


def test_a_missing_dump_is_one_clear_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'extends = "demo"\n[entities.wikidata]\ndump = "/nowhere/latest-all.json.gz"\n'
        '[[entities.wikidata.roots]]\nqid = "Q729"\nname = "animal"\n'
    )
    result = invoke("harvest", str(cfg), "-w", str(tmp_path / "w"))
    assert result.exit_code == 2 and "no such dump file" in result.output and "Traceback" not in result.output


def test_a_missing_search_key_stops_before_any_stage_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("BRAVE_API_KEY", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'extends = "demo"\n[search]\nbackends = ["corpus", "brave"]\n'
        '[search.brave]\ncontact = "t@example.org"\n'
    )
    result = invoke("harvest", str(cfg), "-w", str(tmp_path / "w"))
    assert result.exit_code == 2 and "BRAVE_API_KEY" in result.output
    assert not (tmp_path / "w" / "manifest.json").exists()


@pytest.mark.parametrize(
    "backend", ["corpus", "openverse", "commons", "inaturalist", "gbif", "brave", "serpapi", "google_cse"]
)
@pytest.mark.parametrize("name", ["demo", "livingthings"])
def test_bundled_configs_can_name_any_backend(name, backend):
    from kgclip.config import load_raw, parse

    raw = load_raw(name)
    raw["search"]["backends"] = [backend]
    if backend != "corpus":
        raw["search"][backend] = {
            "contact": "t@example.org",
            **({"cx": "engine-id"} if backend == "google_cse" else {}),
        }
    assert parse(raw).search.active == [backend]


def test_fetch_retry_failed_asks_every_failure_again(demo_copy):
    from kgclip.workdir import Workdir

    result = invoke("fetch", str(demo_copy))
    assert result.exit_code == 0 and Workdir(demo_copy).load_manifest()["fetch"].stats["fetched_now"] == 0
    result = invoke("fetch", str(demo_copy), "--retry-failed")
    assert result.exit_code == 0 and "2 earlier failures will be retried" in result.output
    stats = Workdir(demo_copy).load_manifest()["fetch"].stats
    assert stats["fetched_now"] == 2 and stats["rejected"] == {"too_small": 2}


# --- results on stdout, progress and errors on stderr -------------------------------------------


def run_kgclip(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """kgclip as a user runs it, with stdout and stderr apart (pipes, not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "kgclip.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_version_goes_to_stdout_even_into_a_pipe():
    assert invoke("--version").stdout == f"kgclip {__version__}\n"
    done = run_kgclip("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"kgclip {__version__}\n", "")


def test_status_table_is_on_stdout_and_progress_on_stderr(demo_run, demo_copy):
    done = run_kgclip("status", str(demo_run))
    assert done.returncode == 0 and done.stderr == ""
    assert all(stage in done.stdout for stage in ("entities", "search", "curate"))
    again = invoke("harvest", "demo", "-w", str(demo_copy))
    assert again.exit_code == 0 and again.stdout == ""
    assert "entities: up to date, skipped" in again.stderr and "nothing to do" in again.stderr


def test_status_json(demo_run):
    result = invoke("status", str(demo_run), "--json")
    assert result.exit_code == 0 and result.stderr == ""
    shown = json.loads(result.stdout)
    assert shown["config"] == "demo" and shown["workdir"] == str(demo_run)
    assert [s["stage"] for s in shown["stages"]] == [s.name for s in STAGES]
    assert {s["state"] for s in shown["stages"]} == {"done"}
    by_stage = {s["stage"]: s for s in shown["stages"]}
    assert by_stage["entities"]["rows"] == 8861 and by_stage["entities"]["why"] == "up to date"
    assert all(isinstance(s["seconds"], float) for s in shown["stages"])


def test_corpus_search_hits_on_stdout_and_none_said_on_stderr(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (64, 64), "red").save(src / "fox.png")
    (src / "fox.txt").write_text("A red fox in the snow.")
    out = tmp_path / "c.sqlite"
    assert invoke("corpus", "index", str(src), "-o", str(out)).exit_code == 0
    found = invoke("corpus", "search", str(out), "fox")
    assert found.exit_code == 0 and "A red fox in the snow." in found.stdout and found.stderr == ""
    none = invoke("corpus", "search", str(out), "zebra")
    assert none.exit_code == 1 and none.stdout == ""
    assert f"nothing in {out} matches 'zebra' (--match subject; --match anywhere" in none.stderr


# --- config show --resolved ---------------------------------------------------------------------


@pytest.mark.parametrize("name", builtin_names())
def test_resolved_config_loads_back_as_the_same_config(name):
    result = invoke("config", "show", name, "--resolved")
    try:
        loaded = load(name)
    except ConfigError as exc:  # livingthings-wikidata and world need a contact: said, as by harvest
        assert result.exit_code == 2 and str(exc).splitlines()[-1] in result.stderr
        return
    assert result.exit_code == 0 and result.stderr == ""
    assert parse(tomllib.loads(result.stdout)) == loaded


def test_resolved_config_comments_every_key_and_marks_what_differs_from_the_default():
    text = invoke("config", "show", "demo", "--resolved").stdout
    assert "# peak learning rate (AdamW) (default: 0.0005)\nlr = 0.001\n" in text  # demo sets lr
    assert "# AdamW's betas\nbetas = [0.9, 0.98]\n" in text  # a default the config never names
    assert "# [entities.wikidata] (unset)" in text and "# max_per_entity = (unset)" in text
    assert "[search.corpus]" in text and "[attributes.categories]" in text
    assert "method.md" not in text and "shared/" not in text


def test_every_config_key_has_a_meaning():
    seen: set[type] = set()
    todo: list[type] = [Config]
    missing = []
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if not describe(model, name):
                missing.append(f"{model.__name__}.{name}")
            sub = _model_of(field)
            if sub is not None:
                todo.append(sub)
    assert len(seen) >= 30 and missing == []


def test_resolved_config_round_trips_awkward_values(tmp_path):
    cfg = tmp_path / "odd.toml"
    cfg.write_text(
        'extends = "livingthings-wikidata"\nname = "odd"\n[entities.wikidata]\ncontact = "t@example.org"\n'
        '[queries]\nexclude_terms = [\'say "hi"\', \'back\\\\slash\', "ünï", "tab\\there"]\n'
        "max_per_kind = {type_attribute = 7}\n"
        '[search]\nroute = {entity = ["corpus"]}\n'
        '[search.corpus]\nsource = "/a b/c"\n'
        '[[attributes.llm]]\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "m"\ntop_p = 0.5\n'
    )
    loaded = load(cfg)
    text = invoke("config", "show", str(cfg), "--resolved").stdout
    assert parse(tomllib.loads(text)) == loaded
    assert "[[entities.wikidata.roots]]" in text and "[[attributes.llm]]" in text


# --- help for users ----------------------------------------------------------------------------


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def test_help_is_for_users():
    import typer

    group = typer.main.get_command(app)
    top = invoke("--help").output
    assert "parses" not in top and "<bool>" not in top
    shown = list(_commands(group))
    assert len(shown) >= 15
    for path, cmd in shown:
        text = invoke(*path, "--help").output
        assert not re.search(r"<\w+", text), (path, text)  # no <bool>, <str>, <path> placeholders
        assert "{" not in text.split("\n")[0], path  # usage line: CONFIG, not {config}
        for param in cmd.params:
            assert param.help, (path, param.name)  # every argument and option says what it is for


def test_only_and_from_list_the_stages_and_corpus_index_the_sidecars():
    text = " ".join(invoke("harvest", "--help").output.split())
    assert text.count("entities, filter, types, attributes, queries, search, fetch, curate") == 2
    assert STAGE_NAMES.split(", ") == [s.name for s in STAGES]
    text = " ".join(invoke("corpus", "index", "--help").output.split())
    assert "NAME.txt" in text and "NAME.json" in text and '"license"' in text and "text column" in text


def test_bundled_configs_point_at_nothing_users_lack():
    for name in builtin_names():
        text = resolve(name).read_text()
        assert "method.md" not in text and "shared/" not in text, name


# --- errors that name their cause, early --------------------------------------------------------


def test_a_missing_corpus_index_stops_before_any_stage_runs(tmp_path):
    result = invoke("harvest", "livingthings", "-w", str(tmp_path / "w"))
    assert result.exit_code == 2
    assert f"no corpus index at {tmp_path / 'w' / 'corpus.sqlite'}" in result.stderr
    assert "kgclip corpus index" in result.stderr and "entities: running" not in result.output
    assert not (tmp_path / "w").exists()
    cfg = tmp_path / "c.toml"
    cfg.write_text('extends = "demo"\n[search.corpus]\nsource = "/nowhere/stamps"\n')
    result = invoke("harvest", str(cfg), "-w", str(tmp_path / "w"))
    assert result.exit_code == 2 and "no /nowhere/stamps to build it from" in result.stderr
    assert not (tmp_path / "w").exists()


def test_an_unreachable_llm_server_is_named_without_asyncio_noise(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'extends = "demo"\n[entities.wordnet]\nroots = ["big_cat.n.01"]\n'
        f'[filter]\nmethod = "llm"\n[filter.llm]\nbase_url = "{url}"\nmodel = "m"\nmax_retries = 1\n'
        "concurrency = 8\n"
    )
    done = run_kgclip("harvest", str(cfg), "-w", str(tmp_path / "w"))
    assert done.returncode == 2 and done.stdout == ""
    assert f"llm:m: cannot reach the LLM server at {url}: Connection refused (2 attempts)" in done.stderr
    assert "never awaited" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count(url) == 1
