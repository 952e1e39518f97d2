"""SerpAPI's `google_images` engine (serpapi.com): Google Images results scraped for you.

SerpAPI passes `q` to Google, so Google's query syntax folds what it has no parameter for:
excluded words become `-word`, or-terms become `(a OR b)`, and photo-only becomes
`tbs=itp:photo` (Google's image-type filter). `ijn` is the page number, 100 images a page, and
every page is a paid search. There is no licence per image. SerpAPI reports "no results" as an
`error` string inside an HTTP 200 body: that one is an empty answer; any other error is final.
"""

from __future__ import annotations

from typing import Any

from kgclip.config import SerpApiConfig
from kgclip.search.base import Found
from kgclip.search.web import WebBackend
from kgclip.tables import Query

NO_RESULTS = "hasn't returned any results"


class SerpApiBackend(WebBackend):
    name = "serpapi"
    page_size = 100
    needs_key = True

    def __init__(self, cfg: SerpApiConfig, used_today: int = 0) -> None:
        super().__init__(cfg, used_today)
        self.serp = cfg

    def endpoint(self) -> str:
        return self.serp.base_url.rstrip("/") + "/search.json"

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        # SerpAPI takes the key only as a query parameter; kgclip.redact masks it in logs
        return {}, {"api_key": self.key}

    def params(self, query: Query, k: int, page: int) -> dict[str, Any]:
        words = [query.text, *(f"-{t}" for t in query.params.exclude_terms)]
        if query.params.or_terms:
            words.append("(" + " OR ".join(query.params.or_terms) + ")")
        out: dict[str, Any] = {
            "engine": "google_images",
            "q": " ".join(words),
            "ijn": page,
            "gl": self.serp.gl,
            "hl": self.serp.hl,
            "safe": self.serp.safe,
        }
        if query.params.photo_only:
            out["tbs"] = "itp:photo"
        return out

    def api_error(self, data: Any) -> tuple[str, bool] | None:
        error = data.get("error")
        if not error or NO_RESULTS in str(error):
            return None
        return str(error)[:200], False

    def parse(self, data: Any) -> tuple[list[Found], bool]:
        raw = data.get("images_results") or []
        results = [
            Found(
                url=r["original"],
                alt_text=r.get("title") or "",
                page_url=r.get("link"),
                width=r.get("original_width"),
                height=r.get("original_height"),
            )
            for r in raw
            if r.get("original")
        ]
        return results, len(raw) >= self.page_size
