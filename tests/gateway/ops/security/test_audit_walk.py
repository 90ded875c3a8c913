"""Walks the admin and records API surface: every admin action (writes, imports, configuration,
controls, protocol switches, clock syncs, history pulls/stops/deletes, interval and record-time
writes, firmware upload/flash/result/resume/abort) leaves an audit entry naming the action, the
token, the client and the pack; refusals too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.security.audit import AuditEntry
from gateway.ops.security.auth import Role
from tests.support.records_support import firmware_image, records_stack, wait_no_download

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Step:
    method: str
    path: str
    role: Role
    body: Any
    action: str
    outcomes: tuple[str, ...]  # acceptable outcomes (e.g. a pack may refuse what the simulator refuses)
    packs: tuple[str, ...] = ("sim/1",)
    params: tuple[tuple[str, str], ...] = ()
    content: bytes | None = None


def _steps(export_csv: bytes, edited_csv: bytes) -> list[Step]:
    return [
        Step(
            "PUT",
            "/api/packs/sim/1/parameters",
            Role.ADMIN,
            {"values": {"CELL_OV_Start": 3.6}, "allow_inferred": True},
            "parameters.write",
            ("ok",),
        ),
        Step(
            "PUT",
            "/api/packs/sim/1/parameters",
            Role.ADMIN,
            {"values": {"CELL_OV_Start": 3.6}, "dry_run": True},
            "parameters.write",
            ("dry_run",),
        ),
        Step(
            "PUT",
            "/api/packs/sim/1/parameters",
            Role.ADMIN,
            {"values": {"CELL_OV_Start": 9.9}},
            "parameters.write",
            ("refused",),
        ),
        Step(
            "PUT",
            "/api/parameters",
            Role.ADMIN,
            {"packs": ["sim/1", "sim/2"], "values": {"CELL_OV_Start": 3.62}, "allow_inferred": True},
            "parameters.write",
            ("ok",),
            packs=("sim/1", "sim/2"),
        ),
        Step(
            "POST",
            "/api/packs/sim/1/parameters/import",
            Role.ADMIN,
            None,
            "parameters.import",
            ("dry_run", "ok"),
            params=(("format", "csv"),),
            content=edited_csv,
        ),
        Step(
            "POST",
            "/api/packs/sim/1/parameters/import",
            Role.ADMIN,
            None,
            "parameters.import",
            ("ok",),
            params=(("format", "csv"), ("apply", "true"), ("allow_inferred", "true")),
            content=edited_csv,
        ),
        Step(
            "POST",
            "/api/packs/sim/2/parameters/import",
            Role.ADMIN,
            None,
            "parameters.import",
            ("refused",),
            packs=("sim/2",),
            params=(("format", "csv"),),
            content=export_csv.replace(b"CELL_OV_Start", b"NO_SUCH_NAME"),
        ),
        Step(
            "POST",
            "/api/parameters/load-origin",
            Role.ADMIN,
            {"packs": ["sim/1"], "dry_run": True},
            "parameters.load_origin",
            ("dry_run",),
        ),
        Step(
            "PUT",
            "/api/packs/sim/1/capacities",
            Role.ADMIN,
            {"full_ah": 100.0, "nominal_ah": 100.0, "allow_inferred": True},
            "config.capacities",
            ("ok", "partial", "mismatch"),
        ),
        Step(
            "PUT",
            "/api/packs/sim/1/cell-count",
            Role.FACTORY,
            {"cells": 16},
            "config.cell_count",
            ("refused",),
        ),
        Step(
            "PUT",
            "/api/packs/sim/1/cell-count",
            Role.FACTORY,
            {"cells": 16, "confirm": True},
            "config.cell_count",
            ("ok",),
        ),
        Step("PUT", "/api/packs/sim/1/serial", Role.ADMIN, {"serial": "BG-0042"}, "config.serial", ("ok",)),
        Step(
            "PUT",
            "/api/packs/sim/1/anti-theft",
            Role.ADMIN,
            {"communication": False},
            "config.anti_theft",
            ("ok",),
        ),
        Step("POST", "/api/packs/sim/1/unlock", Role.ADMIN, None, "config.unlock", ("ok", "failed")),
        Step(
            "POST",
            "/api/packs/sim/1/control",
            Role.ADMIN,
            {"action": "heater", "on": True},
            "control",
            ("ok", "failed"),
        ),
        Step(
            "PUT",
            "/api/packs/sim/1/inverter-protocol",
            Role.ADMIN,
            {"can": 1},
            "config.pack_protocols",
            ("refused",),
        ),
        Step(
            "PUT",
            "/api/gateway/protocols",
            Role.ADMIN,
            {"can": "victron"},
            "gateway.protocols",
            ("ok",),
            packs=(),
        ),
        Step(
            "PUT",
            "/api/gateway/protocols",
            Role.ADMIN,
            {"can": "no-such-protocol"},
            "gateway.protocols",
            ("refused",),
            packs=(),
        ),
        Step(
            "POST",
            "/api/clock/sync",
            Role.OPERATOR,
            {"packs": ["sim/2"]},
            "clock.sync",
            ("ok",),
            packs=("sim/2",),
        ),
        Step(
            "POST", "/api/history/pull", Role.OPERATOR, {"bus": "sim", "address": 1}, "history.pull", ("ok",)
        ),
        Step("POST", "/api/history/stop", Role.OPERATOR, {"bus": "sim"}, "history.stop", ("ok",), packs=()),
        Step("POST", "/api/packs/sim/1/history/delete", Role.ADMIN, {}, "history.delete", ("refused",)),
        Step(
            "POST",
            "/api/packs/sim/1/history/delete",
            Role.ADMIN,
            {"confirm": "DELETE"},
            "history.delete",
            ("refused", "ok", "failed"),
        ),
        Step(
            "PUT",
            "/api/packs/sim/1/history/interval",
            Role.ADMIN,
            {"interval_min": 20},
            "history.interval",
            ("ok",),
        ),
        Step(
            "PUT",
            "/api/packs/sim/1/history/record-time",
            Role.ADMIN,
            {"which": "end", "when": "2024-06-01T08:00:00"},
            "history.record_time",
            ("ok",),
        ),
        Step(
            "PUT",
            "/api/recording/interval",
            Role.ADMIN,
            {"interval_s": 2.0},
            "recording.interval",
            ("ok",),
            packs=(),
        ),
        Step(
            "POST",
            "/api/firmware/images",
            Role.ADMIN,
            None,
            "firmware.upload",
            ("refused",),
            packs=(),
            params=(("filename", "broken.bgfw"),),
            content=b"not an image",
        ),
    ]


def _new_entries(stack: Any, after_id: int) -> list[AuditEntry]:
    return [e for e in reversed(stack.admin.audit_log.query(limit=10000)) if e.id > after_id]


def _check(entries: list[AuditEntry], step: Step, token_id: str, what: str) -> AuditEntry:
    mine = [e for e in entries if e.action == step.action]
    assert len(mine) == 1, (what, [(e.action, e.outcome) for e in entries])
    entry = mine[0]
    assert entry.outcome in step.outcomes, (what, entry.outcome, entry.detail)
    assert entry.token_id == token_id and entry.client == "127.0.0.1", what
    assert entry.role == step.role.label, what
    assert set(step.packs) <= set(entry.packs), (what, entry.packs)
    assert entry.at > 0 and entry.request is not None, what
    return entry


async def test_every_admin_action_leaves_an_audit_entry(tmp_path: Path) -> None:
    async with records_stack(tmp_path) as (stack, client, _services):
        token_ids = {role: stack.tokens[role].split("_")[1] for role in Role}
        admin = stack.auth(Role.ADMIN)
        r = await client.get("/api/packs/sim/1/parameters/export", params={"format": "csv"}, headers=admin)
        assert r.status_code == 200
        export_csv = r.content
        lines = export_csv.decode().splitlines()
        row = next(i for i, line in enumerate(lines) if ",CELL_OV_Start," in line)
        cells = lines[row].split(",")
        cells[2] = "3.58"
        lines[row] = ",".join(cells)
        edited_csv = ("\n".join(lines) + "\n").encode()

        last = max((e.id for e in stack.admin.audit_log.query(limit=1)), default=0)
        for step in _steps(export_csv, edited_csv):
            what = f"{step.method} {step.path} {step.body or dict(step.params)}"
            r = await client.request(
                step.method,
                step.path,
                json=step.body if step.content is None else None,
                content=step.content,
                params=dict(step.params),
                headers=stack.auth(step.role),
            )
            assert r.status_code < 500, (what, r.text)
            if step.action == "history.pull":
                await wait_no_download(client, stack)
            entries = _new_entries(stack, last)
            entry = _check(entries, step, token_ids[step.role], what)
            if step.action == "parameters.write" and entry.outcome == "ok":
                assert entry.before is not None and entry.after is not None, what
            last = max(e.id for e in entries)

        # firmware: upload, flash (started, then its result), resume and abort of a finished job
        r = await client.post(
            "/api/firmware/images", params={"filename": "fw.bgfw"}, content=firmware_image(), headers=admin
        )
        assert r.status_code == 200, r.text
        image_id = r.json()["id"]
        r = await client.post(
            "/api/firmware/jobs", json={"bus": "sim", "address": 2, "image": image_id}, headers=admin
        )
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        r = await client.get(f"/api/firmware/jobs/{job_id}/events", headers=admin)  # until audited
        assert r.status_code == 200
        for path in (f"/api/firmware/jobs/{job_id}/resume", f"/api/firmware/jobs/{job_id}/abort"):
            r = await client.post(path, headers=admin)
            assert r.status_code < 500, (path, r.text)
        fw = [(e.action, e.outcome, e.token_id) for e in _new_entries(stack, last)]
        tid = token_ids[Role.ADMIN]
        for expected in [
            ("firmware.upload", "ok", tid),
            ("firmware.flash", "started", tid),
            ("firmware.result", "ok", tid),
            ("firmware.resume", "refused", tid),
        ]:
            assert expected in fw, (expected, fw)
        assert any(a == "firmware.abort" and t == tid for a, _, t in fw), fw

        # the log is readable through the API by admins only, newest first
        r = await client.get("/api/audit", params={"limit": 1000}, headers=admin)
        doc = r.json()
        assert [e["id"] for e in doc] == sorted((e["id"] for e in doc), reverse=True)
        assert {"history.pull", "history.delete", "history.interval", "firmware.result"} <= {
            e["action"] for e in doc
        }
        r = await client.get("/api/audit", headers=stack.auth(Role.OPERATOR))
        assert r.status_code == 403


async def test_a_role_refusal_is_audited_as_the_routes_action(tmp_path: Path) -> None:
    async with records_stack(tmp_path) as (stack, client, _services):
        token_ids = {role: stack.tokens[role].split("_")[1] for role in Role}
        steps = [s for s in _steps(b"", b"") if s.role > Role.VIEWER]
        steps += [
            Step("POST", "/api/firmware/jobs", Role.ADMIN, {"bus": "sim", "address": 1, "image": "x"},
                 "firmware.flash", ("refused",)),
            Step("POST", "/api/firmware/jobs/j1/resume", Role.ADMIN, None, "firmware.resume", ("refused",),
                 packs=()),
            Step("POST", "/api/firmware/jobs/j1/abort", Role.ADMIN, None, "firmware.abort", ("refused",),
                 packs=()),
        ]  # fmt: skip
        before = stack.bus_requests
        last = max((e.id for e in stack.admin.audit_log.query(limit=1)), default=0)
        for step in steps:
            weaker = Role(step.role - 1)
            what = f"{weaker.label}: {step.method} {step.path}"
            r = await client.request(
                step.method,
                step.path,
                json=step.body if step.content is None else None,
                content=step.content,
                params=dict(step.params),
                headers=stack.auth(weaker),
            )
            assert r.status_code == 403, (what, r.text)
            entries = _new_entries(stack, last)
            assert [(e.action, e.outcome) for e in entries] == [(step.action, "refused")], what
            entry = entries[0]
            assert entry.token_id == token_ids[weaker] and entry.role == weaker.label, what
            assert entry.client == "127.0.0.1" and f"needs the {step.role.label} role" in entry.detail, what
            assert entry.packs == ([step.path.split("/")[3] + "/" + step.path.split("/")[4]]
                                   if step.path.startswith("/api/packs/") else []), what  # fmt: skip
            last = entry.id
        assert stack.bus_requests == before  # nothing reached a pack

        # a refused read is audited with its route; no token (401) and no identity: nothing recorded
        r = await client.get("/api/audit", headers=stack.auth(Role.OPERATOR))
        assert r.status_code == 403
        r = await client.put("/api/packs/sim/1/serial", json={"serial": "X"})
        assert r.status_code == 401
        r = await client.put(
            "/api/packs/sim/1/serial", json={"serial": "X"}, headers={"Authorization": "Bearer bmsg_nope_x"}
        )
        assert r.status_code == 401
        entries = _new_entries(stack, last)
        assert [(e.action, e.outcome, e.token_id) for e in entries] == [
            ("http GET /api/audit", "refused", token_ids[Role.OPERATOR])
        ]
