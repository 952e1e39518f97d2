"""Brave, Google CSE, SerpAPI, Commons, iNaturalist and GBIF against loopback APIs speaking their JSON.

Each handler answers in the documented response shape (docs: shared reference apis.md §1-3, 6-8)
from one small world of koala and lion photos, so the same behaviours are checked for every backend:
normalised results, the parameters sent, paging up to k, empty answers, transient faults, keys.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
from pydantic import ValidationError

from kgclip.config import (
    BraveConfig,
    CommonsConfig,
    GbifConfig,
    GoogleCseConfig,
    INaturalistConfig,
    SerpApiConfig,
    WebBackendConfig,
    parse,
)
from kgclip.pipeline import StageContext
from kgclip.search import stage as search_stage
from kgclip.search.brave import BraveBackend
from kgclip.search.commons import CommonsBackend
from kgclip.search.gbif import GbifBackend
from kgclip.search.gbif import _licence as gbif_licence
from kgclip.search.google_cse import GoogleCseBackend
from kgclip.search.inaturalist import INaturalistBackend
from kgclip.search.serpapi import SerpApiBackend
from kgclip.search.web import SearchError, WebBackend
from kgclip.tables import Hit, Query, QueryParams, Rejected, read_records, write_records
from kgclip.workdir import Workdir
from web_api_server import JsonApi

# -- the world: koala and lion photos --------------------------------------------------------------

SPECIES = {
    "koala": {"sci": "Phascolarctos cinereus", "n": 30, "taxon": 42983, "usage": 2440012},
    "lion": {"sci": "Panthera leo", "n": 260, "taxon": 41964, "usage": 5219404},
}
LICENCES = ["cc-by", "cc0", "cc-by-sa"]


def photos(name: str) -> list[dict[str, Any]]:
    return [
        {
            "i": i,
            "name": name,
            "title": f"{name} photo {i}",
            "url": f"https://img.example/{name}/{i}.jpg",
            "page": f"https://pages.example/{name}/{i}",
            "width": 1600 + i,
            "height": 1200,
            "artist": f"Photographer {i}",
        }
        for i in range(SPECIES[name]["n"])
    ]


PHOTOS = {name: photos(name) for name in SPECIES}


def matching(q: str) -> list[dict[str, Any]]:
    """A search engine that knows two words: the query's first word picks the species."""
    return PHOTOS.get(q.split()[0].lower(), []) if q.strip() else []


def J(body: Any, status: int = 200, headers: dict[str, str] | None = None):
    return status, headers or {}, orjson.dumps(body), "application/json"


# -- handlers in each service's response shape ------------------------------------------------------


def brave(path: str, params: dict, headers: dict) -> dict:
    assert path == "/res/v1/images/search"
    found = matching(params["q"])[: int(params["count"])]
    return {
        "type": "images",
        "query": {"original": params["q"], "altered": None, "spellcheck_off": True},
        "results": [
            {
                "type": "image_result",
                "title": f"{p['title']} - Pages Example",
                "url": p["page"],
                "source": "pages.example",
                "page_fetched": "2025-06-01T00:00:00Z",
                "thumbnail": {"src": f"https://imgs.search.brave.com/{p['i']}", "width": 500, "height": 375},
                "properties": {
                    "url": p["url"],
                    "placeholder": f"https://imgs.search.brave.com/ph/{p['i']}",
                    # original sizes arrived in 2025 and may be null
                    "width": None if p["i"] == 1 else p["width"],
                    "height": None if p["i"] == 1 else p["height"],
                },
                "meta_url": {"scheme": "https", "hostname": "pages.example", "path": f"› {p['name']}"},
                "confidence": "high",
            }
            for p in found
        ],
        "extra": {"might_be_offensive": False},
    }


def google(path: str, params: dict, headers: dict) -> dict:
    assert path == "/customsearch/v1"
    start, num = int(params["start"]), int(params["num"])
    assert 1 <= num <= 10 and start + num - 1 <= 100
    found = matching(params["q"])[:100]
    items = found[start - 1 : start - 1 + num]
    out: dict[str, Any] = {
        "kind": "customsearch#search",
        "queries": {"request": [{"startIndex": start, "count": num, "searchType": "image"}]},
        "searchInformation": {"totalResults": str(len(found))},
    }
    if start - 1 + num < len(found):
        out["queries"]["nextPage"] = [{"startIndex": start + num, "count": num}]
    if items:  # Google leaves `items` out when there are none
        out["items"] = [
            {
                "kind": "customsearch#result",
                "title": f"{p['title']} | Pages",
                "link": p["url"],
                "displayLink": "pages.example",
                "snippet": p["title"],
                "mime": "image/jpeg",
                "fileFormat": "image/jpeg",
                "image": {
                    "contextLink": p["page"],
                    "width": p["width"],
                    "height": p["height"],
                    "byteSize": 123456,
                    "thumbnailLink": f"https://encrypted-tbn0.gstatic.com/{p['i']}",
                    "thumbnailWidth": 150,
                    "thumbnailHeight": 113,
                },
            }
            for p in items
        ]
    return out


