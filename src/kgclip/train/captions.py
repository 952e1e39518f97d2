"""Training captions: which text an image is paired with at each step (method.md §7).

One caption per image per step. An image with alt texts gets one of them, uniformly, with chance
`alt_text_p`; otherwise one of its source queries is chosen uniformly and a text is drawn from that
query's weight table. A noun query's table offers the query itself, the entity's synonyms, its
natural type's synonyms and both descriptions; an attribute query's table offers the query, a
synonym alone, pseudo queries, the query with its entity mention replaced, the attribute alone and
a description. The hierarchy chance h splits every synonym and description weight between the
entity (1 - h) and its natural type (h). Within a group the weight is split equally over its texts,
and identical strings are merged keeping the highest weight.

Draws are a pure function of (seed, epoch, sample key): every DataLoader worker, rank and rerun
pairs an image with the same text in the same epoch, and the next epoch draws afresh.

Pure Python without torch, because it runs inside DataLoader workers and in `kgclip captions`.
"""

from __future__ import annotations

import hashlib
import random
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kgclip.config import CaptionsConfig

NOUN_KINDS = ("query", "entity_synonym", "type_synonym", "entity_description", "type_description")
ATTRIBUTE_KINDS = (
    "attribute_query",
    "attribute_synonym",
    "pseudo_query",
    "replaced_query",
    "attribute",
    "attribute_description",
)
DESCRIPTION_KINDS = frozenset({"entity_description", "type_description", "attribute_description"})
KINDS = ("alt", *NOUN_KINDS, *ATTRIBUTE_KINDS, "txt")
ATTRIBUTE_QUERIES = frozenset({"entity_attribute", "type_attribute"})


@dataclass(frozen=True, slots=True)
class Caption:
    """The text an image is paired with, its kind (one of KINDS), and the entity the text was drawn
    from: texts of the same entity are positives for each other's images in the multi-positive
    loss; None (alt texts, plain `.txt` captions) pairs the text with its own image only."""

    text: str
    kind: str
    entity_id: str | None


@dataclass(frozen=True, slots=True)
class Choice:
    """One row of a query's table: a text with its (unnormalised) weight and its origin."""

    text: str
    weight: float
    kind: str
    entity_id: str | None


@dataclass(frozen=True, slots=True)
class _Subject:
    """What a query's texts are about: its entity (for a type-attribute query, the natural type
    itself) and the natural type above it, with the hierarchy chance that splits the two."""

    id: str | None
    synonyms: list[str]
    description: str
    type_id: str | None
    type_synonyms: list[str]
    type_description: str
    h: float


# (kind, raw weight of the group, its texts, the entity they were drawn from)
_Group = tuple[str, float, list[str], "str | None"]


