"""Label-precision audit: draw (picture, entity) links for a person to mark, then score the marks.

A harvest's claim is that each picture shows the entities it is linked to; only a person looking at
the pictures can check that. `draw` writes a seeded, uniform sample of links (every entity of every
sample in `samples.parquet` is one link) as a CSV with each picture extracted beside it; a person
fills in `mark` (correct / wrong) and `note`; `score` turns the marks into precision with a Wilson
interval, per query kind and per evidence kind.

A link's id is a hash of the picture's pixels and the entity id, never the sample key (keys are
positions in one harvest), so the same audited set can be scored against a later harvest of the
same sources: links that are gone are counted apart ("correct links lost"), and the precision of
the links that remain is the precision after the change on that set.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kgclip.tables import Entity, Query, Sample, read_records
from kgclip.workdir import atomic_path

COLUMNS = [
    "link_id",
    "key",
    "image",
    "pixel_sha256",
    "entity_id",
    "entity_name",
    "gloss",
    "caption",
    "query_texts",
    "query_kinds",
    "evidence",
    "mark",
    "note",
]
MARKS = ("correct", "wrong")
SEP = "; "  # between the query texts (and kinds) of one link: the CSV is read by people
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


class AuditError(Exception):
    """A condition the user can fix: a missing table, marks that would be lost, a bad mark."""


def link_id(pixel_sha256: str, entity_id: str) -> str:
    """The link's id in any harvest: the picture's pixel hash and the entity, not the sample key."""
    return hashlib.sha256(f"{pixel_sha256}|{entity_id}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Link:
    """One (picture, entity) pair of a harvest."""

    sample: Sample
    entity_id: str

    @property
    def id(self) -> str:
        return link_id(self.sample.sha256, self.entity_id)


def links(samples: Iterable[Sample]) -> list[Link]:
    """Every link of the harvest, in key order then the sample's entity order (a stable population)."""
    return [Link(s, e) for s in sorted(samples, key=lambda s: s.key) for e in s.entity_ids]


def read_samples(workdir: Path) -> list[Sample]:
    path = workdir / "samples.parquet"
    if not path.is_file():
        raise AuditError(f"no {path}: run `kgclip harvest` to the curate stage first")
    return list(read_records(path, Sample))


# --- drawing a sample -------------------------------------------------------------------------


def draw(
    workdir: Path, n: int, seed: int, out: Path, exclude: Iterable[Path] = (), images: Path | None = None
) -> tuple[int, int]:
    """Write a uniform random sample of `n` links (fewer if the harvest has fewer) to `out` with their
    pictures under `images` (default: `OUT-STEM_images/` beside the CSV); links already in an
    `exclude` CSV are not drawn. Returns (links written, links in the population)."""
    _refuse_marked(out)
    skip = {row["link_id"] for path in exclude for row in read_csv(path)}
    population = [link for link in links(read_samples(workdir)) if link.id not in skip]
    chosen = choose(population, n, seed)
    entities = {e.id: e for e in read_records(workdir / "entities.parquet", Entity)}
    queries = {q.query_id: q for q in read_records(workdir / "queries.parquet", Query)}
    images = images if images is not None else out.with_name(f"{out.stem}_images")
    images.mkdir(parents=True, exist_ok=True)
    members = _shard_members(workdir, {link.sample.key: link.sample for link in chosen}.values())
    rows = []
    for link in chosen:
        jpeg, meta = members[link.sample.key]
        picture = images / f"{link.sample.sha256[:16]}.jpg"
        if not picture.exists():
            picture.write_bytes(jpeg)
        rows.append(_row(link, entities, queries, meta, _relative(picture, out.parent)))
    write_csv(out, rows)
    return len(rows), len(population)


def choose(population: list[Link], n: int, seed: int) -> list[Link]:
    """`n` links drawn uniformly without replacement: each link, not each picture, is equally likely,
    so a picture linked to three entities is three times as likely to appear as one linked to one."""
    return random.Random(seed).sample(population, min(n, len(population)))