def serpapi(path: str, params: dict, headers: dict) -> dict:
    assert path == "/search.json" and params["engine"] == "google_images"
    ijn = int(params["ijn"])
    page = matching(params["q"])[ijn * 100 : (ijn + 1) * 100]
    meta = {"search_metadata": {"status": "Success"}, "search_parameters": {"q": params["q"]}}
    if not page:
        return {**meta, "error": "Google hasn't returned any results for this query."}
    return {
        **meta,
        "images_results": [
            {
                "position": ijn * 100 + n + 1,
                "thumbnail": f"https://serpapi.example/thumb/{p['i']}",
                "related_content_id": f"rc{p['i']}",
                "serpapi_related_content_link": f"https://serpapi.example/related/{p['i']}",
                "source": "pages.example",
                "title": p["title"],
                "link": p["page"],
                "original": p["url"],
                "original_width": p["width"],
                "original_height": p["height"],
                "is_product": False,
            }
            for n, p in enumerate(page)
        ],
    }


def commons_file(p: dict[str, Any], index: int, width: int | None) -> dict[str, Any]:
    mime = {2: "application/pdf", 3: "image/svg+xml"}.get(p["i"], "image/jpeg")
    info: dict[str, Any] = {
        "url": p["url"],
        "descriptionurl": f"https://commons.wikimedia.org/wiki/File:{p['title']}.jpg",
        "width": p["width"],
        "height": p["height"],
        "size": 2_345_678,
        "mime": mime,
        "extmetadata": {
            "ImageDescription": {"value": f"<p>A <b>{p['name']}</b> &amp; its joey</p>", "source": "commons"},
            "Artist": {
                "value": f'<a href="//commons.wikimedia.org/wiki/User:P{p["i"]}">{p["artist"]}</a>',
                "source": "commons-desc-page",
            },
            "LicenseShortName": {"value": "CC BY-SA 4.0", "source": "commons-desc-page"},
            "LicenseUrl": {"value": "https://creativecommons.org/licenses/by-sa/4.0", "source": "commons"},
            "Credit": {"value": '<span class="int-own-work">Own work</span>', "source": "commons"},
        },
    }
    if width:
        info |= {
            "thumburl": p["url"].replace("img.example", f"thumbs.example/{width}px"),
            "thumbwidth": width,
            "thumbheight": round(p["height"] * width / p["width"]),
        }
    return {
        "pageid": 1000 + p["i"],
        "ns": 6,
        "title": f"File:{p['title']}.jpg",
        "index": index,
        "imageinfo": [info],
    }


def commons(path: str, params: dict, headers: dict) -> dict:
    assert path == "/w/api.php" and params["generator"] == "search"
    limit, offset = int(params["gsrlimit"]), int(params["gsroffset"])
    found = matching(params["gsrsearch"])
    page = found[offset : offset + limit]
    if not page:
        return {"batchcomplete": True}
    width = int(params["iiurlwidth"]) if "iiurlwidth" in params else None
    files = [commons_file(p, offset + n + 1, width) for n, p in enumerate(page)]
    out: dict[str, Any] = {"batchcomplete": True, "query": {"pages": files[::-1]}}  # pageid order, not rank
    if offset + limit < len(found):
        out["continue"] = {"gsroffset": offset + limit, "continue": "gsroffset||"}
    return out


TAXA = {
    "koala": [{"name": "Phascolarctos cinereus", "common": "Koala", "id": 42983}],
    # the best text match first, the exact common name second: the backend must pick the lion
    "lion": [
        {"name": "Cyanea capillata", "common": "Lion's Mane Jellyfish", "id": 47700},
        {"name": "Panthera leo", "common": "Lion", "id": 41964},
    ],
}


def taxon(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": t["id"],
        "name": t["name"],
        "rank": "species",
        "rank_level": 10,
        "preferred_common_name": t["common"],
        "matched_term": t["common"],
        "is_active": True,
        "ancestor_ids": [48460, 1, 2, t["id"]],
        "wikipedia_url": f"https://en.wikipedia.org/wiki/{t['common']}",
        "default_photo": {"url": "https://static.example/square.jpg", "license_code": "cc-by"},
    }


def observation(t: dict[str, Any], i: int) -> dict[str, Any]:
    oid = 1000 + 7 * i
    pics = [
        {
            "id": 10 * oid,
            "license_code": LICENCES[i % 3],
            "attribution": f"(c) Photographer {i}, some rights reserved ({LICENCES[i % 3].upper()})",
            "url": f"https://inaturalist-open-data.s3.amazonaws.com/photos/{10 * oid}/square.jpg",
            "original_dimensions": {"width": 2048, "height": 1536},
        }
    ]
    if i % 5 == 0:  # a second photo under a licence the harvest does not accept
        pics.append(
            {**pics[0], "id": 10 * oid + 1, "license_code": "cc-by-nc", "url": pics[0]["url"] + "?nc"}
        )
    return {
        "id": oid,
        "uuid": f"uuid-{oid}",
        "quality_grade": "research",
        "observed_on": "2024-05-01",
        "uri": f"https://www.inaturalist.org/observations/{oid}",
        "geojson": {"type": "Point", "coordinates": [153.0, -27.5]},
        "taxon": taxon(t),
        "photos": pics,
        "observation_photos": [{"id": p["id"], "position": n, "photo": p} for n, p in enumerate(pics)],
    }


