"""The web UI's server side and the API routes it relies on (fast, in-process).

Pages render in every language with every string translated and every control labelled; the
scripts call only routes the API has; `/api/stream`, `/api/policy` and `/api/admin/tokens` answer
what the pages show; `[http] ui = false` keeps the UI out of the process. The browser tests in
tests/web/ drive the same pages in Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from gateway.north.http import create_app
from gateway.north.http.live import snapshot_doc, snapshots
from gateway.north.web import install as install_web
from gateway.north.web.routes import PAGES, catalogues
from gateway.ops.security.auth import Role
from tests.support.admin_support import ThreadedGateway, admin_stack

WEB = Path(__file__).parents[4] / "gateway" / "north" / "web"


class _Controls(HTMLParser):
    """Collects ids, labels and form controls of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.label_for: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.open_labels = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "label":
            self.open_labels += 1
            if a.get("for"):
                self.label_for.add(str(a["for"]))
        if tag in ("input", "select", "textarea"):
            self.controls.append({**a, "_tag": tag, "_in_label": "1" if self.open_labels else None})
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v.startswith(("http:", "https:", "//")):
                self.external.append(v)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.open_labels -= 1


async def _ui_client(stack: object) -> httpx.AsyncClient:
    ctx = stack.ctx  # type: ignore[attr-defined]
    install_web(ctx)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://gateway.test"
    )


# ---- pages -----------------------------------------------------------------------------------------


