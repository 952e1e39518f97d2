"""The dataset card: `card/README.md` with the numbers a user checks before training, and plots.

Everything on the card is computed from the curate stage's own tables, so it always describes the
shards beside it: counts per root, natural type and entity (with a histogram of pictures per
entity and the per-entity counts before and after balancing in `entity_counts.csv`), text kinds,
licences, every rejection reason, the duplicate and decontamination figures, and how the query
builder handled names that mean more than one thing (`ambiguity_summary`, from the queries tables).

The card is byte-identical for identical inputs in any process: every ranking breaks ties by key
(`_ranked`), never by insertion order, which for counts gathered from sets follows the per-process
string hash seed (and at the top-20 cut decided which rows appeared); the plots carry no date.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from kgclip.tables import Entity, NaturalType, Query, Rejected, Sample, read_records
from kgclip.workdir import atomic_path, atomic_write_bytes

TOP = 20
EXAMPLES = 5
AMBIGUITY_COLUMNS = ("kind", "text", "original_text", "ambiguity", "decision", "senses")
DROPPED_AMBIGUOUS = ("ambiguous", "judged_not_in_domain")  # rejects/queries.parquet reasons


@dataclass
class Ambiguity:
    """What the queries stage recorded about ambiguous query strings; `recorded` is False for a
    harvest made before it recorded any (queries.parquet has no `ambiguity` column)."""

    recorded: bool
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (kind, ambiguity, decision)
    examples: list[str] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)  # by reason
    dropped_examples: list[str] = field(default_factory=list)


def ambiguity_summary(queries_path: Path, rejects_path: Path) -> Ambiguity:
    """Counts by query kind, ambiguity and decision from the queries table's own columns (read
    directly, so a harvest made before the columns existed still gets a card that says so), and
    the queries dropped as ambiguous from the queries stage's rejects."""
    names = pq.read_schema(queries_path).names
    if "ambiguity" not in names:
        return Ambiguity(recorded=False)
    rows = pq.read_table(queries_path, columns=[c for c in AMBIGUITY_COLUMNS if c in names]).to_pylist()
    found = Ambiguity(recorded=True)
    for r in rows:
        found.counts[(r["kind"], r["ambiguity"] or "none", r.get("decision") or "")] += 1
    qualified = sorted(
        (r for r in rows if r.get("original_text")), key=lambda r: (r["original_text"], r["text"])
    )
    found.examples = [_example(r) for r in qualified[:EXAMPLES]]
    if rejects_path.is_file():
        dropped = sorted(
            (r for r in read_records(rejects_path, Rejected) if r.reason in DROPPED_AMBIGUOUS),
            key=lambda r: (r.reason, r.detail, r.item),
        )
        found.dropped = Counter(r.reason for r in dropped)
        found.dropped_examples = [f"{r.reason}: {r.detail}" for r in dropped[:EXAMPLES]]
    return found


def _example(row: dict[str, Any]) -> str:
    senses = row.get("senses") or []
    others = f" (also: {'; '.join(senses[:2])})" if senses else ""
    return f"{row['original_text']!r} → {row['text']!r}{others}"