OBSERVATIONS = {
    t["id"]: [observation(t, i) for i in range(SPECIES[name]["n"])]
    for name in SPECIES
    for t in TAXA[name]
    if t["name"] == SPECIES[name]["sci"]
}


def inaturalist(path: str, params: dict, headers: dict) -> dict:
    if path == "/v1/taxa":
        found = [taxon(t) for ts in TAXA.values() for t in ts if params["q"].lower() in t["common"].lower()]
        return {"total_results": len(found), "page": 1, "per_page": 10, "results": found}
    assert path == "/v1/observations" and params["order_by"] == "id" and params["order"] == "asc"
    above, per_page = int(params.get("id_above", 0)), int(params["per_page"])
    found = [o for o in OBSERVATIONS.get(int(params["taxon_id"]), []) if o["id"] > above]
    return {"total_results": len(found), "page": 1, "per_page": per_page, "results": found[:per_page]}


BY_URL = "http://creativecommons.org/licenses/by/4.0/legalcode"


def occurrence(name: str, p: dict[str, Any]) -> dict[str, Any]:
    i, sci = p["i"], SPECIES[name]["sci"]
    media: list[dict[str, Any]] = [
        {
            "type": "StillImage",
            "format": "image/jpeg",
            "identifier": p["url"],
            "created": "2024-05-01T10:00:00",
            "creator": p["artist"],
            "publisher": "iNaturalist",
            "rightsHolder": p["artist"],
        }
    ]
    if i % 2 == 0:
        media[0]["references"] = p["page"]
    if i % 3 == 2:  # stricter than the record's CC BY: must be skipped
        media[0]["license"] = "http://creativecommons.org/licenses/by-nc/4.0/"
    elif i % 3 == 1:
        media[0]["license"] = "http://creativecommons.org/publicdomain/zero/1.0/"
    if i == 0:
        media.append({"type": "Sound", "format": "audio/mpeg", "identifier": "https://snd.example/0.mp3"})
    return {
        "key": 4_000_000_000 + i,
        "datasetKey": "50c9509d-22c7-4a22-a47d-8c48425ef4a7",
        "basisOfRecord": "HUMAN_OBSERVATION",
        "license": BY_URL,
        "scientificName": f"{sci} (Author, 1817)",
        "acceptedScientificName": f"{sci} (Author, 1817)",
        "taxonKey": SPECIES[name]["usage"],
        "kingdom": "Animalia",
        "species": sci,
        "vernacularName": name.capitalize() if i % 2 == 0 else None,
        "rightsHolder": p["artist"],
        "media": media,
    }


def gbif(path: str, params: dict, headers: dict) -> dict:
    if path == "/v1/species/match":
        for s in SPECIES.values():
            if params["name"].lower() == s["sci"].lower():
                return {
                    "usageKey": s["usage"],
                    "scientificName": f"{s['sci']} (Author, 1817)",
                    "canonicalName": s["sci"],
                    "rank": "SPECIES",
                    "status": "ACCEPTED",
                    "confidence": 99,
                    "matchType": "EXACT",
                    "kingdom": "Animalia",
                    "synonym": False,
                }
        if params["name"].startswith("Panthera "):
            return {"usageKey": 5219173, "rank": "GENUS", "matchType": "HIGHERRANK", "confidence": 94}
        return {"confidence": 100, "matchType": "NONE", "synonym": False}
    assert path == "/v1/occurrence/search" and params["mediaType"] == "StillImage"
    limit, offset = int(params["limit"]), int(params["offset"])
    name = next(n for n, s in SPECIES.items() if s["usage"] == int(params["taxonKey"]))
    records = [occurrence(name, p) for p in PHOTOS[name]]
    return {
        "offset": offset,
        "limit": limit,
        "endOfRecords": offset + limit >= len(records),
        "count": len(records),
        "results": records[offset : offset + limit],
    }


# -- one table of backends -------------------------------------------------------------------------

FAST = {"contact": "tests@example.org", "rate_per_s": 200, "backoff_s": 0.01}
SECRETS = {
    "BRAVE_API_KEY": "brave-s3cret",
    "GOOGLE_API_KEY": "google-s3cret",
    "SERPAPI_API_KEY": "serp-s3cret",
}


@dataclass
class Spec:
    name: str
    make: Callable[..., WebBackend]  # (api url, **config overrides)
    handler: Callable[[str, dict, dict], Any]
    text: str  # finds koalas
    none: str  # finds nothing
    paging: tuple[str, int, int, int]  # text, k, HTTP requests, results
    key_env: str | None = None

    def __str__(self) -> str:
        return self.name


