"""The admin API against the simulator through the real app object: roles, writes with read-back,
validation before the bus, dry runs, multi-pack batches with a silent pack, export/import, load
origin, configuration, controls, protocols, clock, rate limits and the audit of every action."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.security.auth import Role
from tests.support.admin_support import Stack, admin_stack

pytestmark = pytest.mark.e2e

# (method, path, body, weakest role allowed). Bodies are harmless: refused by validation (422),
# dry runs, or reads, so every role that passes authorization leaves the packs as they are.
ENDPOINTS: list[tuple[str, str, Any, Role]] = [
    ("GET", "/api/admin/whoami", None, Role.VIEWER),
    ("GET", "/api/gateway/protocols", None, Role.VIEWER),
    ("GET", "/api/families/tianpower/parameters", None, Role.VIEWER),
    ("GET", "/api/packs/sim/1/parameters", None, Role.OPERATOR),
    ("GET", "/api/parameters", None, Role.OPERATOR),
    ("GET", "/api/packs/sim/1/parameters/export?format=csv", None, Role.OPERATOR),
    ("GET", "/api/packs/sim/1/capacities", None, Role.OPERATOR),
    ("GET", "/api/packs/sim/1/anti-theft", None, Role.OPERATOR),
    ("GET", "/api/packs/sim/1/controls", None, Role.OPERATOR),
    ("GET", "/api/packs/sim/1/inverter-protocol", None, Role.OPERATOR),
    ("GET", "/api/clock?packs=sim/1", None, Role.OPERATOR),
    ("POST", "/api/clock/sync", {"packs": ["sim/99"]}, Role.OPERATOR),
    ("POST", "/api/buses/sim/scan", {"addresses": [1], "timeout_s": 60}, Role.OPERATOR),
    ("PUT", "/api/packs/sim/1/parameters", {"values": {"CELL_OV_Start": 9.0}}, Role.ADMIN),
    ("PUT", "/api/parameters", {"values": {"CELL_OV_Start": 3.6}, "dry_run": True}, Role.ADMIN),
    ("POST", "/api/packs/sim/1/parameters/import", "No.,Name,Data\n1,Nope,1\n", Role.ADMIN),
    ("POST", "/api/parameters/load-origin", {"dry_run": True}, Role.ADMIN),
    ("PUT", "/api/packs/sim/1/capacities", {"full_ah": -1}, Role.ADMIN),
    ("PUT", "/api/packs/sim/1/serial", {"serial": "bad^sn"}, Role.ADMIN),
    ("PUT", "/api/packs/sim/1/anti-theft", {"comm_timeout_h": 24}, Role.ADMIN),
    ("POST", "/api/packs/sim/1/control", {"action": "warp_drive"}, Role.ADMIN),
    ("PUT", "/api/packs/sim/1/inverter-protocol", {"can": 999}, Role.ADMIN),
    ("PUT", "/api/gateway/protocols", {"can": "no-such-protocol"}, Role.ADMIN),
    ("GET", "/api/audit?limit=5", None, Role.ADMIN),
    ("POST", "/api/packs/sim/1/unlock", None, Role.ADMIN),
    ("PUT", "/api/packs/sim/1/cell-count", {"cells": 16, "confirm": False}, Role.FACTORY),
    ("GET", "/api/admin/tokens", None, Role.ADMIN),
    ("POST", "/api/admin/tokens", {"role": "no-such-role"}, Role.ADMIN),
    ("DELETE", "/api/admin/tokens/ffffffff", None, Role.ADMIN),
]


async def call(stack: Stack, method: str, path: str, body: Any = None, role: Role | None = Role.ADMIN) -> Any:
    headers = stack.auth(role) if role is not None else {}
    if isinstance(body, str):
        return await stack.client.request(method, path, content=body.encode(), headers=headers)
    return await stack.client.request(method, path, json=body, headers=headers)


def template(path: str) -> str:
    """The OpenAPI path template of a concrete test path."""
    path = path.split("?")[0].replace("/sim/1", "/{bus}/{address}").replace("/buses/sim/", "/buses/{bus}/")
    path = path.replace("/tokens/ffffffff", "/tokens/{token_id}")
    return path.replace("/families/tianpower", "/families/{family}")


async def test_every_endpoint_against_every_role(tmp_path: Path) -> None:
    async with admin_stack(tmp_path) as stack:
        doc = (await stack.client.get("/api/openapi.json")).json()
        documented = {
            (method.upper(), path)
            for path, ops in doc["paths"].items()
            for method, op in ops.items()
            if "admin" in op.get("tags", [])
        }
        assert documented == {(m, template(p)) for m, p, _, _ in ENDPOINTS}  # the table covers every route
        for method, path, body, needed in ENDPOINTS:
            r = await call(stack, method, path, body, role=None)
            assert r.status_code == 401, (method, path)
            assert f"{needed.label} role" in r.json()["detail"] and "token create" in r.json()["detail"]
            r = await stack.client.request(
                method, path, json=body, headers={"Authorization": "Bearer bmsg_nope_nope"}
            )
            assert r.status_code == 401 and "unknown token" in r.json()["detail"], (method, path)
            for role in Role:
                r = await call(stack, method, path, body, role=role)
                if role < needed:
                    assert r.status_code == 403, (method, path, role)
                    detail = r.json()["detail"]
                    assert f"{needed.label} role" in detail and f"has the {role.label} role" in detail
                else:
                    assert r.status_code not in (401, 403, 500), (method, path, role, r.text)
        # refused admin actions are audited too
        assert {"parameters.write", "config.serial", "gateway.protocols"} <= stack.audit_actions()


async def test_write_in_range_is_verified_and_in_the_next_snapshot(tmp_path: Path) -> None:
    async with admin_stack(tmp_path) as stack:
        body = {"values": {"CELL_OV_Start": 3.65, "LC_Style": 10}, "allow_inferred": True}
        r = await call(stack, "PUT", "/api/packs/sim/1/parameters", body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["outcome"] == "ok" and doc["written"] == ["sim/1"]
        items = {i["name"]: i for i in doc["packs"][0]["items"]}
        assert items["CELL_OV_Start"] == {
            "name": "CELL_OV_Start", "requested": 3.65, "before": 3.7, "after": 3.65,
            "outcome": "verified", "detail": "",
        }  # fmt: skip
        assert items["LC_Style"]["outcome"] == "verified" and items["LC_Style"]["after"] == 10
        assert stack.sim.pack(1).params["CELL_OV_Start"] == pytest.approx(3.65)
        snap = stack.ctx.store.view.pack("sim", 1)
        assert snap is not None and snap.parameters is not None
        assert snap.parameters.get("CELL_OV_Start") == 3.65
        public = (await stack.client.get("/api/packs/sim/1")).json()
        assert public["parameters"]["values"]["CELL_OV_Start"]["value"] == 3.65
        listed = (await call(stack, "GET", "/api/packs/sim/1/parameters", role=Role.OPERATOR)).json()
        row = next(p for p in listed["parameters"] if p["name"] == "LC_Style")
        assert row["value"] == 10 and row["meaning"] == "active current limiting"
        assert [c["value"] for c in row["choices"]] == [0, 3, 4, 5, 10]
        entry = stack.admin.audit_log.query(action="parameters.write")[0]
        assert entry.before == {"sim/1": {"CELL_OV_Start": 3.7, "LC_Style": 4}}
        assert entry.after == {"sim/1": {"CELL_OV_Start": 3.65, "LC_Style": 10}}
        assert entry.outcome == "ok" and entry.client == "127.0.0.1"


async def test_out_of_range_is_422_and_nothing_reaches_the_bus(tmp_path: Path) -> None:
    async with admin_stack(tmp_path) as stack:
        before = stack.bus_requests
        r = await call(
            stack,
            "PUT",
            "/api/packs/sim/1/parameters",
            {"values": {"CELL_OV_Start": 7.5, "LC_Style": 2, "Bogus": 1}, "allow_inferred": True},
        )
        assert r.status_code == 422
        doc = r.json()
        assert "CELL_OV_Start: 7.5 V is outside the allowed range 1..6 V" in doc["detail"]
        errors = {e["parameter"]: e for e in doc["errors"]}
        assert errors["CELL_OV_Start"]["value"] == 7.5 and errors["CELL_OV_Start"]["allowed"] == "1..6 V"
        assert "3 = passive current limiting" in errors["LC_Style"]["message"]
        assert "unknown parameter 'Bogus'" in errors["Bogus"]["message"]
        r = await call(
            stack, "PUT", "/api/parameters", {"values": {"CELL_OV_Start": "high"}, "allow_inferred": True}
        )
        assert r.status_code == 422 and "expected a number" in r.json()["detail"]
        assert stack.bus_requests == before
        assert stack.sim.pack(1).params["CELL_OV_Start"] == pytest.approx(3.7)
        multi, single = stack.admin.audit_log.query(action="parameters.write")
        assert (multi.outcome, single.outcome) == ("refused", "refused")
        assert single.packs == ["sim/1"] and "7.5 V" in single.detail and "expected a number" in multi.detail


async def test_inferred_writes_need_both_opt_ins(tmp_path: Path) -> None:
    async with admin_stack(tmp_path) as stack:
        before = stack.bus_requests
        r = await call(stack, "PUT", "/api/packs/sim/1/parameters", {"values": {"CELL_OV_Start": 3.6}})
        assert r.status_code == 422 and '"allow_inferred": true in the request' in r.json()["detail"]
        detail = r.json()["detail"]
        assert detail.endswith(
            'it needs "allow_inferred": true in the request ([admin] allow_inferred_writes is on in the '
            "configuration)"
        )  # the config already opts in: one opt-in missing, and the sentence is whole
        assert "needs both" not in detail and "allow_inferred_writes = true" not in detail
        assert stack.bus_requests == before
    async with admin_stack(tmp_path / "b", allow_inferred=False, packs=1) as stack:
        before = stack.bus_requests
        body = {"values": {"CELL_OV_Start": 3.6}, "allow_inferred": True}
        r = await call(stack, "PUT", "/api/packs/sim/1/parameters", body)
        assert r.status_code == 422 and r.json()["detail"].endswith(
            'it needs both [admin] allow_inferred_writes = true in the configuration and "allow_inferred": '
            "true in the request"
        )
        assert stack.bus_requests == before


async def test_dry_run_returns_the_diff_and_sends_nothing(tmp_path: Path) -> None:
    async with admin_stack(tmp_path) as stack:
        before = stack.bus_requests
        body = {"values": {"CELL_OV_Start": 3.65, "CELL_OV_Stop": 3.38}, "dry_run": True}
        r = await call(stack, "PUT", "/api/parameters", body)
        assert r.status_code == 200
        doc = r.json()
        assert doc["outcome"] == "dry_run" and doc["written"] == []
        assert [p["pack"] for p in doc["packs"]] == ["sim/1", "sim/2", "sim/3"]
        items = {i["name"]: i for i in doc["packs"][1]["items"]}
        assert items["CELL_OV_Start"]["outcome"] == "would_change" and items["CELL_OV_Start"]["before"] == 3.7
        assert items["CELL_OV_Stop"]["outcome"] == "unchanged"
        assert "allow_inferred" in doc["packs"][0]["warnings"][0]
        assert stack.bus_requests == before
        assert stack.admin.audit_log.query(action="parameters.write")[0].outcome == "dry_run"


async def test_a_silent_pack_in_a_batch_is_reported_not_written(tmp_path: Path) -> None:
    async with admin_stack(tmp_path) as stack:
        stack.sim.set_online(2, False)
        body = {"values": {"CELL_UV_Start": 2.8}, "allow_inferred": True}
        r = await call(stack, "PUT", "/api/parameters", body)
        doc = r.json()
        assert r.status_code == 200 and doc["outcome"] == "partial"
        assert doc["written"] == ["sim/1", "sim/3"] and doc["not_written"] == ["sim/2"]
        silent = doc["packs"][1]
        assert silent["outcome"] == "failed" and "did not answer" in silent["detail"]
        assert silent["items"][0]["outcome"] == "failed"
        assert stack.sim.pack(2).params["CELL_UV_Start"] == pytest.approx(2.7)
        assert stack.sim.pack(3).params["CELL_UV_Start"] == pytest.approx(2.8)
        entry = stack.admin.audit_log.query(action="parameters.write")[0]
        assert entry.outcome == "partial" and entry.packs == ["sim/1", "sim/2", "sim/3"]
        assert "sim/2: failed" in entry.detail


async def test_a_pack_never_read_and_silent_fails_alone_in_a_batch(tmp_path: Path) -> None:
    # sim/3 is configured but has not answered since the start: it has no reading to check against
    async with admin_stack(tmp_path, protocol="pace", packs=3, silent=(3,)) as stack:
        assert stack.ctx.store.view.pack("sim", 3).parameters is None  # type: ignore[union-attr]
        body = {"values": {"Cell_OV_Alarm": 3.57}, "dry_run": True}
        r = await call(stack, "PUT", "/api/parameters", body)
        doc = r.json()
        assert r.status_code == 200 and doc["outcome"] == "partial" and doc["dry_run"] is True, doc
        assert [p["outcome"] for p in doc["packs"]] == ["dry_run", "dry_run", "failed"]
        assert doc["packs"][0]["items"][0]["outcome"] == "would_change"
        silent = doc["packs"][2]
        assert silent["detail"].startswith("not checked: pack sim/3: parameters could not be read")
        assert [(i["outcome"], i["detail"]) for i in silent["items"]] == [("failed", "not read")]
        assert stack.sim.pack(1).params["Cell_OV_Alarm"] != pytest.approx(3.57)

        r = await call(stack, "PUT", "/api/parameters", {"values": {"Cell_OV_Alarm": 3.57}})
        doc = r.json()
        assert r.status_code == 200 and doc["outcome"] == "partial", doc
        assert doc["written"] == ["sim/1", "sim/2"] and doc["not_written"] == ["sim/3"]
        assert [p["outcome"] for p in doc["packs"]] == ["ok", "ok", "failed"]
        silent = doc["packs"][2]
        assert silent["detail"].startswith("not written: pack sim/3: parameters could not be read")
        assert [(i["outcome"], i["detail"]) for i in silent["items"]] == [("failed", "not written")]
        for address in (1, 2):
            assert stack.sim.pack(address).params["Cell_OV_Alarm"] == pytest.approx(3.57)
        entry = stack.admin.audit_log.query(action="parameters.write")[0]
        assert entry.outcome == "partial" and "sim/3: failed (not written" in entry.detail

        # the pack alone: a write answers its report (200), failed, as for a pack that went silent
        r = await call(stack, "PUT", "/api/packs/sim/3/parameters", {"values": {"Cell_OV_Alarm": 3.57}})
        doc = r.json()
        assert r.status_code == 200 and doc["outcome"] == "failed" and doc["written"] == [], doc
        # reading it is what answers 504
        r = await call(stack, "GET", "/api/packs/sim/3/parameters?fresh=true", role=Role.OPERATOR)
        assert r.status_code == 504 and "sim/3" in r.json()["detail"]


@pytest.mark.parametrize("fmt", ["json", "csv", "xml", "xlsx"])
@pytest.mark.parametrize("per_pack", [False, True])
async def test_export_import_round_trip_is_lossless(tmp_path: Path, fmt: str, per_pack: bool) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        flag = f"per_pack_state={str(per_pack).lower()}"
        r = await call(
            stack, "GET", f"/api/packs/sim/1/parameters/export?format={fmt}&{flag}", role=Role.OPERATOR
        )
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        content = r.content
        r = await stack.client.post(
            f"/api/packs/sim/1/parameters/import?format={fmt}&{flag}",
            content=content,
            headers=stack.auth(Role.ADMIN),
        )
        doc = r.json()
        assert r.status_code == 200, r.text
        assert doc["changes"] == [] and doc["applied"] is False and doc["skipped"] == []
        values = stack.admin.snapshot_parameters(("sim", 1))
        per_pack_names = {"Set_Full_charge_capacity", "Set_Remaining_capacity"}
        expected = len(values) if per_pack else len(set(values) - per_pack_names)
        assert doc["rows"] == expected and doc["unchanged"] == expected


async def test_an_edited_file_previews_exactly_the_edited_rows_then_applies(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        text = (await call(stack, "GET", "/api/packs/sim/1/parameters/export?format=csv")).text
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["No.", "Name", "Data", "Unit", "Set Range"]
        assert rows[1][:5] == ["1", "CELL_OV_Start", "3.700", "V", "1/6"]
        edited = {"CELL_OV_Delay": "1500", "PACK_UV_Stop": "47.500"}
        for row in rows[1:]:
            if row[1] in edited:
                row[2] = edited[row[1]]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        before = stack.bus_requests
        r = await call(stack, "POST", "/api/packs/sim/1/parameters/import", buf.getvalue())
        doc = r.json()
        assert sorted(c["name"] for c in doc["changes"]) == sorted(edited)
        assert stack.bus_requests == before  # a preview sends nothing
        r = await call(
            stack, "POST", "/api/packs/sim/1/parameters/import?apply=true&allow_inferred=true", buf.getvalue()
        )
        doc = r.json()
        assert doc["applied"] is True and doc["result"]["outcome"] == "ok"
        assert {i["name"]: i["outcome"] for i in doc["result"]["packs"][0]["items"]} == {
            "CELL_OV_Delay": "verified",
            "PACK_UV_Stop": "verified",
        }
        assert stack.sim.pack(1).params["PACK_UV_Stop"] == pytest.approx(47.5)
        r = await call(stack, "POST", "/api/packs/sim/1/parameters/import", "x" * 1_000_001)
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
        bad = buf.getvalue().replace("1,CELL_OV_Start,3.700", "1,CELL_OV_Start,9.9")
        r = await call(stack, "POST", "/api/packs/sim/1/parameters/import", bad)
        assert r.status_code == 422 and r.json()["errors"][0]["row"] == 1
        assert "CELL_OV_Start: 9.9 V is outside the allowed range 1..6 V" in r.json()["detail"]
        assert {"parameters.import"} <= stack.audit_actions()


async def test_load_origin_restores_documented_defaults(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        stack.sim.pack(1).params["CELL_OV_Start"] = 3.5
        stack.sim.pack(1).params["LC_Style"] = 0
        await stack.admin.current_parameters(("sim", 1), fresh=True)
        r = await call(stack, "POST", "/api/parameters/load-origin", {"dry_run": True})
        changed = {i["name"] for i in r.json()["packs"][0]["items"] if i["outcome"] == "would_change"}
        assert changed == {"CELL_OV_Start", "LC_Style"}
        r = await call(stack, "POST", "/api/parameters/load-origin", {"allow_inferred": True})
        doc = r.json()
        assert doc["outcome"] == "ok", doc
        assert stack.sim.pack(1).params["CELL_OV_Start"] == pytest.approx(3.7)
        assert stack.sim.pack(1).params["LC_Style"] == 4
        assert "Set_Full_charge_capacity" not in {i["name"] for i in doc["packs"][0]["items"]}
        assert "parameters.load_origin" in stack.audit_actions()


async def test_configuration_capacities_cell_count_serial_anti_theft(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        r = await call(
            stack, "PUT", "/api/packs/sim/1/capacities", {"full_ah": 200.0, "allow_inferred": True}
        )
        doc = r.json()
        assert doc["outcome"] == "ok" and doc["items"][0]["outcome"] == "verified"
        assert any("nominal" in w for w in doc["warnings"])
        r = await call(
            stack, "PUT", "/api/packs/sim/1/capacities", {"nominal_ah": 100.0, "allow_inferred": True}
        )
        assert any("disagree" in w for w in r.json()["warnings"])
        cap = (await call(stack, "GET", "/api/packs/sim/1/capacities", role=Role.OPERATOR)).json()
        assert cap["nominal_ah"] == 100.0 and any("disagree" in w for w in cap["warnings"])
        # cell count: factory only, and only with explicit confirmation
        r = await call(stack, "PUT", "/api/packs/sim/1/cell-count", {"cells": 15}, role=Role.FACTORY)
        assert r.status_code == 422 and '"confirm": true' in r.json()["detail"]
        r = await call(
            stack, "PUT", "/api/packs/sim/1/cell-count", {"cells": 15, "confirm": True}, role=Role.FACTORY
        )
        assert r.status_code == 200 and r.json()["items"][0]["outcome"] == "written"
        # SN code
        old_sn = stack.sim.pack(1).identity.serial
        r = await call(stack, "PUT", "/api/packs/sim/1/serial", {"serial": "BG-0042"})
        item = r.json()["items"][0]
        assert (item["before"], item["after"], item["outcome"]) == (old_sn, "BG-0042", "verified")
        assert stack.sim.pack(1).identity.serial == "BG-0042"
        # anti-theft: enable communication anti-theft, refuse the undocumented timeout, unlock
        r = await call(stack, "PUT", "/api/packs/sim/1/anti-theft", {"communication": True})
        assert r.status_code == 200 and stack.sim.pack(1).anti_theft_mask == 0x01
        mode = (await call(stack, "GET", "/api/packs/sim/1/anti-theft")).json()
        assert mode["mode"]["communication"] is True and "this gateway" in mode["mode_source"]
        before = stack.bus_requests
        r = await call(stack, "PUT", "/api/packs/sim/1/anti-theft", {"comm_timeout_h": 24})
        assert r.status_code == 409 and "Comm_Time" in r.json()["detail"] and stack.bus_requests == before
        stack.sim.pack(1).locked = True
        r = await call(stack, "POST", "/api/packs/sim/1/unlock")
        assert r.json()["items"][0]["outcome"] == "verified" and stack.sim.pack(1).locked is False
        r = await call(stack, "PUT", "/api/packs/sim/1/anti-theft", {"communication": False})
        assert stack.sim.pack(1).anti_theft_mask == 0
        actions = stack.audit_actions()
        assert {
            "config.capacities",
            "config.cell_count",
            "config.serial",
            "config.anti_theft",
            "config.unlock",
        } <= actions


async def test_controls_and_their_refusals(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1, realtime_interval_s=0.1) as stack:
        r = await call(stack, "POST", "/api/packs/sim/1/control", {"action": "charge_mos", "on": False})
        item = r.json()["items"][0]
        assert item["outcome"] == "verified" and item["before"] is True and item["after"] is False
        r = await call(stack, "POST", "/api/packs/sim/1/control", {"action": "charge_mos", "on": True})
        assert r.json()["items"][0]["outcome"] == "verified"
        r = await call(stack, "POST", "/api/packs/sim/1/control", {"action": "fan", "on": True})
        assert r.json()["items"][0]["outcome"] in ("verified", "written") and stack.sim.pack(1).fan_on
        listed = (await call(stack, "GET", "/api/packs/sim/1/controls", role=Role.OPERATOR)).json()
        actions = {a["action"] for a in listed["actions"]}
        assert {"heater", "fan", "buzzer", "forced_sleep"} <= actions and "current_limiter" not in actions
        r = await call(stack, "POST", "/api/packs/sim/1/control", {"action": "current_limiter"})
        assert r.status_code == 409 and "no documented command" in r.json()["detail"]
        stack.sim.set_current(1, 20.0)
        for _ in range(200):
            t = stack.ctx.store.view.packs[("sim", 1)].telemetry
            if t is not None and t.current_a > 1:
                break
            await asyncio.sleep(0.02)
        r = await call(stack, "POST", "/api/packs/sim/1/control", {"action": "forced_sleep"})
        assert r.status_code == 409 and "charging" in r.json()["detail"]
        assert stack.sim.pack(1).sleeping is False
        assert stack.admin.audit_log.query(action="control")[0].outcome == "refused"


async def test_pace_protocol_selection_and_both_mos_off(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, protocol="pace", packs=1, realtime_interval_s=0.1) as stack:
        # PACE parameter writes are documented: no opt-in needed; the group is read, patched, written whole
        # the name before PACE names became identifiers ("Cell_OV_Protect"): accepted as an alias
        r = await call(stack, "PUT", "/api/packs/sim/1/parameters", {"values": {"Cell OV Protect": 3.65}})
        item = r.json()["packs"][0]["items"][0]
        assert (item["outcome"], item["after"]) == ("verified", 3.65), r.json()
        assert stack.sim.pack(1).params["Cell_OV_Protect"] == pytest.approx(3.65)
        r = await call(stack, "GET", "/api/packs/sim/1/inverter-protocol", role=Role.OPERATOR)
        assert r.status_code == 200 and "can_codes" in r.json()
        r = await call(
            stack, "PUT", "/api/packs/sim/1/inverter-protocol", {"can": 3, "rs485": 2, "mode": "manual"}
        )
        item = r.json()["items"][0]
        assert item["outcome"] == "verified" and item["after"] == {"can": 3, "rs485": 2, "mode": "manual"}
        r = await call(stack, "PUT", "/api/packs/sim/1/inverter-protocol", {"can": 250})
        assert r.status_code == 422 and "not in the PACE CAN table" in r.json()["detail"]
        r = await call(stack, "POST", "/api/parameters/load-origin", {"dry_run": True})
        assert r.status_code == 409 and "no factory defaults" in r.json()["detail"]
        stack.sim.pack(1).manual_discharge_mos_off = True
        for _ in range(300):
            t = stack.ctx.store.view.packs[("sim", 1)].telemetry
            if t is not None and t.discharge_mos_on is False:
                break
            await asyncio.sleep(0.02)
        before = stack.bus_requests
        body = {"action": "charge_mos", "on": False, "allow_inferred": True}
        r = await call(stack, "POST", "/api/packs/sim/1/control", body)
        assert r.status_code == 409 and "both MOSFETs" in r.json()["detail"]
        assert stack.bus_requests == before
        assert "config.pack_protocols" in stack.audit_actions()
    async with admin_stack(tmp_path / "tp", packs=1) as stack:
        r = await call(stack, "GET", "/api/packs/sim/1/inverter-protocol")
        assert r.status_code == 409 and "not available" in r.json()["detail"]


class RunningService:
    """Stands in for the running CAN service / RS485 port: records `set_protocol` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def set_protocol(self, *args: Any) -> None:
        self.calls.append(args)


