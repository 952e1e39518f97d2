"""The dataset card: `card/README.md` with the numbers a user checks before training, and plots.

Everything on the card is computed from the curate stage's own tables, so it always describes the
shards beside it: a contact sheet (thumbnails of the most pictured natural types, read from the
shards), counts per root, natural type and entity (with a histogram of pictures per entity and the
per-entity counts before and after balancing in `entity_counts.csv`), coverage (how many selected
entities got a picture, per root and per type), text kinds, licences, every rejection reason, the
duplicate and decontamination figures, and how the query builder handled names that mean more
than one thing (`ambiguity_summary`, from the queries tables).

Plots of counts have whole-number bins and ticks. A chart with a single bar says nothing its
table does not, so it is not drawn (and an earlier one is removed): the table stays.

The card is byte-identical for identical inputs in any process: every ranking breaks ties by key
(`_ranked`), never by insertion order, which for counts gathered from sets follows the per-process
string hash seed (and at the top-20 cut decided which rows appeared); the plots carry no date.
"""

from __future__ import annotations

import csv
import io
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from kgclip.tables import Entity, NaturalType, Query, Rejected, Sample, read_records
from kgclip.workdir import atomic_path, atomic_write_bytes

TOP = 20
EXAMPLES = 5
SHEET_TYPES = 8  # rows of the contact sheet: the most pictured natural types
SHEET_PER_TYPE = 8  # thumbnails per row, the first samples of the type by key
THUMB = 96  # pixels, the longer side of a thumbnail
COVERAGE_TYPES = 15  # types on the coverage chart (the table lists all)
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
    samples: Iterable[Sample],
    rejected: Iterable[Rejected] | Counter[str],
    stats: dict[str, Any],
    entities: dict[str, Entity],
    types: dict[str, NaturalType],
    queries: dict[str, Query],
    counts_before: Counter[str],
    ambiguity: Ambiguity | None = None,
    image_of: Callable[[Sample], bytes | None] | None = None,
) -> None:
    """`image_of` gives a sample's stored JPEG (`ShardImages`); without it there is no contact sheet.

    `samples` is read twice (the counts, then the contact sheet's first samples of the most pictured
    types), one sample at a time: a list, or `SamplesTable` over the written samples.parquet.
    `rejected` is the rejected rows or already their count per reason."""
    folder.mkdir(parents=True, exist_ok=True)
    per_entity: Counter[str] = Counter()
    per_root: Counter[str] = Counter()
    per_type: Counter[str] = Counter()
    licences: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = with_alt = alt_total = 0
    for s in samples:
        total += 1
        per_entity.update(s.entity_ids)
        per_root.update({_root(entities, e) for e in s.entity_ids if e in entities})
        per_type.update(_type_names(s, types))
        licences[s.license or "unknown"] += 1
        kinds.update(queries[q].kind for q in s.query_ids if q in queries)
        with_alt += bool(s.alt_texts)
        alt_total += len(s.alt_texts)
    reasons = rejected if isinstance(rejected, Counter) else Counter(r.reason for r in rejected)
    coverage = _coverage(entities, types, queries, set(per_entity))

    plots = {
        "images_per_entity": _histogram(
            folder / "images_per_entity.png", list(per_entity.values()), "pictures per entity"
        ),
        "pictures_per_root": _bars(folder / "pictures_per_root.png", per_root, "pictures per root"),
        "licences": _bars(folder / "licences.png", licences, "pictures per licence"),
        "rejections": _bars(folder / "rejections.png", reasons, "rejected items per reason"),
        "coverage_per_type": _coverage_plot(folder / "coverage_per_type.png", coverage["type"]),
        "contact_sheet": _contact_sheet(
            folder / "contact_sheet.png", _sheet_rows(samples, types, per_type, image_of)
        ),
    }
    _entity_counts(folder / "entity_counts.csv", entities, types, counts_before, per_entity)

    def plot(name: str, alt: str) -> list[str]:
        return [f"![{alt}]({name}.png)", ""] if plots[name] else []

    lines = [
        f"# Dataset card: {name}",
        "",
        f"{total:,} image-text samples covering {len(per_entity):,} entities, written by kgclip's "
        "curate stage. A picture found for several entities counts once for each below.",
        "",
        *_sheet_lines(plots["contact_sheet"]),
        "## Pictures per root",
        "",
        _table(["root", "pictures"], _ranked(per_root)),
        *plot("pictures_per_root", "pictures per root"),
        "## Coverage",
        "",
        "How many of the selected entities got at least one picture (`with a query`: the entities the "
        "queries stage asked for; by default only leaves are queried, so internal nodes get pictures "
        "only through the queries of others):",
        "",
        _table(["root", "selected", "with a query", "with a picture", "share"], coverage["root"]),
        f"Per natural type ({len(coverage['type']):,} types, the most selected first):",
        "",
        _table(["type", "selected", "with a query", "with a picture", "share"], coverage["type"][:TOP]),
        *plot("coverage_per_type", "entities with a picture per natural type"),
        "## Entities and types",
        "",
        _describe(list(per_entity.values())),
        "",
        *plot("images_per_entity", "pictures per entity"),
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
        f"- alt texts: {with_alt:,} of {total:,} samples have at least one, {alt_total:,} in all",
        "- query texts per kind (a sample carries every query that found it):",
        "",
        _table(["query kind", "sample-query pairs"], _ranked(kinds)),
        "Every sample's JSON also carries its entities' names, aliases, descriptions and natural type.",
        "",
        *_ambiguity_lines(ambiguity or Ambiguity(recorded=False)),
        "## Licences",
        "",
        _table(["licence", "pictures"], _ranked(licences)),
        *plot("licences", "licences"),
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
        *plot("rejections", "rejections"),
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


def _integer_axis(axis: Any) -> None:
    """Ticks at whole numbers only: the axis counts pictures or entities."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _histogram(path: Path, values: list[int], title: str) -> bool:
    """Pictures per entity, one bin per whole number up to 50 bins (then whole-number widths)."""
    if len(set(values)) < 2:
        return _gone(path)
    top = max(values)
    width = -(-top // 50)  # ceil: at most 50 bins, each a whole number of pictures wide
    edges = [x - 0.5 for x in range(1, top + width + 1, width)]
    fig, ax = _pyplot().subplots(figsize=(7, 3.5))
    ax.hist(values, bins=edges, color="#4a7ab5")
    ax.set_title(title)
    ax.set_xlabel("pictures")
    ax.set_ylabel("entities")
    _integer_axis(ax.xaxis)
    _integer_axis(ax.yaxis)
    _save(fig, path)
    return True


def _bars(path: Path, counts: Counter[str], title: str) -> bool:
    top = _ranked(counts, TOP)
    if len(top) < 2:
        return _gone(path)
    fig, ax = _pyplot().subplots(figsize=(7, 0.35 * len(top) + 1))
    ax.barh([str(k) for k, _ in reversed(top)], [v for _, v in reversed(top)], color="#4a7ab5")
    ax.set_title(title)
    _integer_axis(ax.xaxis)
    _save(fig, path)
    return True


def _gone(path: Path) -> bool:
    """No chart: remove the one an earlier run drew, so the card folder matches its README."""
    path.unlink(missing_ok=True)
    return False


def _type_names(sample: Sample, types: dict[str, NaturalType]) -> set[str]:
    return {types[e].type_name for e in sample.entity_ids if e in types}


def _coverage(
    entities: dict[str, Entity],
    types: dict[str, NaturalType],
    queries: dict[str, Query],
    pictured: set[str],
) -> dict[str, list[tuple[str, int, int, int, str]]]:
    """Per root and per natural type: (name, selected, with a query, with a picture, share pictured)."""
    queried = {q.entity_id for q in queries.values() if q.entity_id}
    groups: dict[str, dict[str, set[str]]] = {"root": {}, "type": {}}
    for e in entities:
        groups["root"].setdefault(_root(entities, e), set()).add(e)
        if e in types:
            groups["type"].setdefault(types[e].type_name, set()).add(e)
    out: dict[str, list[tuple[str, int, int, int, str]]] = {}
    for by, members in groups.items():
        rows = []
        for name, ids in members.items():
            got = len(ids & pictured)
            rows.append((name, len(ids), len(ids & queried), got, f"{got / len(ids):.1%}"))
        out[by] = sorted(rows, key=lambda r: (-r[1], r[0]))
    return out


def _coverage_plot(path: Path, rows: list[tuple[str, int, int, int, str]]) -> bool:
    """Selected entities per type (light) and those with a picture (dark), the most selected types."""
    top = rows[:COVERAGE_TYPES]
    if len(top) < 2:
        return _gone(path)
    fig, ax = _pyplot().subplots(figsize=(7, 0.35 * len(top) + 1.2))
    names = [r[0] for r in reversed(top)]
    ax.barh(names, [r[1] for r in reversed(top)], color="#c9d8ec", label="selected")
    ax.barh(names, [r[3] for r in reversed(top)], color="#4a7ab5", label="with a picture")
    for y, r in enumerate(reversed(top)):
        ax.annotate(f" {r[3]:,} ({r[4]})", (r[1], y), va="center", fontsize=8)
    ax.set_xlabel("entities")
    _integer_axis(ax.xaxis)
    ax.set_title("entities with a picture, per natural type")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    return True


def _sheet_rows(
    samples: Iterable[Sample],
    types: dict[str, NaturalType],
    per_type: Counter[str],
    image_of: Callable[[Sample], bytes | None] | None,
) -> list[tuple[str, list[bytes]]]:
    """(type label, the JPEGs of its first samples by key) for the most pictured types."""
    if image_of is None:
        return []
    top = _ranked(per_type, SHEET_TYPES)
    firsts: dict[str, list[Sample]] = {name: [] for name, _ in top}
    for s in samples:  # one pass, keeping each type's first samples by key
        for name in _type_names(s, types):
            chosen = firsts.get(name)
            if chosen is None:
                continue
            chosen.append(s)
            if len(chosen) > 2 * SHEET_PER_TYPE:
                chosen.sort(key=lambda c: c.key)
                del chosen[SHEET_PER_TYPE:]
    rows = []
    for name, n in top:
        chosen = sorted(firsts[name], key=lambda c: c.key)[:SHEET_PER_TYPE]
        images = [data for data in (image_of(s) for s in chosen) if data]
        if images:
            rows.append((f"{name} ({n:,})", images))
    return rows


def _contact_sheet(path: Path, rows: list[tuple[str, list[bytes]]]) -> bool:
    """A grid: one row per type, its label on the left, thumbnails of its first samples."""
    if not rows:
        return _gone(path)
    from PIL import Image

    plt = _pyplot()
    columns = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.1 * columns + 1.6, 1.15 * len(rows)), squeeze=False
    )
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                with Image.open(io.BytesIO(images[c])) as img:
                    thumb = img.convert("RGB")
                    thumb.thumbnail((THUMB, THUMB))
                    ax.imshow(thumb)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("samples of the most pictured natural types (pictures in brackets)", fontsize=10)
    _save(fig, path)
    return True


def _sheet_lines(drawn: bool) -> list[str]:
    if not drawn:
        return []
    return [
        "## At a glance",
        "",
        f"The first samples (by key) of the {SHEET_TYPES} most pictured natural types:",
        "",
        "![samples of the most pictured natural types](contact_sheet.png)",
        "",
    ]


class SamplesTable:
    """The rows of a written samples.parquet as `Sample` records, a batch at a time, as often as
    asked: the card reads it twice and never holds more than one batch. Only the columns the card
    uses are read; the others keep their empty values."""

    COLUMNS = ("key", "shard", "split", "entity_ids", "query_ids", "license", "alt_texts")
    _BLANK: dict[str, Any] = {  # noqa: RUF012 - read only
        "sha256": "", "width": 0, "height": 0, "orig_width": 0, "orig_height": 0, "urls": [],
        "page_urls": [], "attribution": None, "caption": "",
    }

    def __init__(self, path: Path, batch_rows: int = 16_384) -> None:
        self.path, self.batch_rows = path, batch_rows

    def __iter__(self) -> Iterator[Sample]:
        file = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
        for batch in file.iter_batches(batch_size=self.batch_rows, columns=list(self.COLUMNS)):
            for row in batch.to_pylist():
                yield Sample(**self._BLANK, **row)


class ShardImages:
    """Each sample's stored JPEG, read from its shard (`shards/` or, held out, `val/`)."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self._folders = folders  # split -> folder
        self._open: dict[Path, tarfile.TarFile] = {}

    def __call__(self, sample: Sample) -> bytes | None:
        path = self._folders[sample.split] / sample.shard
        tar = self._open.get(path)
        if tar is None:
            tar = self._open[path] = tarfile.open(path)  # noqa: SIM115 (closed by close())
        member = tar.extractfile(f"{sample.key}.jpg")
        return member.read() if member is not None else None

    def close(self) -> None:
        for tar in self._open.values():
            tar.close()
        self._open.clear()


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