SPECS = [
    Spec(
        "brave",
        lambda url, **kw: BraveBackend(BraveConfig(base_url=url + "/res/v1", **{**FAST, **kw})),
        brave,
        "koala",
        "zebra",
        ("lion", 250, 1, 200),  # one request holds all Brave gives: count ≤ 200, no offset
        "BRAVE_API_KEY",
    ),
    Spec(
        "google_cse",
        lambda url, **kw: GoogleCseBackend(
            GoogleCseConfig(base_url=url + "/customsearch/v1", cx="engine-1", **{**FAST, **kw})
        ),
        google,
        "koala",
        "zebra",
        ("lion", 150, 10, 100),  # 10 a call, 100 a query
        "GOOGLE_API_KEY",
    ),
    Spec(
        "serpapi",
        lambda url, **kw: SerpApiBackend(SerpApiConfig(base_url=url, **{**FAST, **kw})),
        serpapi,
        "koala",
        "zebra",
        ("lion", 150, 2, 150),
        "SERPAPI_API_KEY",
    ),
    Spec(
        "commons",
        lambda url, **kw: CommonsBackend(
            CommonsConfig(base_url=url + "/w/api.php", **{**FAST, "page_size": 10, **kw})
        ),
        commons,
        "koala",
        "zebra",
        ("koala", 25, 3, 25),  # 30 files, a PDF and an SVG among them skipped
    ),
    Spec(
        "inaturalist",
        lambda url, **kw: INaturalistBackend(INaturalistConfig(base_url=url + "/v1", **{**FAST, **kw})),
        inaturalist,
        "koala",
        "zebra",
        ("lion", 250, 3, 250),  # the taxon, then 200 observations and the rest with id_above
    ),
    Spec(
        "gbif",
        lambda url, **kw: GbifBackend(GbifConfig(base_url=url + "/v1", **{**FAST, "page_size": 10, **kw})),
        gbif,
        "Phascolarctos cinereus",
        "Vulpes zerda",
        ("Panthera leo", 25, 5, 25),  # the match, then 4 pages of 10 records (NC media skipped)
    ),
]
KEYED = [s for s in SPECS if s.key_env]


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    for var, value in SECRETS.items():
        monkeypatch.setenv(var, value)


def query(text: str, kind: str = "entity", photo: bool = True, ors: tuple[str, ...] = ()) -> Query:
    return Query(f"q-{text}", kind, text, "wn:1", None, QueryParams(list(ors), ["cartoon"], photo))


def search(backend: WebBackend, q: Query, k: int):
    async def go():
        try:
            return await backend.search(q, k)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def searches(backend: WebBackend, texts: list[str], k: int):
    """One after another, in one event loop (as the stage asks them)."""

    async def go():
        try:
            return [await backend.search(query(t), k) for t in texts]
        finally:
            await backend.aclose()

    return asyncio.run(go())


def run(spec: Spec, text: str, k: int, faults=(), **kw):
    with JsonApi(spec.handler) as api:
        api.faults.extend(faults)
        backend = spec.make(api.url, **kw)
        out = search(backend, query(text), k)
    assert backend.requests == len(api.requests)
    return out, api.requests


# -- per backend: parameters sent and results normalised ------------------------------------------


def test_brave_parameters_and_results():
    with JsonApi(brave) as api:
        out = search(SPECS[0].make(api.url, country="AU"), query("koala", ors=("animal",)), 20)
        sent = api.requests[0]
    assert sent.params == {
        "q": "koala -cartoon",  # the or-term is dropped
        "count": "20",
        "country": "AU",
        "search_lang": "en",
        "safesearch": "strict",
        "spellcheck": "false",
    }
    assert (
        sent.headers["x-subscription-token"] == "brave-s3cret"
        and "tests@example.org" in sent.headers["user-agent"]
    )
    first, second = out.results[:2]
    assert (first.url, first.page_url, first.alt_text, first.width, first.height) == (
        "https://img.example/koala/0.jpg",
        "https://pages.example/koala/0",
        "koala photo 0 - Pages Example",
        1600,
        1200,
    )
    assert (second.width, second.height, first.license, first.attribution) == (None, None, None, None)
    assert len(out.results) == 20


def test_brave_rate_limit_headers_pause_and_stop():
    body = brave("/res/v1/images/search", {"q": "koala", "count": "5"}, {})
    per_second_spent = {"X-RateLimit-Remaining": "0, 900", "X-RateLimit-Reset": "0.3, 86400"}
    month_spent = {"X-RateLimit-Remaining": "1, 0", "X-RateLimit-Reset": "1, 2000000"}
    with JsonApi(brave) as api:
        # the per-second window is spent: the next request waits for its reset
        api.faults.append(J(body, headers=per_second_spent))
        searches(SPECS[0].make(api.url), ["koala", "lion"], 5)
        assert api.requests[1].at - api.requests[0].at >= 0.25
        # the monthly window is spent: no more requests this run, and the query is left for later
        api.faults.append(J(body, headers=month_spent))
        first, second = searches(SPECS[0].make(api.url), ["koala", "lion"], 5)
        assert len(api.requests) == 3
    assert len(first.results) == 5 and second.retryable and "quota" in second.failure