def write_card(
    folder: Path,
    name: str,
    samples: list[Sample],
    rejected: list[Rejected],
    stats: dict[str, Any],
    entities: dict[str, Entity],
    types: dict[str, NaturalType],
    queries: dict[str, Query],
    counts_before: Counter[str],
    ambiguity: Ambiguity | None = None,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    per_entity = Counter(e for s in samples for e in s.entity_ids)
    per_root = Counter(
        r for s in samples for r in {_root(entities, e) for e in s.entity_ids if e in entities}
    )
    per_type = Counter(t for s in samples for t in {types[e].type_name for e in s.entity_ids if e in types})
    licences = Counter(s.license or "unknown" for s in samples)
    reasons = Counter(r.reason for r in rejected)
    kinds = Counter(queries[q].kind for s in samples for q in s.query_ids if q in queries)

    _histogram(folder / "images_per_entity.png", list(per_entity.values()), "pictures per entity")
    _bars(folder / "pictures_per_root.png", per_root, "pictures per root")
    _bars(folder / "licences.png", licences, "pictures per licence")
    _bars(folder / "rejections.png", reasons, "rejected items per reason")
    _entity_counts(folder / "entity_counts.csv", entities, types, counts_before, per_entity)

    with_alt = sum(bool(s.alt_texts) for s in samples)
    alt_total = sum(len(s.alt_texts) for s in samples)
    lines = [
        f"# Dataset card: {name}",
        "",
        f"{len(samples):,} image-text samples covering {len(per_entity):,} entities, written by kgclip's "
        "curate stage. A picture found for several entities counts once for each below.",
        "",
        "## Pictures per root",
        "",
        _table(["root", "pictures"], _ranked(per_root)),
        "![pictures per root](pictures_per_root.png)",
        "",
        "## Entities and types",
        "",
        _describe(list(per_entity.values())),
        "",
        "![pictures per entity](images_per_entity.png)",
        "",
        "Most pictured entities (all of them, before and after balancing: `entity_counts.csv`):",
        "",
        _table(
            ["entity", "name", "pictures"],
            [(e, entities[e].name if e in entities else "", n) for e, n in _ranked(per_entity, TOP)],
        ),
        f"Most frequent natural types ({len(per_type):,} in all):",
        "",
        _table(["type", "pictures"], _ranked(per_type, TOP)),
        "## Texts",
        "",
        f"- alt texts: {with_alt:,} of {len(samples):,} samples have at least one, {alt_total:,} in all",
        "- query texts per kind (a sample carries every query that found it):",
        "",
        _table(["query kind", "sample-query pairs"], _ranked(kinds)),
        "Every sample's JSON also carries its entities' names, aliases, descriptions and natural type.",
        "",
        *_ambiguity_lines(ambiguity or Ambiguity(recorded=False)),
        "## Licences",
        "",
        _table(["licence", "pictures"], _ranked(licences)),
        "![licences](licences.png)",
        "",
        "`unknown`: the source stated no licence; check before redistributing.",
        "",
        "## Curation",
        "",
        f"- exact and near duplicate copies merged: {stats.get('duplicates_merged', 0):,} "
        f"(of them distinct near-duplicate pictures: {stats.get('near_duplicates_merged', 0):,})",
        "- dropped as copies of evaluation images: "
        + (
            ", ".join(f"{k} {v:,}" for k, v in sorted(stats.get("eval_copies_dropped", {}).items()))
            or "none (no decontamination index configured, or no match)"
        ),
        f"- dropped by balancing: {stats.get('balanced_out', 0):,}",
        _split_line(stats.get("split", {})),
        "",
        "Rejected items, by reason (`rejected.parquet` lists each with its detail):",
        "",
        _table(["reason", "items"], _ranked(reasons)),
        "![rejections](rejections.png)",
        "",
    ]
    atomic_write_bytes(folder / "README.md", "\n".join(lines).encode())


def _ambiguity_lines(a: Ambiguity) -> list[str]:
    """The card's "Ambiguous queries" section: a name that also means something else (outside the
    selected roots, or another selected entity) finds pictures of that other thing."""
    lines = ["## Ambiguous queries", ""]
    if not a.recorded:
        lines += [
            "Not recorded: this harvest's `queries.parquet` has no `ambiguity` column (it was made "
            "before the queries stage checked names for other meanings).",
            "",
        ]
        return lines
    ambiguous = sum(n for (_, amb, _), n in a.counts.items() if amb != "none")
    lines += [
        f"{ambiguous:,} of {sum(a.counts.values()):,} kept queries name something else too; "
        f"{sum(a.dropped.values()):,} were dropped for it"
        + (f" ({', '.join(f'{k} {v:,}' for k, v in sorted(a.dropped.items()))})" if a.dropped else "")
        + ". Queries by kind, ambiguity and decision (`queries.parquet`; dropped ones in "
        "`rejects/queries.parquet`):",
        "",
        _table(
            ["query kind", "ambiguity", "decision", "queries"],
            [(*key, n) for key, n in sorted(a.counts.items(), key=lambda kv: (-kv[1], kv[0]))],
        ),
    ]
    if a.examples:
        lines += ["Qualified, for example:", ""] + [f"- {e}" for e in a.examples] + [""]
    if a.dropped_examples:
        lines += ["Dropped, for example:", ""] + [f"- {e}" for e in a.dropped_examples] + [""]
    return lines


def _split_line(split: dict[str, int]) -> str:
    held = split.get("val", 0)
    if not held:
        return "- held out for evaluation: none (`[curate] val_fraction` is 0)"
    return (
        f"- held out for evaluation: {held:,} pictures in `val/` (never in the training shards); "
        f"{split.get('train', 0):,} in `shards/` for training"
    )


def _ranked(counts: Counter[str], limit: int | None = None) -> list[tuple[str, int]]:
    """Most frequent first, ties by key: `Counter.most_common` keeps insertion order for ties."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def _root(entities: dict[str, Entity], entity_id: str) -> str:
    root = entities[entity_id].root
    return f"{entities[root].name} ({root})" if root in entities else root


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    if not rows:
        return "(none)\n"
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _describe(values: list[int]) -> str:
    if not values:
        return "No entity has a picture."
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return (
        f"Pictures per entity: min {ordered[0]:,}, median {median:,}, max {ordered[-1]:,}, "
        f"mean {sum(values) / len(values):.1f}."
    )


def _pyplot() -> Any:
    """matplotlib on its file-only backend, imported when a card is drawn: it takes half a second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _histogram(path: Path, values: list[int], title: str) -> None:
    fig, ax = _pyplot().subplots(figsize=(7, 3.5))
    if values:
        ax.hist(values, bins=min(50, max(values)), color="#4a7ab5")
    ax.set_title(title)
    ax.set_xlabel("pictures")
    ax.set_ylabel("entities")
    _save(fig, path)


def _bars(path: Path, counts: Counter[str], title: str) -> None:
    top = _ranked(counts, TOP)
    fig, ax = _pyplot().subplots(figsize=(7, 0.35 * max(len(top), 2) + 1))
    ax.barh([str(k) for k, _ in reversed(top)], [v for _, v in reversed(top)], color="#4a7ab5")
    ax.set_title(title)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    _pyplot().close(fig)


def _entity_counts(
    path: Path,
    entities: dict[str, Entity],
    types: dict[str, NaturalType],
    before: Counter[str],
    after: Counter[str],
) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["entity", "name", "root", "type", "pictures_before_balancing", "pictures"])
        for e in sorted(set(before) | set(after)):
            entity = entities.get(e)
            writer.writerow(
                [
                    e,
                    entity.name if entity else "",
                    entity.root if entity else "",
                    types[e].type_name if e in types else "",
                    before.get(e, 0),
                    after.get(e, 0),
                ]
            )
