"""Openverse (api.openverse.org): openly licensed images with their licence and attribution.

Or-terms and exclude-terms have no Openverse parameter: or-terms are dropped, excluded words are
appended as `-word` (Openverse's query syntax excludes them). Photo-only maps to `category`.
"""

from __future__ import annotations

from typing import Any

from kgclip.config import OpenverseConfig
from kgclip.search.base import Found
from kgclip.search.web import WebBackend
from kgclip.tables import Query


class OpenverseBackend(WebBackend):
    name = "openverse"

    def __init__(self, cfg: OpenverseConfig, used_today: int = 0) -> None:
        super().__init__(cfg, used_today)
        self.ov = cfg
        self.page_size = cfg.page_size

    def endpoint(self) -> str:
        return self.ov.base_url.rstrip("/") + "/images/"

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        return ({"Authorization": f"Bearer {self.key}"} if self.key else {}), {}

    def params(self, query: Query, k: int, page: int) -> dict[str, Any]:
        text = " ".join([query.text, *(f"-{t}" for t in query.params.exclude_terms)])
        out: dict[str, Any] = {
            "q": text,
            "page": page + 1,
            "page_size": min(self.page_size, k),
            "mature": "false",
        }
        if self.ov.license:
            out["license"] = ",".join(self.ov.license)
        if query.params.photo_only and self.ov.category:
            out["category"] = self.ov.category
        return out

    def parse(self, data: Any) -> tuple[list[Found], bool]:
        results = [
            Found(
                url=r["url"],
                alt_text=r.get("title") or "",
                page_url=r.get("foreign_landing_url"),
                width=r.get("width"),
                height=r.get("height"),
                license=_licence(r),
                attribution=r.get("attribution"),
            )
            for r in data.get("results", [])
            if r.get("url")
        ]
        return results, data.get("page", 1) < data.get("page_count", 1)


def _licence(result: dict[str, Any]) -> str | None:
    code = result.get("license")
    if not code:
        return None
    version = result.get("license_version")
    return f"{code.upper()}-{version}" if version and code not in ("cc0", "pdm") else code.upper()