def test_google_cse_parameters_and_results():
    with JsonApi(google) as api:
        backend = SPECS[1].make(api.url, rights=["cc_publicdomain", "cc_attribute"])
        out = search(backend, query("koala", ors=("animal", "marsupial")), 15)
        first, second = api.requests
    assert first.params == {
        "cx": "engine-1",
        "q": "koala",
        "searchType": "image",
        "num": "10",
        "start": "1",
        "safe": "active",
        "imgType": "photo",
        "orTerms": "animal marsupial",
        "excludeTerms": "cartoon",
        "rights": "cc_publicdomain|cc_attribute",
    }
    assert first.headers["x-goog-api-key"] == "google-s3cret"  # a header, out of logged URLs
    assert (second.params["start"], second.params["num"]) == ("11", "5")
    koala = out.results[0]
    assert (koala.url, koala.page_url, koala.alt_text, koala.width, koala.height, koala.license) == (
        "https://img.example/koala/0.jpg",
        "https://pages.example/koala/0",
        "koala photo 0 | Pages",
        1600,
        1200,
        None,
    )
    assert len(out.results) == 15
    with JsonApi(google) as api:
        search(SPECS[1].make(api.url), query("koala", photo=False), 5)
        assert "imgType" not in api.requests[0].params and "orTerms" not in api.requests[0].params


def test_serpapi_parameters_results_and_errors():
    with JsonApi(serpapi) as api:
        out = search(SPECS[2].make(api.url), query("koala", ors=("animal", "marsupial")), 10)
        sent = api.requests[0]
    assert sent.params == {
        "engine": "google_images",
        "q": "koala -cartoon (animal OR marsupial)",
        "ijn": "0",
        "gl": "us",
        "hl": "en",
        "safe": "active",
        "tbs": "itp:photo",
        "api_key": "serp-s3cret",
    }
    koala = out.results[3]
    assert (koala.url, koala.page_url, koala.alt_text, koala.width, koala.height) == (
        "https://img.example/koala/3.jpg",
        "https://pages.example/koala/3",
        "koala photo 3",
        1603,
        1200,
    )
    # an error other than "no results" is final: asking again will not help
    with JsonApi(serpapi) as api:
        api.faults.append(J({"error": "Unsupported `zz` value for `gl` parameter."}))
        bad = search(SPECS[2].make(api.url), query("koala"), 10)
        assert len(api.requests) == 1
    assert not bad.retryable and "Unsupported" in bad.failure


def test_commons_parameters_and_results():
    with JsonApi(commons) as api:
        out = search(SPECS[3].make(api.url), query("koala"), 8)
        described = search(
            SPECS[3].make(api.url, alt_text="description", thumb_width=None), query("koala"), 8
        )
        sent = api.requests[0]
    assert sent.params == {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "generator": "search",
        "gsrsearch": "koala -cartoon filetype:bitmap",
        "gsrnamespace": "6",
        "gsrlimit": "8",
        "gsroffset": "0",
        "prop": "imageinfo",
        "iiprop": "url|size|mime|extmetadata",
        "iiextmetadatafilter": "ImageDescription|Artist|LicenseShortName|LicenseUrl|UsageTerms|Credit",
        "iiextmetadatalanguage": "en",
        "maxlag": "5",
        "iiurlwidth": "1280",
    }
    # search rank order (by `index`), the PDF and the SVG skipped and made up for by a second page
    names = [f.url.rsplit("/", 1)[1] for f in out.results]
    assert (
        names == [f"{i}.jpg" for i in (0, 1, 4, 5, 6, 7, 8, 9)] and api.requests[1].params["gsroffset"] == "8"
    )
    koala = out.results[0]
    assert (koala.url, koala.width, koala.height) == ("https://thumbs.example/1280px/koala/0.jpg", 1280, 960)
    assert (koala.alt_text, koala.license, koala.attribution, koala.page_url) == (
        "koala photo 0",
        "CC BY-SA 4.0",
        "Photographer 0",
        "https://commons.wikimedia.org/wiki/File:koala photo 0.jpg",
    )
    original = described.results[0]
    assert (original.url, original.width, original.alt_text) == (
        "https://img.example/koala/0.jpg",
        1600,
        "A koala & its joey",
    )


def test_commons_mediawiki_errors_in_a_200_body():
    maxlag = {
        "error": {"code": "maxlag", "info": "Waiting for db1: 6 seconds lagged.", "host": "db1", "lag": 6}
    }
    with JsonApi(commons) as api:
        api.faults.append(J(maxlag, headers={"Retry-After": "0.2", "X-Database-Lag": "6"}))
        out = search(SPECS[3].make(api.url), query("koala"), 5)
        # the retry, then a second page that makes up for the PDF and the SVG
        assert len(api.requests) == 3 and api.requests[1].at - api.requests[0].at >= 0.15
        assert len(out.results) == 5 and out.failure is None
        # other codes are final: recorded, not asked again
        api.faults.append(J({"error": {"code": "badvalue", "info": "Unrecognized value for parameter"}}))
        bad = search(SPECS[3].make(api.url), query("koala"), 5)
        assert len(api.requests) == 4
        assert not bad.retryable and bad.failure.startswith("commons: badvalue")
        # a server that stays lagged leaves the query for a later run
        api.faults.extend([J(maxlag, headers={"Retry-After": "0.01"})] * 2)
        lagged = search(SPECS[3].make(api.url, max_retries=1), query("koala"), 5)
    assert lagged.retryable and "maxlag" in lagged.failure


