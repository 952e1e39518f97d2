"""GBIF occurrence media (api.gbif.org): specimen and field photos of a taxon, licensed per item.

GBIF searches occurrences by taxon key, so a query takes two steps: `/species/match` resolves the
query text against the GBIF backbone (scientific names; most common names find nothing, and a
match only at a higher rank is no match, as it would bring a whole genus), then
`/occurrence/search` lists that taxon's occurrences with still images, `limit`/`offset` paged
(up to twice the pages `k` needs, to make up for skipped media). Exclude terms, or-terms and
photo-only have no meaning here and are dropped.

Every StillImage media item is a result. The `license` filter applies to the occurrence record,
but a media item may carry a stricter licence of its own (a CC BY record with a CC BY-NC photo):
the media's licence wins when it has one, and an item whose licence is not one of the configured
families, or cannot be read, is skipped. The ledger key covers the name lookup (the query text)
and the occurrence filters, not the taxon key the lookup returns.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from kgclip.config import GbifConfig
from kgclip.search.base import Found
from kgclip.search.web import WebBackend
from kgclip.tables import Query
from kgclip.workdir import digest_of

#: backbone match types that name the queried taxon itself (not NONE, not HIGHERRANK)
MATCHED = ("EXACT", "FUZZY")


class GbifBackend(WebBackend):
    name = "gbif"
    page_factor = 2  # media skipped for their licence leave pages short
    lookups = 1  # the backbone name match

    def __init__(self, cfg: GbifConfig, used_today: int = 0) -> None:
        super().__init__(cfg, used_today)
        self.gbif = cfg
        self.page_size = cfg.page_size
        self.families = {(_licence(code) or (code, ""))[0] for code in cfg.license}

    def endpoint(self) -> str:
        return self.gbif.base_url.rstrip("/") + "/occurrence/search"

    def match_params(self, query: Query) -> dict[str, Any]:
        return {"name": query.text}

    def params(self, query: Query, k: int, page: int) -> dict[str, Any]:
        """The occurrence filters of one page; `taxonKey` is added from the name match."""
        return {
            "mediaType": "StillImage",
            "license": list(self.gbif.license),
            "limit": min(self.page_size, k),
            "offset": page * min(self.page_size, k),
        }

    def request_key(self, query: Query, k: int) -> str:
        lookup = orjson.dumps(self.match_params(query), option=orjson.OPT_SORT_KEYS).decode()
        return digest_of(super().request_key(query, k), lookup)

    async def collect(self, query: Query, k: int) -> list[Found]:
        url = self.gbif.base_url.rstrip("/") + "/species/match"
        match = await self.get_json(self.match_params(query), url)
        if not match.get("usageKey") or match.get("matchType") not in MATCHED:
            return []
        found: list[Found] = []
        for page in range(self.page_factor * self._pages(k)):
            data = await self.get_json({**self.params(query, k, page), "taxonKey": match["usageKey"]})
            for record in data.get("results") or []:
                found.extend(self._media(record))
            if data.get("endOfRecords", True) or len(found) >= k:
                break
        return found

    def _media(self, record: dict[str, Any]) -> list[Found]:
        name = record.get("species") or record.get("scientificName") or ""
        common = record.get("vernacularName")
        page = f"{self.gbif.site_url.rstrip('/')}/occurrence/{record.get('key')}"
        out = []
        for media in record.get("media") or []:
            if media.get("type") != "StillImage" or not media.get("identifier"):
                continue
            licence = _licence(media.get("license") or record.get("license") or "")
            if licence is None or licence[0] not in self.families:
                continue
            people = [
                media.get("creator") or record.get("recordedBy"),
                media.get("rightsHolder") or record.get("rightsHolder"),
            ]
            out.append(
                Found(
                    url=media["identifier"],
                    alt_text=f"{common} ({name})" if common else name,
                    page_url=media.get("references") or page,
                    license=licence[1],
                    attribution=" / ".join(dict.fromkeys(p for p in people if p)) or None,
                )
            )
        return out


def _licence(text: str) -> tuple[str, str] | None:
    """(family, label) of a licence URL, GBIF code or name: ('CC_BY_NC', 'CC-BY-NC-4.0'); None if unread.

    The family ignores the version, so a CC BY 3.0 photo passes a CC_BY_4_0 filter.
    """
    t = text.strip().lower()
    if "publicdomain/mark" in t:
        return "CC0", "PDM"  # no rights reserved, as CC0
    if "publicdomain/zero" in t or t.startswith("cc0"):
        return "CC0", "CC0-1.0"
    url = re.search(r"licenses/([a-z-]+)/(\d\.\d)", t)
    code = re.fullmatch(r"cc[ _-]*(by(?:[ _-]+(?:nc|sa|nd))*)(?:[ _-]+(\d)[._](\d))?", t)
    if url:
        parts, version = url[1], url[2]
    elif code:
        parts, version = code[1], f"{code[2]}.{code[3]}" if code[2] else None
    else:
        return None
    family = "CC_" + re.sub(r"[ _-]+", "_", parts).upper()
    return family, family.replace("_", "-") + (f"-{version}" if version else "")
