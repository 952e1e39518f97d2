"""The viewer's Starlette app: server-rendered pages (Jinja2, autoescaped) and image routes.

Read-only: GET routes only. Text from the web (alt texts, descriptions, URLs) is escaped by the
templates; links are made only from http(s) URLs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from kgclip.view import images, runs
from kgclip.view.data import PAGE, Store
from kgclip.view.index import PARTS, ViewError, open_index
from kgclip.workdir import Workdir

TEMPLATES = Path(__file__).parent / "templates"
IMMUTABLE = "public, max-age=31536000, immutable"
CARD_FILE = re.compile(r"[A-Za-z0-9_-]+\.png")
CAPTION_DRAWS = 5
TAKEN_FOR_PICTURES = 3
SEARCH_FILTERS = ("root", "type", "kind", "backend", "licence")
# a second guard behind the escaping: the pages run no script at all, and load images only from here
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def safe_url(url: str | None) -> str | None:
    """The URL if a browser may follow it from our page (http or https), else None."""
    return url if url and re.match(r"https?://", url, re.IGNORECASE) else None


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["safe_url"] = safe_url
    return env


class Viewer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir).resolve()
        if not Workdir(self.workdir).is_ours():
            raise ViewError(f"{workdir} is not a kgclip work directory")
        self.store = Store(open_index(self.workdir))
        self.env = make_env()
        self._sampler: Any = None
        self._config_error: str | None = None

    # -- helpers

    def page(self, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(workdir=str(self.workdir), **ctx)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def not_found(self, what: str) -> HTMLResponse:
        return self.page("error.html", status=404, title="not found", message=what)

    def config(self):
        from kgclip.config import ConfigError, parse

        path = self.workdir / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path} missing")
        return parse(orjson.loads(path.read_bytes()), source=str(path))

    def sampler(self):
        """The training caption sampler with the harvest's config, or None (and why) without one."""
        if self._sampler is None and self._config_error is None:
            from kgclip.config import ConfigError
            from kgclip.train.captions import CaptionSampler

            try:
                cfg = self.config()
                self._sampler = CaptionSampler(cfg.train.captions, cfg.seed)
            except (ConfigError, orjson.JSONDecodeError) as e:
                self._config_error = str(e)
        return self._sampler

    # -- pages

    async def overview(self, request: Request) -> Response:
        from kgclip.config import ConfigError

        stages, stage_error = [], None
        try:
            from kgclip.pipeline import status as pipeline_status

            stages = [st.as_dict() for st in pipeline_status(self.config(), Workdir(self.workdir))]
        except (ConfigError, orjson.JSONDecodeError) as e:
            stage_error = str(e)
        plots = sorted(p.name for p in (self.workdir / "card").glob("*.png") if CARD_FILE.fullmatch(p.name))
        return self.page(
            "overview.html",
            title="overview",
            s=self.store.summary(),
            stages=stages,
            stage_error=stage_error,
            plots=plots,
        )

    async def card_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        path = self.workdir / "card" / name
        if not CARD_FILE.fullmatch(name) or not path.is_file():
            return self.not_found("no such card file")
        return Response(path.read_bytes(), media_type="image/png", headers={"Cache-Control": "no-cache"})

    async def tree(self, request: Request) -> Response:
        q = request.query_params.get("q", "").strip()
        type_id = request.query_params.get("type")
        return self.page(
            "tree.html", title="entity tree", roots=self.store.tree(q or None, type_id), q=q, type_id=type_id
        )

    async def entity(self, request: Request) -> Response:
        entity_id = request.path_params["entity_id"]
        e = self.store.entity(entity_id)
        if e is None:
            return self.not_found(f"no entity {entity_id}")
        page = _page(request)
        return self.page(
            "entity.html",
            title=e["name"],
            e=e,
            parents=self.store.entity_names(e["parents"]),
            root=self.store.entity_names([e["root"]]) if e["root"] else {},
            queries=self.store.entity_queries(entity_id),
            attributes=self.store.attributes(entity_id),
            pictures=self.store.entity_pictures(entity_id, page),
            page=page,
            pages=max(1, -(-e["pictures"] // PAGE)),
        )

    async def picture(self, request: Request) -> Response:
        s = self.store.sample(request.path_params["key"])
        if s is None:
            return self.not_found("no such picture")
        captions, meta = [], None
        try:
            raw = images.read_member(self.workdir, s["split"], s["shard"], s["json_offset"], s["json_size"])
            meta = orjson.loads(raw)
        except (images.NotServed, orjson.JSONDecodeError):
            meta = None
        sampler = self.sampler()
        if sampler is not None and meta is not None:
            from kgclip.train.captions import caption_of

            captions = [(e, caption_of(sampler, {"json": meta}, e)) for e in range(CAPTION_DRAWS)]
            shares = sorted(sampler.kind_shares(meta).items(), key=lambda kv: -kv[1])
        else:
            shares = []
        return self.page(
            "picture.html",
            title=f"picture {s['key']}",
            s=s,
            captions=captions,
            shares=shares,
            config_error=self._config_error,
        )

    async def rejections(self, request: Request) -> Response:
        stage = request.query_params.get("stage")
        reason = request.query_params.get("reason")
        page = _page(request)
        items = self.store.rejections(stage, reason, page) if stage and reason else []
        return self.page(
            "rejections.html",
            title="rejections",
            counts=self.store.rejection_counts(),
            stage=stage,
            reason=reason,
            items=items,
            page=page,
        )

    async def rejected_item(self, request: Request) -> Response:
        """One dropped item: its picture when it was fetched, and for a copy of an evaluation image the
        image it matched, side by side."""
        row = self.store.one(
            "SELECT rowid n, stage, reason, item, detail, part IS NOT NULL pictured FROM rejected "
            "WHERE rowid = ?",
            request.path_params["n"],
        )
        if row is None:
            return self.not_found("no such rejected item")
        matched = self._kept_match(row) is not None
        return self.page("rejected.html", title=f"rejected: {row['reason']}", r=row, matched=matched)

    async def search(self, request: Request) -> Response:
        q = request.query_params.get("q", "").strip()
        filters = {k: request.query_params.get(k, "") for k in SEARCH_FILTERS}
        asked = bool(q) or any(filters.values())
        return self.page(
            "search.html",
            title="search",
            q=q,
            filters=filters,
            facets=self.store.facets(),
            results=self.store.search(q, filters) if asked else None,
        )

    async def runs(self, request: Request) -> Response:
        run = request.path_params.get("run")
        found = runs.results(self.workdir, run) if run is not None else None
        if run is not None and found is None:
            return self.not_found("no such run")
        names = [name for r in found or [] for name, _, _ in r["per_class"]]
        names += [name for r in found or [] for true, taken, _, _ in r["confused"] for name in (true, taken)]
        known = self.store.entities_named(names)
        pictured = {  # the training pictures of each class a mistake was taken for
            p: self.store.entity_pictures(known[p]["id"], 0)[:TAKEN_FOR_PICTURES]
            for r in found or []
            for _, p, _, _ in r["confused"]
            if p in known
        }
        return self.page(
            "runs.html",
            title="runs",
            names=runs.run_names(self.workdir),
            run=run,
            results=found or [],
            known=known,
            pictured=pictured,
        )

    async def run_example(self, request: Request) -> Response:
        path = runs.example_path(self.workdir, request.path_params["run"], request.path_params["name"])
        if path is None:
            return self.not_found("no such example image")
        headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
        return Response(path.read_bytes(), media_type="image/jpeg", headers=headers)

    # -- images

    async def image(self, request: Request) -> Response:
        row = self.store.one(
            "SELECT sha256, split, shard, jpg_offset, jpg_size FROM samples WHERE key = ?",
            request.path_params["key"],
        )
        return self._jpeg(request, row, None)

    async def rejected_image(self, request: Request) -> Response:
        row = self.store.one(
            "SELECT sha256, 'parts' split, part shard, jpg_offset, jpg_size FROM rejected "
            "WHERE rowid = ? AND part IS NOT NULL",
            request.path_params["n"],
        )
        return self._jpeg(request, row, PARTS)

    async def eval_match(self, request: Request) -> Response:
        row = self.store.one("SELECT reason, item FROM rejected WHERE rowid = ?", request.path_params["n"])
        path = self._kept_match(row)
        if path is None:
            return self.not_found("no evaluation image kept for this picture")
        return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    def _kept_match(self, row: Any) -> Path | None:
        """The evaluation image a picture dropped as its copy matched, as the curate stage kept it."""
        from kgclip.curate.decontam import MATCHES, match_file

        if row is None or row["reason"] != "eval_copy":
            return None
        path = self.workdir / MATCHES / match_file(row["item"])
        return path if path.is_file() else None

    def _jpeg(self, request: Request, row: Any, folder: str | None) -> Response:
        if row is None:
            return self.not_found("no such picture")
        size = request.query_params.get("thumb")
        etag = f'"{row["sha256"]}-{size or "full"}"'
        headers = {"Cache-Control": IMMUTABLE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        try:
            data = images.read_member(
                self.workdir, row["split"], row["shard"], row["jpg_offset"], row["jpg_size"], folder=folder
            )
            if size is not None:
                if not size.isdigit():
                    return self.not_found("no such thumbnail size")
                data = images.thumbnail(self.workdir, row["sha256"], int(size), data)
        except images.NotServed as e:
            return self.not_found(str(e))
        return Response(data, media_type="image/jpeg", headers=headers)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.overview),
            Route("/card/{name}", self.card_file),
            Route("/tree", self.tree),
            Route("/entity/{entity_id}", self.entity),
            Route("/picture/{key}", self.picture),
            Route("/image/{key}.jpg", self.image),
            Route("/rejections", self.rejections),
            Route("/rejected/{n:int}.jpg", self.rejected_image),
            Route("/rejected/{n:int}", self.rejected_item),
            Route("/eval-match/{n:int}.jpg", self.eval_match),
            Route("/search", self.search),
            Route("/runs", self.runs),
            Route("/runs/{run}", self.runs),
            Route("/runs/{run}/examples/{name}", self.run_example),
        ]


def _page(request: Request) -> int:
    value = request.query_params.get("page", "0")
    return int(value) if value.isdigit() else 0


def create_app(workdir: Path) -> Starlette:
    viewer = Viewer(workdir)
    app = Starlette(routes=viewer.routes())
    app.state.viewer = viewer
    return app