def test_inaturalist_two_steps_and_results():
    with JsonApi(inaturalist) as api:
        out = search(SPECS[4].make(api.url), query("lion"), 12)
        lookup, listing = api.requests
    assert lookup.path == "/v1/taxa" and lookup.params == {"q": "lion", "is_active": "true", "per_page": "10"}
    assert listing.params == {
        "taxon_id": "41964",  # the exact common name, not the first match
        "photos": "true",
        "quality_grade": "research",
        "photo_license": "cc0,cc-by,cc-by-sa",
        "per_page": "12",
        "order_by": "id",
        "order": "asc",
    }
    lion = out.results[0]
    assert (lion.url, lion.page_url, lion.alt_text, lion.width, lion.height) == (
        "https://inaturalist-open-data.s3.amazonaws.com/photos/10000/large.jpg",
        "https://www.inaturalist.org/observations/1000",
        "Lion (Panthera leo)",
        1024,
        768,
    )
    assert (lion.license, lion.attribution) == ("CC-BY", "(c) Photographer 0, some rights reserved (CC-BY)")
    assert [f.license for f in out.results[:3]] == ["CC-BY", "CC0", "CC-BY-SA"]
    assert not any("?nc" in f.url for f in out.results)  # the CC BY-NC second photos are skipped
    with JsonApi(inaturalist) as api:
        small = search(SPECS[4].make(api.url, photo_size="small", rank="species"), query("koala"), 3)
        assert api.requests[0].params["rank"] == "species"
    assert small.results[0].url.endswith("/small.jpg") and small.results[0].width == 240


def test_inaturalist_pages_with_id_above():
    _, sent = run(SPECS[4], "lion", 250)
    assert "id_above" not in sent[1].params and sent[2].params["id_above"] == str(1000 + 7 * 199)


def test_gbif_two_steps_and_media_licences():
    with JsonApi(gbif) as api:
        out = search(SPECS[5].make(api.url), query("Phascolarctos cinereus"), 6)
        match, listing, more = api.requests
    assert match.path == "/v1/species/match" and match.params == {"name": "Phascolarctos cinereus"}
    assert listing.path == "/v1/occurrence/search"
    assert parse_qs(listing.query) == {
        "mediaType": ["StillImage"],
        "license": ["CC0_1_0", "CC_BY_4_0"],
        "limit": ["6"],
        "offset": ["0"],
        "taxonKey": ["2440012"],
    }
    # records 2 and 5 carry CC BY-NC media under a CC BY record: skipped, and made up for by a second page;
    # record 0's sound is not an image
    assert parse_qs(more.query)["offset"] == ["6"]
    assert [f.url.rsplit("/", 1)[1] for f in out.results] == [f"{i}.jpg" for i in (0, 1, 3, 4, 6, 7)]
    first, second = out.results[:2]
    assert (first.page_url, first.alt_text, first.license, first.attribution) == (
        "https://pages.example/koala/0",
        "Koala (Phascolarctos cinereus)",
        "CC-BY-4.0",  # the record's, as the media item names none
        "Photographer 0",
    )
    assert (second.page_url, second.alt_text, second.license) == (
        "https://www.gbif.org/occurrence/4000000001",
        "Phascolarctos cinereus",
        "CC0-1.0",
    )
    assert (first.width, first.height) == (None, None)
    # a match only at genus level would bring the whole genus: no results, no occurrence request
    with JsonApi(gbif) as api:
        assert search(SPECS[5].make(api.url), query("Panthera nonexistens"), 5).results == []
        assert len(api.requests) == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("http://creativecommons.org/licenses/by-nc/4.0/legalcode", ("CC_BY_NC", "CC-BY-NC-4.0")),
        ("https://creativecommons.org/licenses/by-sa/3.0/", ("CC_BY_SA", "CC-BY-SA-3.0")),
        ("CC_BY_4_0", ("CC_BY", "CC-BY-4.0")),
        ("CC BY-NC 4.0", ("CC_BY_NC", "CC-BY-NC-4.0")),
        ("CC0_1_0", ("CC0", "CC0-1.0")),
        ("http://creativecommons.org/publicdomain/mark/1.0/", ("CC0", "PDM")),
        ("All rights reserved", None),
        ("", None),
    ],
)
def test_gbif_licence_labels(text, expected):
    assert gbif_licence(text) == expected


# -- every backend: the same behaviours ------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_paging_stops_at_k(spec):
    text, k, requests, results = spec.paging
    out, sent = run(spec, text, k)
    assert (len(sent), len(out.results)) == (requests, results)
    assert len({f.url for f in out.results}) == results and out.failure is None


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_no_results_is_an_empty_answer(spec):
    out, sent = run(spec, spec.none, 10)
    assert out.results == [] and out.failure is None and len(sent) == 1