async def test_gateway_protocols_switch_and_persist_with_comments(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        can, rs485 = RunningService(), RunningService()
        stack.ctx.can, stack.ctx.rs485 = can, rs485
        r = await call(stack, "PUT", "/api/gateway/protocols", {"can": "victron", "rs485": "byd-modbus"})
        doc = r.json()
        assert doc["applied_to_running_services"] == ["can", "rs485"]
        assert can.calls == [("victron", {})] and rs485.calls == [("byd-modbus",)]
        assert (
            r.status_code == 200
            and doc["persisted"] is True
            and doc["after"] == {"can": "victron", "rs485": "byd-modbus"}
        )
        text = stack.config_path.read_text()
        assert 'protocol = "victron"  # keep this comment' in text
        assert "# the inverter speaks Pylontech on CAN" in text and 'protocol = "byd-modbus"' in text
        got = (await call(stack, "GET", "/api/gateway/protocols", role=Role.VIEWER)).json()
        assert got["can"]["protocol"] == "victron" and "sma" in got["can"]["available"]
        r = await call(stack, "PUT", "/api/gateway/protocols", {"rs485": "modbus-magic"})
        assert r.status_code == 422 and "pylon-rs485" in json.dumps(r.json()["errors"])
        assert 'protocol = "byd-modbus"' in stack.config_path.read_text()
        entry = stack.admin.audit_log.query(action="gateway.protocols")
        assert [e.outcome for e in entry] == ["refused", "ok"]
        # options configured for one CAN protocol that another does not accept: refused, file untouched
        cfg = stack.ctx.config
        bogus = cfg.can.model_copy(update={"options": {"bogus": 1}})
        stack.ctx.config = cfg.model_copy(update={"can": bogus})
        r = await call(stack, "PUT", "/api/gateway/protocols", {"can": "sma"})
        assert r.status_code == 422 and "has no option 'bogus'" in r.json()["detail"]
        assert 'protocol = "victron"' in stack.config_path.read_text()


async def test_clock_read_sync_and_auto_sync(tmp_path: Path) -> None:
    async with admin_stack(tmp_path) as stack:
        for a in (1, 2, 3):
            stack.sim.pack(a).clock_offset_s = 500.0 * a
        doc = (await call(stack, "GET", "/api/clock", role=Role.OPERATOR)).json()
        drifts = {p["pack"]: p["drift_s"] for p in doc["packs"]}
        assert all(abs(drifts[f"sim/{a}"] - 500.0 * a) < 5 for a in (1, 2, 3)), drifts
        r = await call(stack, "POST", "/api/clock/sync", {"packs": ["sim/2"]}, role=Role.OPERATOR)
        assert r.json()["outcome"] == "ok" and r.json()["packs"][0]["items"][0]["outcome"] == "verified"
        assert abs(stack.sim.pack(2).clock_offset_s) < 3
        snap = stack.ctx.store.view.packs[("sim", 2)]
        assert snap.clock is not None and abs(snap.clock.drift_s) < 3  # what the drift metric shows
        synced = await stack.admin.auto_sync_once()
        assert synced == ["sim/1", "sim/3"]
        assert all(abs(stack.sim.pack(a).clock_offset_s) < 3 for a in (1, 3))
        assert await stack.admin.auto_sync_once() == []
        assert {"clock.sync", "clock.auto_sync"} <= stack.audit_actions()


async def test_rate_limit_per_token(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1, rate=3) as stack:
        codes = [
            (await call(stack, "GET", "/api/admin/whoami", role=Role.VIEWER)).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        r = await call(stack, "GET", "/api/admin/whoami", role=Role.VIEWER)
        assert r.headers["retry-after"] == "60" and "rate limit of 3" in r.json()["detail"]
        assert (await call(stack, "GET", "/api/admin/whoami", role=Role.OPERATOR)).status_code == 200


async def test_openapi_document_and_audit_endpoint(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        doc = (await stack.client.get("/api/openapi.json")).json()
        assert "/api/packs/{bus}/{address}/parameters" in doc["paths"]
        assert {"get", "put"} <= set(doc["paths"]["/api/packs/{bus}/{address}/parameters"])
        await call(stack, "POST", "/api/clock/sync", {"packs": ["sim/1"]})
        audit = (await call(stack, "GET", "/api/audit?action=clock.sync")).json()
        assert audit[0]["action"] == "clock.sync" and audit[0]["packs"] == ["sim/1"]
        assert audit[0]["role"] == "admin" and audit[0]["outcome"] == "ok"


async def test_a_write_the_pack_refuses_halfway_reports_each_parameter(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        full = stack.sim.pack(1).physics.full_capacity_ah
        body = {
            "values": {
                "CELL_OV_Start": 3.66,
                "CELL_OV_Stop": 3.38,
                "Set_Remaining_capacity": min(655.0, full + 50),
            },
            "allow_inferred": True,
        }
        doc = (await call(stack, "PUT", "/api/packs/sim/1/parameters", body)).json()
        pack = doc["packs"][0]
        outcomes = {i["name"]: i["outcome"] for i in pack["items"]}
        # the table write went through (verified); the capacity write was refused by the pack; the
        # unchanged CELL_OV_Stop cannot be shown to be written by this request
        assert outcomes == {
            "CELL_OV_Start": "verified",
            "CELL_OV_Stop": "failed",
            "Set_Remaining_capacity": "failed",
        }
        assert pack["outcome"] == "partial" and pack["written"] is True and "refused" in pack["detail"]
        assert doc["outcome"] == "partial" and doc["written"] == ["sim/1"]
