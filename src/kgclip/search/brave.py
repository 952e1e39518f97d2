"""Brave Search images (api.search.brave.com): a web image index with no licence information.

Brave's image endpoint has no or-terms, exclude-terms, photo filter or offset: excluded words are
folded into `q` as `-word` (Brave's query syntax), or-terms and photo-only are dropped, and one
request returns everything a query can get (`count` ≤ 200). `title` is page-derived text, the
closest thing Brave gives to alt text. The limits arrive in `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (one value per window, e.g. per second and per month): an exhausted short
window pauses the backend until it resets, an exhausted long one ends this run's requests.
"""

from __future__ import annotations

from typing import Any

import httpx

from kgclip.config import BraveConfig
from kgclip.search.base import Found
from kgclip.search.web import WebBackend
from kgclip.tables import Query

#: windows resetting sooner than this are waited out; longer ones stop the run
LONGEST_PAUSE_S = 3600.0


class BraveBackend(WebBackend):
    name = "brave"
    page_size = 200
    max_results = 200
    needs_key = True

    def __init__(self, cfg: BraveConfig, used_today: int = 0) -> None:
        super().__init__(cfg, used_today)
        self.brave = cfg

    def endpoint(self) -> str:
        return self.brave.base_url.rstrip("/") + "/images/search"

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        return {"X-Subscription-Token": self.key}, {}

    def params(self, query: Query, k: int, page: int) -> dict[str, Any]:
        return {
            "q": " ".join([query.text, *(f"-{t}" for t in query.params.exclude_terms)]),
            "count": min(k, self.page_size),
            "country": self.brave.country,
            "search_lang": self.brave.search_lang,
            "safesearch": self.brave.safesearch,
            "spellcheck": str(self.brave.spellcheck).lower(),
        }

    def parse(self, data: Any) -> tuple[list[Found], bool]:
        results = []
        for r in data.get("results") or []:
            props = r.get("properties") or {}
            if props.get("url"):
                results.append(
                    Found(
                        url=props["url"],
                        alt_text=r.get("title") or "",
                        page_url=r.get("url"),
                        width=props.get("width"),
                        height=props.get("height"),
                    )
                )
        return results, False

    def observe(self, response: httpx.Response) -> None:
        remaining = _numbers(response.headers.get("X-RateLimit-Remaining"))
        reset = _numbers(response.headers.get("X-RateLimit-Reset"))
        for left, seconds in zip(remaining, reset, strict=False):
            if left > 0:
                continue
            if seconds <= LONGEST_PAUSE_S:
                self.limiter.pause(seconds)
            else:
                self.limiter.stop(f"{self.name}: plan quota used up; it resets in {seconds / 86400:.1f} days")


def _numbers(header: str | None) -> list[float]:
    try:
        return [float(v) for v in (header or "").split(",") if v.strip()]
    except ValueError:
        return []