@pytest.mark.parametrize(
    "fault",
    [
        (429, {"Retry-After": "0.1"}, b'{"error": "rate limited"}', "application/json"),
        (503, {}, b"", "text/plain"),
        (200, {}, b'{"results": [', "application/json"),
        (200, {}, b"[]", "application/json"),
    ],
    ids=["429", "503", "malformed", "not-an-object"],
)
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_transient_faults_are_retried(spec, fault):
    clean, _ = run(spec, spec.text, 5)
    out, sent = run(spec, spec.text, 5, faults=[fault])
    assert out.results == clean.results and len(out.results) == 5
    assert sent[0].status == fault[0] and sent[1].status == 200 and sent[1].params == sent[0].params
    if fault[0] == 429:
        assert sent[1].at - sent[0].at >= 0.09  # Retry-After honoured


@pytest.mark.parametrize("spec", KEYED, ids=str)
def test_the_key_is_sent_but_never_part_of_the_ledger_key(spec, monkeypatch):
    with JsonApi(spec.handler) as api:
        backend = spec.make(api.url)
        key = backend.request_key(query(spec.text), 20)
        search(backend, query(spec.text), 20)
        sent = api.requests[0]
        monkeypatch.setenv(spec.key_env, "another-key")
        assert spec.make(api.url).request_key(query(spec.text), 20) == key
    secret = SECRETS[spec.key_env]
    assert secret in {*sent.params.values(), *sent.headers.values()}
    assert secret not in key and secret not in orjson.dumps(backend.params(query(spec.text), 20, 0)).decode()


STAGE_SECTIONS = {
    "brave": lambda url: {"base_url": url + "/res/v1"},
    "google_cse": lambda url: {"base_url": url + "/customsearch/v1", "cx": "engine-1"},
    "serpapi": lambda url: {"base_url": url},
}


