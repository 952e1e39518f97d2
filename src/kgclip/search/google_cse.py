"""Google Custom Search JSON API in image mode (www.googleapis.com/customsearch/v1).

The API is closed to new customers and existing ones must leave it by 1 January 2027; this
backend serves harvests that still hold a key and an engine id (`cx`). It is the one web API
with EntityNet's own parameters: `orTerms`, `excludeTerms` (both space-joined) and
`imgType=photo` map one to one. It pages 10 results at a time with a 1-based `start` and stops at
100 results per query. There is no per-image licence: the `rights` option filters by licence,
but the results carry none, so `license` stays empty. `title` comes from the host page, not from
the image's alt attribute.
"""

from __future__ import annotations

from typing import Any

from kgclip.config import GoogleCseConfig
from kgclip.search.base import Found
from kgclip.search.web import WebBackend
from kgclip.tables import Query


class GoogleCseBackend(WebBackend):
    name = "google_cse"
    page_size = 10
    max_results = 100
    needs_key = True

    def __init__(self, cfg: GoogleCseConfig, used_today: int = 0) -> None:
        super().__init__(cfg, used_today)
        self.cse = cfg

    def endpoint(self) -> str:
        return self.cse.base_url

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        # Google APIs take the key in a header too: kept out of URLs, which transports log
        return {"X-goog-api-key": self.key}, {}

    def params(self, query: Query, k: int, page: int) -> dict[str, Any]:
        start = page * self.page_size
        out: dict[str, Any] = {
            "cx": self.cse.cx,  # the engine decides the result set, so it belongs in the ledger key
            "q": query.text,
            "searchType": "image",
            "num": min(self.page_size, min(k, self.max_results) - start),
            "start": start + 1,
            "safe": self.cse.safe,
        }
        if query.params.photo_only:
            out["imgType"] = "photo"
        if query.params.or_terms:
            out["orTerms"] = " ".join(query.params.or_terms)
        if query.params.exclude_terms:
            out["excludeTerms"] = " ".join(query.params.exclude_terms)
        if self.cse.rights:
            out["rights"] = "|".join(self.cse.rights)
        return out

    def parse(self, data: Any) -> tuple[list[Found], bool]:
        results = [
            Found(
                url=item["link"],
                alt_text=item.get("title") or "",
                page_url=(item.get("image") or {}).get("contextLink"),
                width=(item.get("image") or {}).get("width"),
                height=(item.get("image") or {}).get("height"),
            )
            for item in data.get("items") or []
            if item.get("link")
        ]
        return results, bool((data.get("queries") or {}).get("nextPage"))
