"""Duplicate merging: copies of one picture become one sample with every text.

Two levels. Exact copies share the SHA-256 of their normalised RGB pixels (fetch/images.py), not of
the file: the same picture served as PNG by one host and re-saved by another is one image. Near
copies (resized, re-encoded, recoloured, framed or slightly cropped by another host) have
perceptual hashes within `near_distance` bits (curate/phash.py); their groups are merged through a
multi-index Hamming search (curate/hashindex.py), never by comparing all pairs. The merged sample
keeps the largest copy's pixels and the texts, URLs and queries of every copy.

A licence is a grant for particular pixels, so it travels with them: a sample's licence and
attribution come only from a copy whose pixels are the ones kept (a small CC0 crop must not license
a large unlicensed original). Among those identical copies the first by URL that states a licence
gives it, or with a licence filter the first whose licence passes (the pixels are the same, so any
publisher's grant covers them; a stated licence is never replaced by `unknown` from an unlabelled
copy). With a filter, near-duplicate merging keeps the largest picture among the copies whose
licence passes, and the largest of all only when none does (the filter then rejects the sample).

Merging is transitive (connected components): a chain a~b~c merges a and c even if they are
further apart than the threshold. At the default threshold such chains are copies of one picture.

The curate stage makes the groups on compact arrays (curate/plan.py), without a record per row,
and builds a `Group` of records only for a window of groups at a time, to write their samples; the
record-per-row grouping it is tested against is tests/curate_reference.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kgclip.curate.licences import UNKNOWN, allowed, normalise
from kgclip.tables import Fetched, Hit, Query


@dataclass
class Group:
    """All fetched copies of one image, with the texts and queries that led to any of them.

    `copies[0]` is the kept copy (its pixels go into the shard), followed by its exact copies;
    `near` counts the other distinct pictures (near duplicates) merged in. `accepted` is the
    licence filter, which decides whose licence the kept pixels carry.
    """

    pixel_sha256: str
    copies: list[Fetched]
    hits: list[Hit] = field(default_factory=list)
    near: int = 0
    accepted: tuple[str, ...] = ()

    @property
    def phash(self) -> int | None:
        return self.copies[0].phash

    @property
    def colour(self) -> int | None:
        return self.copies[0].colour

    @property
    def first(self) -> Fetched:
        return self.copies[0]

    def urls(self) -> list[str]:
        return [c.url for c in self.copies]

    def kept_copies(self) -> list[Fetched]:
        """The copies whose pixels go into the shard: only their licences apply to them."""
        return [c for c in self.copies if c.pixel_sha256 == self.pixel_sha256]

    def page_urls(self) -> list[str]:
        """Every page; the licence source's first, then the other pages of the kept pixels."""
        source = self.licence_source()
        kept = {c.url for c in self.kept_copies()}
        ordered = sorted(self.hits, key=lambda h: h.url not in kept)  # stable: hit order otherwise
        return _unique(h.page_url for h in [*([source] if source else []), *ordered] if h.page_url)

    def alt_texts(self) -> list[str]:
        return _unique(h.alt_text.strip() for h in self.hits if h.alt_text.strip())

    def query_ids(self) -> list[str]:
        return _unique(h.query_id for h in self.hits)

    def entity_ids(self, queries: dict[str, Query]) -> list[str]:
        ids = (queries[q].entity_id for q in self.query_ids() if q in queries)
        return _unique(i for i in ids if i)

    def licence_source(self) -> Hit | None:
        """The hit whose licence the kept pixels carry (module docstring): the first stating one of
        a kept copy, by URL, that passes the filter; else the first stating one (which the filter
        then refuses); None when no copy of these pixels states a licence."""
        kept = [c.url for c in self.kept_copies()]
        rank = {url: i for i, url in enumerate(kept)}
        stated = sorted(
            (h for h in self.hits if h.url in rank and normalise(h.license) != UNKNOWN),
            key=lambda h: rank[h.url],  # stable: (query, rank) within one URL
        )
        passing = (h for h in stated if allowed(normalise(h.license), self.accepted))
        return next(passing, stated[0] if stated else None)

    def licence(self) -> tuple[str, str | None]:
        """The normalised licence of the kept pixels and the attribution that goes with it."""
        source = self.licence_source()
        return (normalise(source.license), source.attribution) if source else (UNKNOWN, None)

    def licence_passes(self) -> bool:
        return allowed(self.licence()[0], self.accepted)


def _unique(items: object) -> list:
    return list(dict.fromkeys(items))  # type: ignore[call-overload]
