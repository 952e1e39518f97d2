"""A sample's row and JSON, built from its group of copies and hits and the harvest's tables.

Each sample's JSON carries every text a trainer may sample from, grouped by kind, so that
training needs the shards alone and not the work directory.
"""

from __future__ import annotations

import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from kgclip.curate.dedup import Group
from kgclip.curate.shards import PartReader
from kgclip.pipeline import PipelineError
from kgclip.tables import Entity, NaturalType, Query, Sample


@dataclass(frozen=True)
class Lookups:
    """What a sample's JSON is written from, by id: its queries, entities and natural types."""

    queries: dict[str, Query]
    entities: dict[str, Entity]
    types: dict[str, NaturalType]  # by entity id
    query_types: dict[str, NaturalType]  # by query id (type-attribute queries)



def stored(reader: PartReader, g: Group) -> bytes:
    part, member = g.first.part or "", g.first.member or ""
    try:
        return reader.read(part, member)
    except (OSError, tarfile.TarError) as exc:
        raise PipelineError(
            f"curate: cannot read image {member} of fetch part {part} ({exc}); run the harvest again: "
            "fetch finds missing or damaged parts and fetches their images again"
        ) from None



def sample_row(key: str, shard: str, g: Group, queries: dict[str, Query], split: str) -> Sample:
    licence, attribution = g.licence()  # of the kept pixels (curate/dedup.py)
    query_texts = [queries[q].text for q in g.query_ids() if q in queries]
    alt = g.alt_texts()
    caption = alt[0] if alt else (query_texts[0] if query_texts else "")
    return Sample(
        key=key,
        shard=shard,
        sha256=g.pixel_sha256,
        width=g.first.width or 0,
        height=g.first.height or 0,
        orig_width=g.first.orig_width or 0,
        orig_height=g.first.orig_height or 0,
        urls=g.urls(),
        page_urls=g.page_urls(),
        alt_texts=alt,
        query_ids=g.query_ids(),
        entity_ids=g.entity_ids(queries),
        license=licence,
        attribution=attribution,
        caption=caption,
        phash=g.phash,
        split=split,
        evidence=[orjson.dumps(e).decode() for e in _evidence(g, queries)],
    )


def _evidence(g: Group, queries: dict[str, Query]) -> list[dict[str, Any]]:
    """Per query that found this picture, what matched in its best-ranked hit that says
    (search/corpus.py): which field, which words, and whether they were the caption's subject."""
    out: dict[str, dict[str, Any]] = {}
    for hit in g.hits:  # in (query, rank, url) order: the first with evidence is the best
        if hit.evidence is None or hit.query_id in out or hit.query_id not in queries:
            continue
        out[hit.query_id] = {
            "query_id": hit.query_id,
            "entity_id": queries[hit.query_id].entity_id,
            "backend": hit.backend,
            **orjson.loads(hit.evidence),
        }
    return list(out.values())


def type_attribute_types(queries: Iterable[Query], types: dict[str, NaturalType]) -> dict[str, NaturalType]:
    """The natural type each type-attribute query was made from ("aquatic animal": animal), by query id.

    The query table keeps only the text and the attribute, and the text is the attribute and the
    type's name joined either way round (queries.type_attribute_text); a trainer needs the type's
    synonyms and description for its captions (train/captions.py). When two types share a name the
    query builder counted them as one; the one more entities have stands for both."""
    by_name: dict[str, Counter[str]] = defaultdict(Counter)
    first: dict[str, NaturalType] = {}
    for entity_id in sorted(types):
        t = types[entity_id]
        by_name[t.type_name][t.type_id] += 1
        first.setdefault(t.type_id, t)
    named = {name: first[min(ids, key=lambda i: (-ids[i], i))] for name, ids in by_name.items()}
    found: dict[str, NaturalType] = {}
    for q in queries:
        if q.kind != "type_attribute" or not q.attribute:
            continue
        a = q.attribute
        names = [q.text[len(a) + 1 :] if q.text.startswith(f"{a} ") else None]
        names.append(q.text[: -len(a) - 1] if q.text.endswith(f" {a}") else None)
        t = next((named[n] for n in names if n in named), None)
        if t is not None:
            found[q.query_id] = t
    return found


def sample_json(s: Sample, g: Group, lookups: Lookups) -> dict[str, Any]:
    queries, entities, types, query_types = (
        lookups.queries, lookups.entities, lookups.types, lookups.query_types
    )
    return {
        "key": s.key,
        "caption": s.caption,
        "alt_texts": s.alt_texts,
        "queries": [
            {
                "id": q.query_id,
                "kind": q.kind,
                "text": q.text,
                "entity_id": q.entity_id,
                "attribute": q.attribute,
                "natural_type": _type_json(query_types.get(q.query_id)),
            }
            for q in (queries[i] for i in s.query_ids if i in queries)
        ],
        "entities": [_entity_json(entities[e], types.get(e)) for e in s.entity_ids if e in entities],
        "urls": s.urls,
        "page_urls": s.page_urls,
        "license": s.license,
        "attribution": s.attribution,
        "width": s.width,
        "height": s.height,
        "orig_width": s.orig_width,
        "orig_height": s.orig_height,
        "sha256": s.sha256,
        "phash": None if s.phash is None else f"{s.phash:016x}",
        "evidence": [orjson.loads(e) for e in s.evidence],
    }


def _entity_json(e: Entity, t: NaturalType | None) -> dict[str, Any]:
    return {
        "id": e.id,
        "name": e.name,
        "aliases": e.aliases,
        "description": e.description,
        "wordnet": e.wordnet,
        "wikidata": e.wikidata,
        "taxon_name": e.taxon_name,
        "common_names": e.common_names,
        "natural_type": _type_json(t),
    }


def _type_json(t: NaturalType | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {
        "id": t.type_id,
        "name": t.type_name,
        "aliases": t.type_aliases,
        "description": t.type_description,
    }
