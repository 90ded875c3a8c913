"""The UI's router: pages under `/ui/...` (and `/` redirecting to the first one), static files
and the Modbus register map, all from memory after the first load.

Pages are `templates/layout.html` around `templates/<page>.html`. The only template syntax is
`{{t:key}}` (the translation of `key`, HTML-escaped) and `{{name}}` (a value of the layout);
translations come from `i18n/<lang>.json` (adding a language is adding a file). The catalogue is
also embedded in the page as JSON for the scripts. Every answer carries a strict
Content-Security-Policy (our own scripts and styles only, no inline script, no other origin).

Never reads the model, never talks to a bus, never serves a file outside this package.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

HERE = Path(__file__).parent
DEFAULT_LANG = "en"
LANG_COOKIE = "bmsg_lang"

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Page:
    path: str  # URL under /ui/
    template: str  # templates/<template>.html and static/<template>.js
    title: str  # catalogue key
    group: str  # top navigation entry


PAGES: tuple[Page, ...] = (
    Page("info/single", "info-single", "nav.single", "info"),
    Page("info/multi", "info-multi", "nav.multi", "info"),
    Page("info/parallel", "info-parallel", "nav.parallel", "info"),
    Page("info/record", "info-record", "nav.record", "info"),
    Page("param", "param", "nav.param", "param"),
    Page("config", "config", "nav.config", "config"),
    Page("storage", "storage", "nav.storage", "storage"),
    Page("gateway", "gateway", "nav.gateway", "gateway"),
)
GROUPS: tuple[tuple[str, str], ...] = (
    ("info", "info/single"),
    ("param", "param"),
    ("config", "config"),
    ("storage", "storage"),
    ("gateway", "gateway"),
)
MEDIA = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}
_T = re.compile(r"\{\{t:([A-Za-z0-9_.-]+)\}\}")
_V = re.compile(r"\{\{([a-z0-9_]+)\}\}")


@cache
def catalogues() -> dict[str, dict[str, str]]:
    """Every `i18n/*.json` by language code."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted((HERE / "i18n").glob("*.json")):
        out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return out


@cache
def template(name: str) -> str:
    return (HERE / "templates" / f"{name}.html").read_text(encoding="utf-8")


@cache
def static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, media type, etag) of every file in static/."""
    out: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.is_file() and path.suffix in MEDIA:
            data = path.read_bytes()
            out[path.name] = (data, MEDIA[path.suffix], hashlib.sha256(data).hexdigest()[:16])
    return out


@cache
def asset_version() -> str:
    return hashlib.sha256("".join(e for _, _, e in static_files().values()).encode()).hexdigest()[:10]


def translate(key: str, lang: str) -> str:
    cats = catalogues()
    return cats.get(lang, {}).get(key) or cats[DEFAULT_LANG].get(key) or key


def choose_lang(request: Request) -> str:
    langs = catalogues()
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if asked in langs:
        return asked
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in langs:
            return code
    return DEFAULT_LANG


def render(page: Page, lang: str, extra: Mapping[str, str]) -> str:
    cat = {**catalogues()[DEFAULT_LANG], **catalogues().get(lang, {})}
    nav = []
    for group, target in GROUPS:
        current = ' aria-current="page"' if group == page.group else ""
        nav.append(f'<a href="/ui/{target}"{current}>{html.escape(translate("nav." + group, lang))}</a>')
    sub = ""
    if page.group == "info":
        links = []
        for p in PAGES:
            if p.group == "info":
                current = ' aria-current="page"' if p is page else ""
                links.append(f'<a href="/ui/{p.path}"{current}>{html.escape(translate(p.title, lang))}</a>')
        label = html.escape(translate("nav.info", lang))
        sub = f'<nav class="subnav" aria-label="{label}">{"".join(links)}</nav>'
    options = "".join(
        f'<option value="{code}"{" selected" if code == lang else ""}>'
        f"{html.escape(c.get('_name', code))}</option>"
        for code, c in catalogues().items()
    )
    values = {
        "lang": lang,
        "page": page.template,
        "title": html.escape(translate(page.title, lang)),
        "nav": "".join(nav),
        "subnav": sub,
        "lang_options": options,
        "v": asset_version(),
        # "</" cannot end the JSON block early: escape it
        "i18n_json": json.dumps(cat, ensure_ascii=False).replace("</", "<\\/"),
        **extra,
    }
    body = _V.sub(lambda m: values.get(m.group(1), m.group(0)), template(page.template))
    doc = template("layout").replace("{{content}}", body)
    doc = _V.sub(lambda m: values.get(m.group(1), m.group(0)), doc)
    return _T.sub(lambda m: html.escape(translate(m.group(1), lang)), doc)


def _page_extra(ctx: Any, page: Page, lang: str) -> dict[str, str]:
    extra = {"needs_token": "true" if ctx.config.admin.data_needs_token else "false"}
    if page.template == "info-record":
        from gateway.ops.history.recording import VALUE_FIELDS

        extra["value_options"] = "".join(
            f'<option value="{html.escape(v)}">{html.escape(translate("field." + v, lang))}</option>'
            for v in VALUE_FIELDS
        )
    return extra


def web_router(ctx: Any) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    rendered: dict[tuple[str, str], str] = {}

    def page_response(page: Page, request: Request) -> Response:
        lang = choose_lang(request)
        key = (page.path, lang)
        doc = rendered.get(key)
        if doc is None:
            doc = rendered[key] = render(page, lang, _page_extra(ctx, page, lang))
        resp = Response(doc, media_type="text/html; charset=utf-8", headers=dict(SECURITY_HEADERS))
        resp.headers["Cache-Control"] = "no-cache"
        if request.query_params.get("lang") == lang:
            resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict", path="/")
        return resp

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/info/single", status_code=307)

    @router.get("/ui")
    @router.get("/ui/")
    @router.get("/ui/info")
    async def info_root() -> RedirectResponse:
        return RedirectResponse("/ui/info/single", status_code=307)

    for page in PAGES:

        def handler(request: Request, page: Page = page) -> Response:
            return page_response(page, request)

        router.add_api_route(f"/ui/{page.path}", handler, methods=["GET"], name=f"ui:{page.path}")

    @router.get("/ui/static/{name}")
    async def static(name: str, request: Request) -> Response:
        entry = static_files().get(name)
        if entry is None:
            return Response("not found", status_code=404, media_type="text/plain")
        data, media, etag = entry
        headers = {**SECURITY_HEADERS, "ETag": f'"{etag}"', "Cache-Control": "public, max-age=86400"}
        if request.headers.get("if-none-match") == f'"{etag}"':
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=media, headers=headers)

    @router.get("/favicon.ico")
    async def favicon() -> Response:
        data, media, _ = static_files()["icon.svg"]
        return Response(data, media_type=media, headers={"Cache-Control": "public, max-age=86400"})

    @router.get("/ui/modbus-registers.{fmt}")
    async def modbus_map(fmt: str) -> Response:
        """The Modbus register map, rendered from mappings/modbus (as `bms-gateway modbus-docs`)."""
        from gateway.north.modbus.docs import render_csv, render_markdown

        if fmt == "csv":
            return Response(render_csv(), media_type="text/csv; charset=utf-8")
        if fmt == "md":
            return Response(render_markdown(), media_type="text/plain; charset=utf-8")
        return Response("use .csv or .md", status_code=404, media_type="text/plain")

    return router