def _refuse_marked(out: Path) -> None:
    """Never overwrite a person's marks: a CSV with any mark must be moved away first."""
    if out.exists() and any(row.get("mark", "").strip() for row in read_csv(out)):
        raise AuditError(
            f"{out} already has marks; choose another file (and --exclude {out} to draw links not "
            "audited yet) or move it away"
        )


def _shard_members(workdir: Path, samples: Iterable[Sample]) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Each chosen sample's JPEG and JSON, read from its own shard (under `shards/` or `val/`)."""
    from kgclip.curate.split import VAL
    from kgclip.curate.stage import SHARDS, VAL_DIR

    by_shard: dict[Path, set[str]] = defaultdict(set)
    for s in samples:
        by_shard[workdir / (VAL_DIR if s.split == VAL else SHARDS) / s.shard].add(s.key)
    found: dict[str, tuple[bytes, dict[str, Any]]] = {}
    for shard, keys in sorted(by_shard.items()):
        try:
            with tarfile.open(shard) as tar:
                for key in sorted(keys):
                    found[key] = (_member(tar, f"{key}.jpg"), orjson.loads(_member(tar, f"{key}.json")))
        except (OSError, tarfile.TarError, KeyError, orjson.JSONDecodeError) as exc:
            raise AuditError(f"cannot read {shard} ({exc}); run the curate stage again") from None
    return found


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(name)
    if handle is None:
        raise KeyError(f"{name} is not a file")
    return handle.read()


def _relative(path: Path, start: Path) -> str:
    try:
        return path.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _row(
    link: Link, entities: dict[str, Entity], queries: dict[str, Query], meta: dict[str, Any], image: str
) -> dict[str, str]:
    s, e = link.sample, entities.get(link.entity_id)
    found = [queries[q] for q in s.query_ids if q in queries and queries[q].entity_id == link.entity_id]
    return {
        "link_id": link.id,
        "key": s.key,
        "image": image,
        "pixel_sha256": s.sha256,
        "entity_id": link.entity_id,
        "entity_name": e.name if e else "",
        "gloss": e.description if e else "",
        "caption": s.caption,
        "query_texts": SEP.join(q.text for q in found),
        "query_kinds": SEP.join(q.kind for q in found),
        "evidence": _evidence(meta, link.entity_id, {q.query_id for q in found}),
        "mark": "",
        "note": "",
    }


def _evidence(meta: dict[str, Any], entity_id: str, query_ids: set[str]) -> str:
    """The sample JSON's `evidence` entries for this link (which field and words matched), as compact
    JSON; empty when the harvest recorded none. Entries name their query or entity, or neither."""
    entries = meta.get("evidence") or []
    if isinstance(entries, dict):  # keyed by query id
        entries = [{"query_id": k, **v} for k, v in entries.items() if isinstance(v, dict)]
    mine = [
        x
        for x in entries
        if isinstance(x, dict)
        and x.get("entity_id", entity_id) == entity_id
        and ("query_id" not in x or x["query_id"] in query_ids)
    ]
    return orjson.dumps(mine).decode() if mine else ""


def evidence_kind(evidence: str) -> str:
    """A link's evidence as one label: the matched fields, `+`-joined, each marked `(subject)` when
    the words were the caption's subject; `none` without evidence."""
    if not evidence.strip():
        return "none"
    try:
        entries = orjson.loads(evidence)
    except orjson.JSONDecodeError:
        return "unreadable"
    entries = entries if isinstance(entries, list) else [entries]
    kinds = {
        f"{x.get('field', '?')}{' (subject)' if x.get('subject') else ''}"
        for x in entries
        if isinstance(x, dict)
    }
    return "+".join(sorted(kinds)) or "none"