@pytest.mark.parametrize("spec", KEYED, ids=str)
def test_no_key_reaches_logs_ledger_tables_or_errors(spec, caplog, tmp_path):
    """Every logger at DEBUG, a server that echoes the key in an error: the key appears nowhere."""
    caplog.set_level(logging.DEBUG)
    secret = SECRETS[spec.key_env]
    echo = J({"error": f"bad request with key {secret}"}, status=400)
    with JsonApi(spec.handler) as api:
        api.faults.extend([(503, {}, b"", "text/plain"), echo])
        section = {**STAGE_SECTIONS[spec.name](api.url), **FAST}
        raw = {"name": "t", "search": {"backend": spec.name, "top_k": 5, spec.name: section}}
        ctx = StageContext(parse(raw), Workdir(tmp_path))
        write_records(ctx.path("queries.parquet"), [query(spec.none), query(spec.text)], Query)
        result = search_stage.run(ctx)
        assert len(api.requests) == 3 and secret in str(api.requests[-1].headers | api.requests[-1].params)
    assert "HTTP Request" in caplog.text  # httpx did log every request
    assert secret not in caplog.text and secret not in str(result)
    assert result.stats["hits"] == 5 and result.stats["rejects"] == {"retry_later": 1}
    with sqlite3.connect(ctx.path(search_stage.LEDGER)) as db:
        (failure,) = db.execute("SELECT failure FROM requests WHERE status = 'retry'").fetchone()
    assert "HTTP 400" in failure and "with key [redacted]" in failure
    stored = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in stored)
    assert not [p for p in stored if secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("spec", KEYED, ids=str)
def test_a_missing_key_is_named_before_any_request(spec, monkeypatch):
    monkeypatch.delenv(spec.key_env)
    with JsonApi(spec.handler) as api:
        with pytest.raises(SearchError, match=spec.key_env):
            spec.make(api.url)
        # a section without a key variable is refused by validation, a bare config by the backend
        with pytest.raises(ValidationError, match="api_key_env"):
            spec.make(api.url, api_key_env="")
        cls = {"brave": BraveBackend, "google_cse": GoogleCseBackend, "serpapi": SerpApiBackend}[spec.name]
        with pytest.raises(SearchError, match="api_key_env"):
            cls(WebBackendConfig(base_url=api.url, contact="t@example.org"))
        assert not api.requests


@pytest.mark.parametrize("spec", [s for s in SPECS if s.name in ("inaturalist", "gbif")], ids=str)
def test_the_lookup_is_part_of_the_request_key(spec):
    backend = spec.make("http://127.0.0.1:9")
    keys = {backend.request_key(query(t), 20) for t in ("koala", "lion")}
    assert len(keys) == 2
    assert backend.request_key(query("koala"), 20) != backend.request_key(query("koala"), 30)


# -- the stage: kinds routed to different services in one harvest -----------------------------------


def test_stage_routes_entities_to_inaturalist_and_commons_and_attributes_to_brave(tmp_path):
    def handler(path: str, params: dict, headers: dict) -> Any:
        if path.startswith("/res/"):
            return brave(path, params, headers)
        if path.startswith("/w/"):
            return commons(path, params, headers)
        return inaturalist(path, params, headers)

    with JsonApi(handler) as api:
        raw = {
            "name": "t",
            "search": {
                "backends": ["inaturalist", "commons", "brave"],
                "route": {"entity": ["inaturalist", "commons"], "entity_attribute": ["brave"]},
                "top_k": 3,
                "inaturalist": {"base_url": api.url + "/v1", **FAST},
                "commons": {"base_url": api.url + "/w/api.php", **FAST},
                "brave": {"base_url": api.url + "/res/v1", **FAST},
            },
        }
        ctx = StageContext(parse(raw), Workdir(tmp_path))
        write_records(
            ctx.path("queries.parquet"), [query("koala"), query("koala eating", "entity_attribute")], Query
        )
        result = search_stage.run(ctx)
        paths = [(r.path, r.params.get("q") or r.params.get("gsrsearch")) for r in api.requests]
    hits = list(read_records(ctx.path("hits.parquet"), Hit))
    by = {(h.query_id, h.backend) for h in hits}
    assert by == {("q-koala", "inaturalist"), ("q-koala", "commons"), ("q-koala eating", "brave")}
    assert {h.backend: h.alt_text for h in hits if h.rank == 1} == {
        "inaturalist": "Koala (Phascolarctos cinereus)",
        "commons": "koala photo 0",
        "brave": "koala photo 0 - Pages Example",
    }
    assert len(hits) == 9 and result.stats["http_requests"] == {"inaturalist": 2, "commons": 2, "brave": 1}
    assert ("/res/v1/images/search", "koala eating -cartoon") in paths
    assert not any(p.startswith("/res/") and q == "koala -cartoon" for p, q in paths)


def test_the_plan_counts_lookups_pages_quota_days_and_time():
    make = {s.name: s.make for s in SPECS}
    backends = {
        "inaturalist": make["inaturalist"]("http://127.0.0.1:9", daily_quota=10_000, rate_per_s=1),
        "gbif": make["gbif"]("http://127.0.0.1:9", rate_per_s=1, max_requests=5),
    }
    pending = [(query(f"koala {i}"), name) for i in range(3_000) for name in backends]
    lines = search_stage.plan(backends, pending, 250)
    assert lines == [
        # the taxon lookup, then 200 observations a page: 3 requests a query
        "search: inaturalist: 3,000 queries need up to 9,000 requests (3 each); "
        "daily quota 10,000 (0 used today): 1 day; at 1/s at least 2.5 h",
        # the name match, then up to twice the 25 pages of 10 that k needs
        "search: gbif: 3,000 queries need up to 153,000 requests (51 each); no daily quota; "
        "at 1/s at least 1.8 days; this run stops after 5 requests (--max-requests)",
    ]


def test_a_web_hit_that_is_not_an_http_url_is_dropped_at_search_with_its_reason(tmp_path):
    """GBIF media identifiers are publishers' free text: `file:///etc/passwd` must never become a hit."""
    planted = ["file:///etc/passwd", "/etc/shadow", "ftp://files.example/a.jpg"]

    def hostile(path: str, params: dict, headers: dict) -> Any:
        answer = gbif(path, params, headers)
        if path == "/v1/occurrence/search" and answer["offset"] == 0:
            for record, url in zip(answer["results"][::3], planted, strict=False):
                record["media"][0]["identifier"] = url  # on photos with an accepted licence (i % 3 == 0)
        return answer

    with JsonApi(hostile) as api:
        section = {"base_url": api.url + "/v1", **FAST}
        raw = {"name": "t", "search": {"backend": "gbif", "top_k": 8, "gbif": section}}
        ctx = StageContext(parse(raw), Workdir(tmp_path))
        write_records(ctx.path("queries.parquet"), [query("Panthera leo")], Query)
        result = search_stage.run(ctx)
    hits = list(read_records(ctx.path("hits.parquet"), Hit))
    assert hits and all(h.url.startswith("https://img.example/") for h in hits)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    dropped = list(read_records(ctx.path("rejects/search.parquet"), Rejected))
    assert {r.reason for r in dropped} == {"non_http_url"}
    assert sorted(r.detail for r in dropped) == sorted(f"gbif: {url}" for url in planted)
    assert result.stats["rejects"] == {"non_http_url": 3}


def test_a_retry_after_date_is_honoured_like_seconds():
    """Servers may send Retry-After as an HTTP date; the search backends wait until it."""
    spec = next(s for s in SPECS if s.name == "inaturalist")
    until = email.utils.formatdate(time.time() + 2, usegmt=True)  # 1-2 s from now (whole seconds)
    fault = (429, {"Retry-After": until}, b'{"error": "rate limited"}', "application/json")
    out, sent = run(spec, spec.text, 5, faults=[fault])
    assert len(out.results) == 5 and sent[1].status == 200
    assert sent[1].at - sent[0].at >= 0.9  # the backoff alone (0.01 s) would not wait