class CaptionSampler:
    """Draws one caption per (sample, epoch) from a kgclip shard sample's JSON (`KEY.json`)."""

    def __init__(self, cfg: CaptionsConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self._living = frozenset(cfg.living_types)

    def sample(self, meta: Mapping[str, Any], epoch: int) -> Caption | None:
        """The caption for this image in this epoch; None when the text sources the config allows
        leave the image none (an `alt` run on an image without alt texts): the loader skips it."""
        rng = self._rng(str(meta["key"]), epoch)
        alts = self.alt_texts(meta)
        tables = self.tables(meta)
        if alts and rng.random() < self._alt_chance(bool(alts), bool(tables)):
            return Caption(rng.choice(alts), "alt", None)
        if not tables:
            return None
        table = rng.choice(tables)
        row = rng.choices(table, weights=[r.weight for r in table])[0]
        return Caption(row.text, row.kind, row.entity_id)

    def kind_shares(self, meta: Mapping[str, Any]) -> dict[str, float]:
        """The exact chance of each caption kind for this image (what `sample` draws from)."""
        tables = self.tables(meta)
        p_alt = self._alt_chance(bool(self.alt_texts(meta)), bool(tables))
        shares: Counter[str] = Counter()
        if p_alt > 0:
            shares["alt"] = p_alt
        for table in tables:
            total = sum(r.weight for r in table)
            for r in table:
                shares[r.kind] += (1 - p_alt) / len(tables) * r.weight / total
        return dict(shares)

    def alt_texts(self, meta: Mapping[str, Any]) -> list[str]:
        """The image's alt texts this config may draw (none in a `kg` run)."""
        if self.cfg.sources == "kg":
            return []
        return _unique(meta.get("alt_texts") or [])

    def queries(self, meta: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The image's source queries this config may draw from (none in an `alt` run)."""
        if self.cfg.sources == "alt":
            return []
        found = list(meta.get("queries") or [])
        if not self.cfg.attribute_queries:
            found = [q for q in found if q.get("kind") not in ATTRIBUTE_QUERIES]
        return found

    def tables(self, meta: Mapping[str, Any]) -> list[list[Choice]]:
        """One table per usable source query; a query whose table is empty (every weight 0) is none."""
        return [t for t in (self.table(q, meta) for q in self.queries(meta)) if t]

    def table(self, query: Mapping[str, Any], meta: Mapping[str, Any]) -> list[Choice]:
        """A query's texts with their weights, identical strings merged, the heaviest first."""
        subject = self._subject(query, meta)
        if query.get("kind") in ATTRIBUTE_QUERIES:
            groups = self._attribute_groups(query, subject)
        else:
            groups = self._noun_groups(query, subject)
        if not self.cfg.descriptions:
            groups = [g for g in groups if g[0] not in DESCRIPTION_KINDS]
        return _merge(self._prompted(groups))

    def _alt_chance(self, has_alts: bool, has_tables: bool) -> float:
        if not has_alts:
            return 0.0
        return self.cfg.alt_text_p if has_tables else 1.0

    def _rng(self, key: str, epoch: int) -> random.Random:
        # blake2b, not hash(): the same on every process, machine and PYTHONHASHSEED
        digest = hashlib.blake2b(f"{self.seed}:{epoch}:{key}".encode(), digest_size=16).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def _subject(self, query: Mapping[str, Any], meta: Mapping[str, Any]) -> _Subject:
        """A type-attribute query ("aquatic animal") is about its natural type, which the curate
        stage records on the query; a type is its own natural type when h is chosen, and has no
        type above it. Other queries are about their entity and its natural type."""
        if query.get("kind") == "type_attribute":
            t = query.get("natural_type") or {}
            tid = t.get("id")
            return _Subject(tid, _type_names(t), t.get("description") or "", None, [], "", self._h(tid))
        eid = query.get("entity_id")
        entity = next((e for e in meta.get("entities") or [] if e.get("id") == eid), {})
        t = entity.get("natural_type") or {}
        return _Subject(
            eid,
            _entity_names(entity),
            entity.get("description") or "",
            t.get("id"),
            _type_names(t),
            t.get("description") or "",
            self._h(t.get("id")),
        )

    def _h(self, type_id: str | None) -> float:
        """h is lower for living things typed only as "animal" or "plant": those type names say little."""
        if type_id in self._living:
            return self.cfg.hierarchy_chance_living
        return self.cfg.hierarchy_chance

    def _noun_groups(self, query: Mapping[str, Any], s: _Subject) -> list[_Group]:
        w, h = self.cfg.noun, s.h
        return [
            ("query", w.query, [query["text"]], s.id),
            ("entity_synonym", w.synonym * (1 - h), s.synonyms, s.id),
            ("type_synonym", w.synonym * h, s.type_synonyms, s.type_id),
            ("entity_description", w.description * (1 - h), [s.description], s.id),
            ("type_description", w.description * h, [s.type_description], s.type_id),
        ]

    def _attribute_groups(self, query: Mapping[str, Any], s: _Subject) -> list[_Group]:
        w, h = self.cfg.attribute, s.h
        text, attribute = query["text"], query.get("attribute") or ""
        mention = _mention(s.synonyms)
        if mention is not None and mention.search(text) is None:
            mention = None  # in-query replacement applies only when the query names the subject
        groups: list[_Group] = [("attribute_query", w.query, [text], s.id)]
        for names, share, eid in ((s.synonyms, 1 - h, s.id), (s.type_synonyms, h, s.type_id)):
            groups.append(("attribute_synonym", w.synonym * share, names, eid))
            if attribute:
                pseudo = [p for n in names for p in (f"{attribute} {n}", f"{n} {attribute}")]
                groups.append(("pseudo_query", w.pseudo_query * share, pseudo, eid))
            if mention is not None:
                replaced = [mention.sub(lambda _m, n=n: n, text) for n in names]
                groups.append(("replaced_query", w.replaced_query * share, replaced, eid))
        if attribute:
            groups.append(("attribute", w.attribute, [attribute], s.id))
        groups.append(("attribute_description", w.description * (1 - h), [s.description], s.id))
        groups.append(("attribute_description", w.description * h, [s.type_description], s.type_id))
        return groups

    def _prompted(self, groups: list[_Group]) -> list[_Group]:
        """With `prompt_weight` c > 0, a share c of each non-description group's weight goes to its
        texts put in the CLIP prompt templates ("a photo of a {}."), spread evenly over them."""
        c, templates = self.cfg.prompt_weight, self.cfg.prompt_templates
        if c <= 0:
            return groups
        out: list[_Group] = []
        for kind, weight, texts, eid in groups:
            if kind in DESCRIPTION_KINDS:
                out.append((kind, weight, texts, eid))
                continue
            out.append((kind, weight * (1 - c), texts, eid))
            for template in templates:
                prompted = [template.replace("{}", t) for t in texts]
                out.append((kind, weight * c / len(templates), prompted, eid))
        return out


def _merge(groups: Iterable[_Group]) -> list[Choice]:
    """Each group's weight split equally over its distinct texts; a string offered by several
    groups keeps only its highest weight (ties: the earlier group), as the method merges them."""
    rows: list[Choice] = []
    for kind, weight, texts, eid in groups:
        distinct = _unique(texts)
        if weight > 0 and distinct:
            rows.extend(Choice(t, weight / len(distinct), kind, eid) for t in distinct)
    best: dict[str, Choice] = {}
    for row in sorted(rows, key=lambda r: -r.weight):  # stable: ties keep table order
        best.setdefault(row.text, row)
    return list(best.values())


def _mention(names: Sequence[str]) -> re.Pattern[str] | None:
    """Any of the names as whole words, the longest first ("red fox" before "fox"), any case."""
    if not names:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _entity_names(entity: Mapping[str, Any]) -> list[str]:
    """Name, aliases, common and taxon names: the method's entity synonyms."""
    return _unique(
        [
            entity.get("name"),
            *(entity.get("aliases") or []),
            *(entity.get("common_names") or []),
            entity.get("taxon_name"),
        ]
    )


def _type_names(t: Mapping[str, Any]) -> list[str]:
    return _unique([t.get("name"), *(t.get("aliases") or [])])


def _unique(texts: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(t for t in texts if t and t.strip()))


def is_kgclip_meta(meta: Any) -> bool:
    """Whether a sample's JSON is kgclip's (carries its texts by kind), not img2dataset's or another's."""
    return (
        isinstance(meta, dict)
        and "key" in meta
        and isinstance(meta.get("alt_texts"), list)
        and isinstance(meta.get("queries"), list)
    )


def caption_of(sampler: CaptionSampler, sample: Mapping[str, Any], epoch: int) -> Caption | None:
    """The caption of one WebDataset sample given its members by extension (raw bytes or already
    decoded): kgclip's JSON through the sampler; any other shard's `.txt` as it stands (kind `txt`),
    e.g. img2dataset's. The config's text switches act on kgclip's JSON only."""
    meta = sample.get("json")
    if isinstance(meta, bytes | bytearray | str):
        try:
            meta = orjson.loads(meta)
        except orjson.JSONDecodeError:
            meta = None
    if is_kgclip_meta(meta):
        return sampler.sample(meta, epoch)
    text = sample.get("txt")
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8", errors="replace")
    return Caption(text.strip(), "txt", None) if isinstance(text, str) and text.strip() else None


def read_samples(shards: Iterable[Path]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """WebDataset samples in tar order, as (key, {extension: bytes}), with the stdlib only.

    As WebDataset reads them: a member's key is its path up to the first dot of its file name,
    the rest its extension, and a sample is a run of consecutive members with the same key."""
    for shard in shards:
        with tarfile.open(shard) as tar:
            key: str = ""
            files: dict[str, bytes] = {}
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, name = member.name.rpartition("/")
                stem, dot, ext = name.partition(".")
                if not dot:
                    continue
                this = f"{folder}/{stem}" if folder else stem
                if this != key and files:
                    yield key, files
                    files = {}
                key = this
                handle = tar.extractfile(member)
                files[ext.lower()] = handle.read() if handle else b""
            if files:
                yield key, files
