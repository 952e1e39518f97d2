"""Wikimedia Commons (MediaWiki Action API): file search with licence and author in one call.

A `generator=search` over the File namespace with `prop=imageinfo` returns each file's URL, size,
type and `extmetadata` (HTML strings: licence, artist, description). CirrusSearch understands
`-word`, so excluded words are folded into the search text; photo-only becomes
`filetype:bitmap` (no drawings, PDFs or videos); or-terms are dropped, as file pages rarely name
the type. Pages come with an `index` (the search rank) and a `continue` block; the offset it
names is `gsroffset`, so each page's offset is known in advance and the ledger key stays fixed.

Wikimedia asks for one request at a time, a descriptive User-Agent (WebBackend sends one) and
`maxlag` on reads; a lagged server answers HTTP 200 with an `error` body, which is retried after
its Retry-After, while any other error code is recorded as final. Originals can be tens of
megapixels, so by default a 1280-pixel thumbnail is asked for instead. Files of other types
(SVG, PDF, video) are skipped; to make up for them a query pages on, up to twice the pages `k`
needs.
"""

from __future__ import annotations

import html
import re
from typing import Any

from kgclip.config import CommonsConfig
from kgclip.search.base import Found
from kgclip.search.web import WebBackend
from kgclip.tables import Query

METADATA = "ImageDescription|Artist|LicenseShortName|LicenseUrl|UsageTerms|Credit"
#: MediaWiki error codes that mean "not now" rather than "never"
TRANSIENT = ("maxlag", "ratelimited", "readonly", "internal_api_error")


class CommonsBackend(WebBackend):
    name = "commons"
    page_factor = 2  # files skipped for their type leave pages short

    def __init__(self, cfg: CommonsConfig, used_today: int = 0) -> None:
        super().__init__(cfg, used_today)
        self.commons = cfg
        self.page_size = cfg.page_size

    def endpoint(self) -> str:
        return self.commons.base_url

    def params(self, query: Query, k: int, page: int) -> dict[str, Any]:
        words = [query.text, *(f"-{t}" for t in query.params.exclude_terms)]
        if query.params.photo_only:
            words.append("filetype:bitmap")
        limit = min(self.page_size, k)
        out: dict[str, Any] = {
            "action": "query",
            "format": "json",
            "formatversion": 2,
            "generator": "search",
            "gsrsearch": " ".join(words),
            "gsrnamespace": 6,
            "gsrlimit": limit,
            "gsroffset": page * limit,
            "prop": "imageinfo",
            "iiprop": "url|size|mime|extmetadata",
            "iiextmetadatafilter": METADATA,
            "iiextmetadatalanguage": "en",
            "maxlag": self.commons.maxlag,
        }
        if self.commons.thumb_width:
            out["iiurlwidth"] = self.commons.thumb_width
        return out

    def api_error(self, data: Any) -> tuple[str, bool] | None:
        error = data.get("error")
        if not isinstance(error, dict):
            return None
        code = str(error.get("code", "unknown"))
        return f"{code}: {str(error.get('info', ''))[:200]}", code.startswith(TRANSIENT)

    def parse(self, data: Any) -> tuple[list[Found], bool]:
        pages = sorted((data.get("query") or {}).get("pages") or [], key=lambda p: p.get("index", 0))
        results = [f for f in map(self._found, pages) if f is not None]
        return results, "gsroffset" in (data.get("continue") or {})

    def _found(self, page: dict[str, Any]) -> Found | None:
        info = (page.get("imageinfo") or [{}])[0]
        if not info.get("url") or info.get("mime") not in self.commons.mime_types:
            return None
        meta = {k: _text(v.get("value")) for k, v in (info.get("extmetadata") or {}).items()}
        name = re.sub(r"\.[A-Za-z0-9]+$", "", page.get("title", "").removeprefix("File:"))
        alt = meta.get("ImageDescription") if self.commons.alt_text == "description" else None
        thumb = bool(info.get("thumburl"))
        return Found(
            url=info["thumburl"] if thumb else info["url"],
            alt_text=alt or name.replace("_", " "),
            page_url=info.get("descriptionurl"),
            width=info.get("thumbwidth" if thumb else "width"),
            height=info.get("thumbheight" if thumb else "height"),
            license=meta.get("LicenseShortName") or None,
            attribution=meta.get("Artist") or meta.get("Credit") or None,
        )


def _text(value: Any) -> str:
    """extmetadata values are HTML: tags dropped, entities decoded, whitespace collapsed."""
    if value is None:
        return ""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", str(value))).split())
