"""iNaturalist API v1: research-grade observation photos of a taxon, each with its own licence.

iNaturalist searches observations by taxon, not by text, so a query takes two steps: `/taxa`
resolves the query text to a taxon (an exact name or common-name match if one is offered, else
iNaturalist's best match; none means no results), then `/observations` lists that taxon's
photographed observations, oldest id first, paging with `id_above` because `page` stops at
10,000 records. Exclude terms, or-terms and photo-only have no meaning here and are dropped.

Every photo of an observation is a result: the URL's `square` size is swapped for the configured
one, the alt text is the observation taxon's common and scientific name, and photos whose
licence is not among `photo_license` are skipped (an observation may mix licences). The ledger
key covers the taxon lookup (the query text) and the observation filters, not the taxon id the
lookup returns.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from kgclip.config import INaturalistConfig
from kgclip.search.base import Found
from kgclip.search.web import WebBackend
from kgclip.tables import Query
from kgclip.workdir import digest_of

#: the longer side of each photo size (unconfirmed in apis.md; used to scale the stated dimensions)
SIZES = {"small": 240, "medium": 500, "large": 1024, "original": 2048}


class INaturalistBackend(WebBackend):
    name = "inaturalist"
    page_size = 200
    lookups = 1  # the taxon

    def __init__(self, cfg: INaturalistConfig, used_today: int = 0) -> None:
        super().__init__(cfg, used_today)
        self.inat = cfg
        self.licences = {code.lower() for code in cfg.photo_license}

    def endpoint(self) -> str:
        return self.inat.base_url.rstrip("/") + "/observations"

    def taxon_params(self, query: Query) -> dict[str, Any]:
        out: dict[str, Any] = {"q": query.text, "is_active": "true", "per_page": 10}
        if self.inat.rank:
            out["rank"] = self.inat.rank
        return out

    def params(self, query: Query, k: int, page: int) -> dict[str, Any]:
        """The observation filters; `taxon_id` and `id_above` are added from the answers."""
        return {
            "photos": "true",
            "quality_grade": self.inat.quality_grade,
            "photo_license": ",".join(self.inat.photo_license),
            "per_page": min(self.page_size, k),
            "order_by": "id",
            "order": "asc",
        }

    def request_key(self, query: Query, k: int) -> str:
        lookup = orjson.dumps(self.taxon_params(query), option=orjson.OPT_SORT_KEYS).decode()
        return digest_of(super().request_key(query, k), lookup)

    async def collect(self, query: Query, k: int) -> list[Found]:
        taxa = await self.get_json(self.taxon_params(query), self.inat.base_url.rstrip("/") + "/taxa")
        taxon = _best(query.text, [t for t in taxa.get("results") or [] if t.get("id")])
        if taxon is None:
            return []
        found: list[Found] = []
        last: int | None = None
        for page in range(self._pages(k)):
            params = {**self.params(query, k, page), "taxon_id": taxon["id"]}
            if last is not None:
                params["id_above"] = last
            answer = await self.get_json(params)
            observations = [obs for obs in answer.get("results") or [] if obs.get("id")]
            for obs in observations:
                found.extend(self._photos(obs, obs.get("taxon") or taxon))
            if not observations or len(observations) < params["per_page"] or len(found) >= k:
                break
            last = max(obs["id"] for obs in observations)
        return found

    def _photos(self, obs: dict[str, Any], taxon: dict[str, Any]) -> list[Found]:
        common, scientific = taxon.get("preferred_common_name"), taxon.get("name") or ""
        alt = f"{common} ({scientific})" if common else scientific
        page = obs.get("uri") or f"{self.inat.site_url.rstrip('/')}/observations/{obs['id']}"
        out = []
        for photo in obs.get("photos") or []:
            code = (photo.get("license_code") or "").lower()
            if not photo.get("url") or code not in self.licences:
                continue
            width, height = _scaled(photo.get("original_dimensions") or {}, SIZES[self.inat.photo_size])
            out.append(
                Found(
                    url=re.sub(r"/square(\.\w+)", rf"/{self.inat.photo_size}\1", photo["url"]),
                    alt_text=alt,
                    page_url=page,
                    width=width,
                    height=height,
                    license=code.upper(),
                    attribution=photo.get("attribution"),
                )
            )
        return out


def _best(text: str, taxa: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A taxon whose name, common name or matched term is the query text, else the first."""
    wanted = text.casefold()
    for taxon in taxa:
        names = (taxon.get("name"), taxon.get("preferred_common_name"), taxon.get("matched_term"))
        if any(n and n.casefold() == wanted for n in names):
            return taxon
    return taxa[0] if taxa else None


def _scaled(dims: dict[str, Any], longest: int) -> tuple[int | None, int | None]:
    width, height = dims.get("width"), dims.get("height")
    if not width or not height:
        return None, None
    scale = min(1.0, longest / max(width, height))
    return round(width * scale), round(height * scale)