# --- the CSV --------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise AuditError(f"no audit file {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("link_id", "mark") if c not in (reader.fieldnames or [])]
        if missing:
            raise AuditError(f"{path} is not an audit file: no column {', '.join(missing)}")
        return [{k: v or "" for k, v in row.items()} for row in reader]


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# --- scoring ----------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n: right near 0 and 1 and for small n, where the
    normal approximation p ± z·sqrt(p(1-p)/n) leaves [0, 1]."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class Tally:
    """Marked links of one group: precision and its 95% Wilson interval."""

    correct: int = 0
    wrong: int = 0

    def add(self, mark: str) -> None:
        if mark == "correct":
            self.correct += 1
        else:
            self.wrong += 1

    def as_dict(self) -> dict[str, Any]:
        n = self.correct + self.wrong
        low, high = wilson(self.correct, n)
        return {
            "correct": self.correct,
            "wrong": self.wrong,
            "precision": self.correct / n if n else None,
            "ci95": [low, high],
        }


@dataclass
class Score:
    """Precision of the marked links, overall and per group; and on the links `workdir` still has."""

    rows: int = 0
    unmarked: int = 0
    overall: Tally = field(default_factory=Tally)
    by_query_kind: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_evidence_kind: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    present: Tally = field(default_factory=Tally)
    correct_lost: int = 0
    wrong_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "unmarked": self.unmarked,
            "overall": self.overall.as_dict(),
            "by_query_kind": {k: t.as_dict() for k, t in sorted(self.by_query_kind.items())},
            "by_evidence_kind": {k: t.as_dict() for k, t in sorted(self.by_evidence_kind.items())},
            "still_present": self.present.as_dict(),
            "correct_links_lost": self.correct_lost,
            "wrong_links_removed": self.wrong_removed,
        }


def link_ids(workdir: Path) -> set[str]:
    """The ids of every link a harvest has now."""
    return {link.id for link in links(read_samples(workdir))}


def score(audit: Path, existing: set[str]) -> Score:
    """Score the marks of `audit`; each link is looked up in `existing` (`link_ids` of a work
    directory) by id, so the audit of an earlier harvest scores a later one ("after") on the same set."""
    result = Score()
    for row in read_csv(audit):
        result.rows += 1
        mark = row["mark"].strip().lower()
        if not mark:
            result.unmarked += 1
            continue
        if mark not in MARKS:
            raise AuditError(
                f"{audit}: link {row['link_id']} has mark {mark!r}; use correct, wrong or leave it empty"
            )
        _add(result, row, mark, row["link_id"] in existing)
    return result


def _add(result: Score, row: dict[str, str], mark: str, present: bool) -> None:
    """A link counts once overall and once under each kind of query that found it."""
    result.overall.add(mark)
    for kind in sorted(set(_split(row.get("query_kinds", "")))) or ["none"]:
        result.by_query_kind[kind].add(mark)
    result.by_evidence_kind[evidence_kind(row.get("evidence", ""))].add(mark)
    if present:
        result.present.add(mark)
    elif mark == "correct":
        result.correct_lost += 1
    else:
        result.wrong_removed += 1


def _split(joined: str) -> Iterator[str]:
    return (part.strip() for part in joined.split(SEP.strip()) if part.strip())


def describe(result: Score) -> list[str]:
    """The score as lines for a terminal."""
    lines = [
        f"{result.rows} links, {result.rows - result.unmarked} marked"
        + (f" ({result.unmarked} not marked yet, left out)" if result.unmarked else ""),
        "precision " + _fmt(result.overall),
    ]
    for title, groups in (("query kind", result.by_query_kind), ("evidence", result.by_evidence_kind)):
        lines += [f"by {title}:"] + [f"  {k:<22s} {_fmt(t)}" for k, t in sorted(groups.items())]
    gone = result.correct_lost + result.wrong_removed
    lines.append(
        f"in the work directory now: {result.present.correct + result.present.wrong} of the marked links "
        f"remain, precision {_fmt(result.present)}; {gone} gone: {result.correct_lost} correct links lost, "
        f"{result.wrong_removed} wrong links removed"
    )
    return lines


def _fmt(t: Tally) -> str:
    d = t.as_dict()
    n = t.correct + t.wrong
    if not n:
        return "n/a (no marked links)"
    low, high = d["ci95"]
    return f"{d['precision']:.1%} ({t.correct}/{n}; 95% CI {low:.1%}-{high:.1%})"