async def test_every_page_renders_translated_labelled_and_self_contained(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack, await _ui_client(stack) as client:
        r = await client.get("/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/ui/info/single"
        for lang in catalogues():
            for page in PAGES:
                r = await client.get(f"/ui/{page.path}?lang={lang}")
                assert r.status_code == 200, (page.path, lang)
                html = r.text
                assert "{{" not in html, (page.path, lang, re.findall(r"\{\{[^}]*\}\}", html)[:3])
                csp = r.headers["content-security-policy"]
                assert "script-src 'self'" in csp and "default-src 'self'" in csp
                assert f'<html lang="{lang}">' in html
                title = catalogues()[lang][page.title]
                assert f"<h1>{title}</h1>" in html
                parser = _Controls()
                parser.feed(html)
                dupes = {i for i in parser.ids if parser.ids.count(i) > 1}
                assert not dupes, (page.path, dupes)
                for c in parser.controls:
                    if c.get("type") == "hidden":
                        continue
                    labelled = c.get("id") in parser.label_for or c.get("aria-label") or c["_in_label"]
                    assert labelled, (page.path, c)
                assert parser.external == [], (page.path, parser.external)
                # the page's script and the catalogue block are there; no inline script
                assert f"/ui/static/{page.template}.js" in html
                data = re.search(r'<script type="application/json" id="i18n">(.*?)</script>', html, re.S)
                assert data and json.loads(data.group(1))["nav.param"] == catalogues()[lang]["nav.param"]
                assert len(re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)", html)) == 0
        # the language is remembered in a cookie
        r = await client.get("/ui/param?lang=zh")
        assert r.cookies.get("bmsg_lang") == "zh"
        r = await client.get("/ui/param")
        assert "参数" in r.text
        client.cookies.clear()
        r = await client.get("/ui/param", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        assert "<h1>参数</h1>" in r.text
        client.cookies.clear()
        assert "<h1>Param</h1>" in (await client.get("/ui/param")).text


async def test_static_files_are_served_from_memory_with_etags(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack, await _ui_client(stack) as client:
        for page in PAGES:
            r = await client.get(f"/ui/static/{page.template}.js")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        r = await client.get("/ui/static/core.js")
        etag = r.headers["etag"]
        assert (await client.get("/ui/static/core.js", headers={"If-None-Match": etag})).status_code == 304
        assert (await client.get("/ui/static/nope.js")).status_code == 404
        assert (await client.get("/ui/static/..%2Froutes.py")).status_code == 404
        assert (await client.get("/favicon.ico")).status_code == 200
        r = await client.get("/ui/modbus-registers.csv")
        assert r.status_code == 200 and r.text.startswith("map,")
        assert (await client.get("/ui/modbus-registers.md")).status_code == 200


def test_catalogues_have_the_same_keys_and_cover_every_string() -> None:
    cats = catalogues()
    assert {"en", "zh"} <= set(cats)
    keys = set(cats["en"])
    for lang, cat in cats.items():
        assert set(cat) == keys, (lang, set(cat) ^ keys)
        assert all(isinstance(v, str) and v for v in cat.values()), lang
    used: set[str] = set()
    for f in (WEB / "templates").glob("*.html"):
        used |= set(re.findall(r"\{\{t:([A-Za-z0-9_.-]+)\}\}", f.read_text()))
    prefixes: set[str] = set()
    for f in (WEB / "static").glob("*.js"):
        text = f.read_text()
        used |= set(re.findall(r'\bt\("([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)+)"\)', text))
        used |= set(re.findall(r'\bt\("([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)+)", \{', text))
        prefixes |= set(re.findall(r'\bt\("([A-Za-z0-9_]+\.)" \+', text))
    missing = sorted(k for k in used if k not in keys)
    assert not missing, missing
    for prefix in prefixes:  # dynamic keys ("avail." + state) have entries
        assert any(k.startswith(prefix) for k in keys), prefix
    # the enumerations the pages translate are complete
    from gateway.core.model import Availability, TempRole
    from gateway.ops.history.recording import VALUE_FIELDS

    for a in Availability:
        assert f"avail.{a.value}" in keys
    for r in TempRole:
        assert f"trole.{r.value}" in keys
    for v in VALUE_FIELDS:
        assert f"field.{v}" in keys
    for r in Role:
        assert f"role.{r.label}" in keys


def _api_paths_in_scripts() -> set[str]:
    """Every API path the scripts call, with `${...}` parts as wildcards."""
    out: set[str] = set()
    for f in (WEB / "static").glob("*.js"):
        text = f.read_text()
        for m in re.finditer(r'[`"](/api/[^`"?]*)', text):
            out.add(m.group(1))
        for m in re.finditer(
            r'(?:path\(\)|UI\.packPath\(pack\)|\$\{UI\.packPath\(pack\)\}) \+ "(/[^"?]*)"', text
        ):
            out.add("/api/packs/{bus}/{address}" + m.group(1))
        for m in re.finditer(r"`\$\{(?:UI\.packPath\(pack\)|path\(\))\}(/[^`?]*)", text):
            out.add("/api/packs/{bus}/{address}" + m.group(1))
    return out


async def test_the_scripts_call_only_routes_the_api_has(tmp_path: Path) -> None:
    from gateway.north.http.records import install as install_records
    from gateway.north.modbus import ModbusServer

    async with admin_stack(tmp_path, packs=1) as stack:
        install_records(stack.ctx)
        ModbusServer.from_context(stack.ctx)  # adds GET /api/modbus
        install_web(stack.ctx)
        app = create_app(stack.ctx)
        routes = list(app.openapi()["paths"])
        patterns = [
            re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$") for p in routes if p.startswith("/api/")
        ]
        called = _api_paths_in_scripts()
        assert len(called) > 30, called
        for path in called:
            concrete = re.sub(r"\$\{[^}]+\}", "x", path).replace("{bus}", "sim").replace("{address}", "1")
            concrete = concrete.rstrip("/")
            assert any(p.match(concrete) for p in patterns), path


@pytest.mark.e2e  # starts a Python process
def test_the_ui_is_not_imported_when_off(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from gateway.app.config import parse_config\n"
        "from gateway.app.wiring import build_context, build_services\n"
        "from fastapi.testclient import TestClient\n"
        "from gateway.north.http.app import create_app\n"
        "for ui in (False, True):\n"
        "    cfg = parse_config({'simulator': {'enabled': True}, 'http': {'ui': ui}, "
        f"'state_dir': {str(tmp_path)!r}}}, env={{}})\n"
        "    ctx = build_context(cfg)\n"
        "    build_services(ctx)\n"
        "    app = create_app(ctx)\n"
        "    with TestClient(app) as c:\n"
        "        codes = [c.get(p, follow_redirects=False).status_code for p in ('/ui/param', '/')]\n"
        "    print(ui, 'gateway.north.web.routes' in sys.modules, *codes)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split("\n")[:2] == ["False False 404 404", "True True 200 307"], out


# ---- /api/stream and /api/policy ---------------------------------------------------------------------


async def test_snapshot_doc_is_the_packs_without_parameter_tables(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=2) as stack:
        packs = (await stack.client.get("/api/packs")).json()
        doc = snapshot_doc(stack.ctx, 0.0)
        assert [p["telemetry"]["cell_voltages_v"] for p in doc["packs"]] == [
            p["telemetry"]["cell_voltages_v"] for p in packs
        ]
        assert all(
            p["parameters"] == {"read_at": q["parameters"]["read_at"]}
            for p, q in zip(doc["packs"], packs, strict=True)
        )
        assert doc["bank"]["packs_configured"] == 2 and doc["version"] == stack.ctx.store.view.version
        assert len(json.dumps(doc)) < len(json.dumps(packs)) / 2  # the parameter tables are most of it


async def test_snapshots_follow_model_changes_and_send_heartbeats(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        gen = snapshots(stack.ctx, interval_s=0.01, heartbeat_s=3600)
        first = await anext(gen)
        key = ("sim", 1)
        stack.ctx.store.update(key, name="changed")
        second = await asyncio.wait_for(anext(gen), 5)
        assert second["version"] == first["version"] + 1
        assert second["packs"][0]["name"] == "changed"
        await gen.aclose()
        gen = snapshots(stack.ctx, interval_s=0.01, heartbeat_s=0.0)  # nothing changes: heartbeats
        a, b = await anext(gen), await asyncio.wait_for(anext(gen), 5)
        assert a["version"] == b["version"] and b["t"] >= a["t"]
        await gen.aclose()


@pytest.mark.e2e  # the real HTTP service on a socket
def test_stream_over_a_real_socket_and_its_token_rule(tmp_path: Path) -> None:
    with ThreadedGateway(tmp_path, packs=2) as gw, httpx.Client(base_url=gw.url, timeout=10) as client:
        with client.stream("GET", "/api/stream?interval_s=0.2") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            doc = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
        assert [f"{p['bus']}/{p['address']}" for p in doc["packs"]] == ["sim/1", "sim/2"]
        assert client.get("/api/stream?interval_s=0.01").status_code == 422


async def test_stream_and_policy_follow_data_needs_token(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        cfg = stack.ctx.config
        stack.ctx.config = cfg.model_copy(
            update={"admin": cfg.admin.model_copy(update={"data_needs_token": True})}
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(stack.ctx)), base_url="http://t"
        ) as c:
            for path in ("/api/stream", "/api/policy"):
                r = await c.get(path)
                assert r.status_code == 401 and "viewer role" in r.json()["detail"], path
            r = await c.get("/api/policy", headers=stack.auth(Role.VIEWER))
            assert r.status_code == 200


async def test_policy_shows_the_decision_and_what_the_protocols_send(tmp_path: Path) -> None:
    from gateway.core.policy.service import build_policy_services

    async with admin_stack(tmp_path, packs=2) as stack:
        r = await stack.client.get("/api/policy")
        assert r.status_code == 200 and r.json()["decision"] is None  # no policy service in this stack
        assert r.json()["can"]["frames"] == [] and "no pack data" in r.json()["can"]["error"]
        services = build_policy_services(stack.ctx)
        policy = stack.ctx.extras["policy"]
        stack.ctx.extras["decisions"].publish(policy.evaluate_now())
        body = (await stack.client.get("/api/policy")).json()
        d = body["decision"]
        assert d["has_data"] and set(d["limiting"]) == {
            "charge_voltage_v",
            "discharge_voltage_v",
            "charge_current_a",
            "discharge_current_a",
        }
        can = body["can"]
        assert can["protocol"] == "pylon" and can["enabled"] is False and can["running"] is False
        frames = {f["id"]: f for f in can["frames"]}
        assert 0x351 in frames, sorted(frames)
        limits = frames[0x351]
        assert limits["signals"]["ChargeVoltageLimit"] == pytest.approx(d["charge_voltage_v"], abs=0.1)
        data = bytes.fromhex(limits["data"].replace(" ", ""))
        assert int.from_bytes(data[0:2], "little") == round(d["charge_voltage_v"] * 10)
        rs = body["rs485"]
        assert rs["protocol"] == "pylon-rs485" and rs["limits"]["charge_voltage_v"] == d["charge_voltage_v"]
        assert services  # the policy service itself is not started here


# ---- tokens (Gateway page) ----------------------------------------------------------------------------


async def test_token_management_is_admin_only_audited_and_never_shows_hashes(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        c = stack.client
        admin = stack.auth(Role.ADMIN)
        r = await c.get("/api/admin/tokens", headers=stack.auth(Role.OPERATOR))
        assert r.status_code == 403 and "admin role" in r.json()["detail"]
        listed = (await c.get("/api/admin/tokens", headers=admin)).json()
        assert {t["role"] for t in listed} == {r.label for r in Role}
        assert all(set(t) == {"id", "role", "label", "created_at", "revoked"} for t in listed)
        r = await c.post("/api/admin/tokens", headers=admin, json={"role": "operator", "label": "phone"})
        assert r.status_code == 200
        new = r.json()
        who = await c.get("/api/admin/whoami", headers={"Authorization": f"Bearer {new['token']}"})
        assert who.json()["role"] == "operator" and who.json()["label"] == "phone"
        r = await c.post("/api/admin/tokens", headers=admin, json={"role": "factory"})
        assert r.status_code == 403 and "token create --role factory" in r.json()["detail"]
        r = await c.post("/api/admin/tokens", headers=admin, json={"role": "boss"})
        assert r.status_code == 422 and "unknown role" in r.json()["detail"]
        own = (await c.get("/api/admin/whoami", headers=admin)).json()["token_id"]
        r = await c.delete(f"/api/admin/tokens/{own}", headers=admin)
        assert r.status_code == 409
        r = await c.delete(f"/api/admin/tokens/{new['id']}", headers=admin)
        assert r.status_code == 200
        who = await c.get("/api/admin/whoami", headers={"Authorization": f"Bearer {new['token']}"})
        assert who.status_code == 401 and "revoked" in who.json()["detail"]
        assert (await c.delete("/api/admin/tokens/ffffffff", headers=admin)).status_code == 404
        entries = stack.admin.audit_log.query(limit=100)
        seen = {(e.action, e.outcome) for e in entries}
        assert {
            ("tokens.create", "ok"),
            ("tokens.create", "refused"),
            ("tokens.revoke", "ok"),
            ("tokens.revoke", "refused"),
        } <= seen
        assert any(
            e.action == "http GET /api/admin/tokens" or e.action.startswith("http GET")
            for e in entries
            if e.outcome == "refused"
        )
