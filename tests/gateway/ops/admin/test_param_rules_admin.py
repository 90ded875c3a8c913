"""Issue 17 defect 2 through the admin write path: the parameter rules are checked on the whole
resulting table before any byte is sent, for single writes, batch writes, imports and Load Origin,
over the HTTP API and the CLI in its human mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.ops.security.auth import Role
from tests.support.admin_support import Stack, ThreadedGateway, admin_stack

RULE = "prot.cell_ov.release_below_trip"


async def put(stack: Stack, path: str, body: dict[str, Any]) -> Any:
    return await stack.client.put(path, json=body, headers=stack.auth(Role.ADMIN))


async def test_release_above_trip_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=2) as stack:
        r = await put(
            stack, "/api/packs/sim/1/parameters", {"values": {"CELL_OV_Start": 3.651}, "allow_inferred": True}
        )
        assert r.status_code == 200 and r.json()["packs"][0]["items"][0]["outcome"] == "verified", r.text
        sent = stack.bus_requests
        for force in (False, True):  # force never overrides an ordering rule
            body = {"values": {"CELL_OV_Stop": 3.8}, "allow_inferred": True, "force": force}
            r = await put(stack, "/api/packs/sim/1/parameters", body)
            assert r.status_code == 422, r.text
            doc = r.json()
            assert RULE in doc["detail"] and "CELL_OV_Stop = 3.8 V" in doc["detail"]
            assert {e["rule"] for e in doc["errors"]} >= {RULE}
            assert all(e["source"] for e in doc["errors"])
        assert stack.bus_requests == sent  # nothing reached the bus
        assert stack.sim.pack(1).params["CELL_OV_Stop"] == pytest.approx(3.38)
        assert stack.admin.audit_log.query(action="parameters.write")[0].outcome == "refused"
        # a batch write: pack 2 still has CELL_OV_Start 3.70, pack 1 has 3.651 -> the hysteresis rule
        # fails for pack 1 only, and the whole batch is refused (nothing written anywhere)
        r = await put(stack, "/api/parameters", {"values": {"CELL_OV_Stop": 3.66}, "allow_inferred": True})
        assert r.status_code == 422 and "sim/1: rule " + RULE in r.json()["detail"]
        assert "sim/2: rule " + RULE not in r.json()["detail"]
        assert stack.sim.pack(2).params["CELL_OV_Stop"] == pytest.approx(3.38)
        assert stack.bus_requests == sent


async def test_recommended_range_warns_and_force_writes_it_audited(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        body: dict[str, Any] = {"values": {"CELL_OV_Delay": 4000}, "allow_inferred": True}
        r = await put(stack, "/api/packs/sim/1/parameters", body)
        assert r.status_code == 422 and "recommended_range" in r.text and "--force" in r.json()["detail"]
        r = await put(stack, "/api/packs/sim/1/parameters", {**body, "force": True})
        assert r.status_code == 200, r.text
        rep = r.json()["packs"][0]
        assert rep["items"][0]["outcome"] == "verified"
        assert any(w.startswith("forced: ") and "recommended range" in w for w in rep["warnings"])
        entry = stack.admin.audit_log.query(action="parameters.write")[0]
        assert entry.outcome == "ok" and entry.request["force"] is True and "forced" in entry.detail
        # a note (the pack trip unreachable after lowering the cell trip) is reported, never blocks
        r = await put(
            stack, "/api/packs/sim/1/parameters", {"values": {"CELL_OV_Start": 3.6}, "allow_inferred": True}
        )
        assert r.status_code == 200
        assert any("pack_ov.reachable" in w for w in r.json()["packs"][0]["warnings"])


async def test_import_with_a_violating_row_is_refused_naming_the_rule(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        headers = stack.auth(Role.ADMIN)
        text = (await stack.client.get("/api/packs/sim/1/parameters/export?format=csv", headers=headers)).text
        assert "CELL_OV_Stop,3.380," in text
        bad = text.replace("CELL_OV_Stop,3.380,", "CELL_OV_Stop,3.8,")
        sent = stack.bus_requests
        for apply in ("false", "true"):
            r = await stack.client.post(
                f"/api/packs/sim/1/parameters/import?format=csv&apply={apply}&allow_inferred=true",
                content=bad.encode(),
                headers=headers,
            )
            assert r.status_code == 422 and RULE in r.json()["detail"], r.text
            broken = next(e for e in r.json()["errors"] if e["rule"] == RULE)
            assert broken["rows"] == [1, 3]  # CELL_OV_Start and CELL_OV_Stop, as numbered in the file
        assert stack.bus_requests == sent
        assert stack.sim.pack(1).params["CELL_OV_Stop"] == pytest.approx(3.38)


async def test_load_origin_passes_the_rules(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        r = await stack.client.post(
            "/api/parameters/load-origin", json={"allow_inferred": True}, headers=stack.auth(Role.ADMIN)
        )
        assert r.status_code == 200 and r.json()["outcome"] == "ok", r.text


async def test_pace_rules_refuse_a_release_above_the_trip(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, protocol="pace", packs=1) as stack:
        r = await put(stack, "/api/packs/sim/1/parameters", {"values": {"Cell OVP Release": 3.75}})
        assert r.status_code == 422 and "prot.cell_ov.release_below_trip" in r.json()["detail"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    with ThreadedGateway(tmp_path_factory.mktemp("rules-cli")) as gw:
        yield gw


def test_cli_human_mode_refuses_and_names_the_rule(
    gateway: ThreadedGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> int:
        return main(
            ["admin", "params", "set", *args, "--url", gateway.url, "--token", gateway.token(Role.ADMIN)]
        )

    assert run("sim/1", "CELL_OV_Start=3.651", "--allow-inferred") == 0
    out = capsys.readouterr().out
    assert "verified" in out
    assert run("sim/1", "CELL_OV_Stop=3.8", "--allow-inferred") == 4
    captured = capsys.readouterr()
    assert RULE in captured.err and "CELL_OV_Stop" in captured.err and "Traceback" not in captured.err
    assert run("sim/1", "CELL_OV_Stop=3.8", "--allow-inferred", "--force") == 4
    assert RULE in capsys.readouterr().err
    assert run("sim/1", "CELL_OV_Delay=4000", "--allow-inferred") == 4
    assert "--force" in capsys.readouterr().err
    assert run("sim/1", "CELL_OV_Delay=4000", "--allow-inferred", "--force") == 0
    out = capsys.readouterr().out
    assert "verified" in out and "forced:" in out
