"""The records and upgrades API (history, recording, firmware) and its CLI, on the admin test stack:
roles (401/403), downloads with progress, exports, pack settings, SSE progress of a firmware job,
audit entries, and `bms-gateway admin history|record|firmware` with its exit codes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest

from gateway.cli.main import main
from gateway.north.http import create_app
from gateway.north.http.records import install as install_records
from gateway.ops.security.auth import Role
from tests.support.admin_support import admin_stack
from tests.support.records_support import (
    NEW_VERSION,
    RECORDS,
    RecordsGateway,
    fill_history,
    firmware_image,
    records_stack,
    wait_no_download,
)

pytestmark = pytest.mark.e2e

ENDPOINTS: list[tuple[str, str, Role, dict[str, Any] | None]] = [
    ("POST", "/api/history/pull", Role.OPERATOR, {"bus": "sim", "address": 1}),
    ("POST", "/api/history/stop", Role.OPERATOR, {"bus": "sim"}),
    ("GET", "/api/history/jobs", Role.OPERATOR, None),
    ("GET", "/api/history/records", Role.VIEWER, None),
    ("GET", "/api/history/export", Role.VIEWER, None),
    ("GET", "/api/history/events", Role.VIEWER, None),
    ("GET", "/api/packs/sim/1/history/interval", Role.OPERATOR, None),
    ("PUT", "/api/packs/sim/1/history/interval", Role.ADMIN, {"interval_min": 30}),
    ("GET", "/api/packs/sim/1/history/record-time", Role.OPERATOR, None),
    ("POST", "/api/packs/sim/1/history/delete", Role.ADMIN, {"confirm": None}),
    ("GET", "/api/recording", Role.VIEWER, None),
    ("GET", "/api/recording/samples", Role.VIEWER, None),
    ("GET", "/api/recording/compare", Role.VIEWER, None),
    ("GET", "/api/recording/export", Role.VIEWER, None),
    ("PUT", "/api/recording/interval", Role.ADMIN, {"interval_s": 5}),
    ("GET", "/api/firmware/images", Role.ADMIN, None),
    ("POST", "/api/firmware/jobs", Role.ADMIN, {"bus": "sim", "address": 1, "image": "0" * 16}),
    ("GET", "/api/firmware/jobs", Role.OPERATOR, None),
    ("POST", "/api/firmware/jobs/nope/abort", Role.ADMIN, None),
    ("GET", "/api/history/jobs/events?bus=sim&address=2", Role.OPERATOR, None),
    ("PUT", "/api/packs/sim/1/history/record-time", Role.ADMIN, {"which": "start", "when": "bad"}),
    ("POST", "/api/firmware/images", Role.ADMIN, None),
    ("GET", "/api/firmware/jobs/nope", Role.OPERATOR, None),
    ("GET", "/api/firmware/jobs/nope/events", Role.OPERATOR, None),
    ("POST", "/api/firmware/jobs/nope/resume", Role.ADMIN, None),
]


def _template(path: str) -> str:
    """The OpenAPI path template of a concrete test path."""
    return path.split("?")[0].replace("/sim/1/", "/{bus}/{address}/").replace("/nope", "/{job_id}")


async def test_each_role_against_each_endpoint(tmp_path: Path) -> None:
    async with records_stack(tmp_path) as (stack, client, _services):
        doc = (await client.get("/api/openapi.json")).json()
        documented = {
            (method.upper(), path)
            for path, ops in doc["paths"].items()
            for method, op in ops.items()
            if "records" in op.get("tags", [])
        }
        assert documented == {(m, _template(p)) for m, p, _, _ in ENDPOINTS}  # the table covers every route
        for method, path, need, body in ENDPOINTS:
            r = await client.request(method, path, json=body)
            assert r.status_code == 401, (path, r.text)
            assert f"{need.label} role" in r.json()["detail"]
            for role in Role:
                r = await client.request(method, path, json=body, headers=stack.auth(role))
                if role < need:
                    assert r.status_code == 403, (path, role, r.text)
                    assert f"needs a bearer token with the {need.label} role" in r.json()["detail"]
                else:
                    assert r.status_code not in (401, 403), (path, role, r.text)
        await wait_no_download(client, stack)


async def test_history_over_the_api(tmp_path: Path) -> None:
    async with records_stack(tmp_path) as (stack, client, _services):
        op, admin, viewer = stack.auth(Role.OPERATOR), stack.auth(Role.ADMIN), stack.auth(Role.VIEWER)
        r = await client.post("/api/history/pull", json={"bus": "sim"}, headers=op)
        assert r.status_code == 200 and r.json()[0]["pack"] == "sim/1"
        again = await client.post("/api/history/pull", json={"bus": "sim", "address": 1}, headers=op)
        assert again.status_code in (200, 409)  # refused while sim/1 still runs, else a new run
        doc = await wait_no_download(client, stack)
        jobs = {j["pack"]: j for j in doc["jobs"]}
        assert set(jobs) == {"sim/1", "sim/2"} and all(j["state"] == "done" for j in jobs.values())
        counts = {a: stack.sim.pack(a).history.count for a in stack.sim.addresses}
        # the SSE stream of a finished job: its final state, then the end of the stream
        r = await client.get("/api/history/jobs/events", params={"bus": "sim", "address": 2}, headers=op)
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1]["state"] == "done" and events[-1]["next_index"] == counts[2]

        r = await client.get(
            "/api/history/records", params={"bus": "sim", "address": 1, "limit": 5}, headers=viewer
        )
        assert r.json()["total"] == counts[1] and len(r.json()["records"]) == 5
        r = await client.get("/api/history/records", params={"event": "Timing record"}, headers=viewer)
        assert r.json()["total"] == 2 * RECORDS
        r = await client.get("/api/history/records", params={"since": 10, "until": 5}, headers=viewer)
        assert r.status_code == 422 and "empty" in r.json()["detail"]
        for params in ({"offset": 10**20}, {"since": "inf"}, {"until": "nan"}):
            r = await client.get("/api/history/records", params=params, headers=viewer)
            assert r.status_code == 422, (params, r.text)
        r = await client.get("/api/recording/samples", params={"packs": "sim/" + "9" * 25}, headers=viewer)
        assert r.status_code == 422 and "0..15" in r.json()["detail"]

        r_csv = await client.get(
            "/api/history/export", params={"format": "csv", "bus": "sim"}, headers=viewer
        )
        r_xlsx = await client.get(
            "/api/history/export", params={"format": "xlsx", "bus": "sim"}, headers=viewer
        )
        assert r_csv.headers["content-disposition"] == 'attachment; filename="history.csv"'
        rows = list(csv.reader(io.StringIO(r_csv.text)))
        (tmp_path / "h.xlsx").write_bytes(r_xlsx.content)
        wb = openpyxl.load_workbook(tmp_path / "h.xlsx", read_only=True)
        xrows = list(wb.active.iter_rows(values_only=True))  # type: ignore[union-attr]
        wb.close()
        assert len(rows) == len(xrows) == counts[1] + counts[2] + 1
        assert [r[0] for r in rows[1:]] == [str(x[0]) for x in xrows[1:]]  # same record ids, same order

        # storage interval and record times (Tianpower), written, read back, audited
        r = await client.put("/api/packs/sim/1/history/interval", json={"interval_min": 15}, headers=admin)
        assert r.json() == {"pack": "sim/1", "before_min": 60, "interval_min": 15, "outcome": "ok"}
        assert stack.sim.pack(1).history.interval_s == 900
        r = await client.get("/api/packs/sim/1/history/interval", headers=op)
        assert r.json()["interval_min"] == 15
        r = await client.put(
            "/api/packs/sim/1/history/record-time",
            json={"which": "start", "when": "2024-05-01T08:00:00"},
            headers=admin,
        )
        assert (
            r.status_code == 200
            and r.json()["start"] == "2024-05-01T08:00:00"
            and r.json()["outcome"] == "ok"
        )
        r = await client.put(
            "/api/packs/sim/1/history/record-time",
            json={"which": "start", "when": "yesterday"},
            headers=admin,
        )
        assert r.status_code == 422
        # delete in the pack: explicit confirmation, then an honest "not supported"
        r = await client.post("/api/packs/sim/1/history/delete", json={}, headers=admin)
        assert r.status_code == 422 and 'confirm = "DELETE"' in r.json()["detail"]
        r = await client.post("/api/packs/sim/1/history/delete", json={"confirm": "DELETE"}, headers=admin)
        assert r.status_code == 409 and "no wire command" in r.json()["detail"]
        assert stack.sim.pack(1).history.count == counts[1]
        r = await client.get("/api/audit", params={"limit": 100}, headers=admin)
        audit = [(e["action"], e["outcome"]) for e in r.json()]
        for entry in [
            ("history.pull", "ok"),
            ("history.interval", "ok"),
            ("history.record_time", "ok"),
            ("history.record_time", "refused"),
            ("history.delete", "refused"),
        ]:
            assert entry in audit


async def test_a_bus_pull_lists_the_packs_that_do_not_answer_as_failed(tmp_path: Path) -> None:
    # sim/1 and sim/3 are configured but never answered: no identity, so their downloads cannot start
    async with admin_stack(tmp_path, packs=3, silent=(1, 3)) as stack:
        fill_history(stack)
        install_records(stack.ctx)
        op = stack.auth(Role.OPERATOR)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(stack.ctx)), base_url="http://gateway.test"
        ) as client:
            r = await client.post("/api/history/pull", json={"bus": "sim"}, headers=op)
            assert r.status_code == 200, r.text
            assert [(j["pack"], j["state"]) for j in r.json()] == [("sim/1", "failed")]
            r = await client.get("/api/history/jobs/events", params={"bus": "sim"}, headers=op)
            events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
            final = {e["pack"]: e for e in events}
            assert {p: e["state"] for p, e in final.items()} == {
                "sim/1": "failed",
                "sim/2": "done",
                "sim/3": "failed",
            }
            for pack in ("sim/1", "sim/3"):
                assert final[pack]["detail"].startswith(
                    f"not started, the pack does not answer: pack {pack}: its identity could not be read"
                ), final[pack]
            assert final["sim/2"]["next_index"] == stack.sim.pack(2).history.count
            # one pack alone: 504, as before
            r = await client.post("/api/history/pull", json={"bus": "sim", "address": 3}, headers=op)
            assert r.status_code == 504 and "sim/3" in r.json()["detail"]


async def test_recording_and_firmware_over_the_api(tmp_path: Path) -> None:
    async with records_stack(tmp_path) as (stack, client, services):
        viewer, admin = stack.auth(Role.VIEWER), stack.auth(Role.ADMIN)
        recorder = next(s for s in services if s.name == "recording")
        for _ in range(3):
            await recorder.tick()
        r = await client.get("/api/recording", headers=viewer)
        assert r.json()["rows"] == 6 and r.json()["stats"]["samples"] == 3
        r = await client.get("/api/recording/samples", params={"packs": ["sim/2"]}, headers=viewer)
        assert [s["pack"] for s in r.json()] == ["sim/2"] * 3
        r = await client.get(
            "/api/recording/compare", params={"value": "voltage_v", "since": 0}, headers=viewer
        )
        assert r.json()["packs"] == ["sim/1", "sim/2"] and len(r.json()["rows"]) == 3
        r = await client.get("/api/recording/compare", params={"value": "bogus"}, headers=viewer)
        assert r.status_code == 422
        r = await client.get("/api/recording/export", params={"format": "xlsx"}, headers=viewer)
        assert r.status_code == 200 and r.content[:2] == b"PK"

        bad = bytearray(firmware_image())
        bad[-1] ^= 1
        r = await client.post("/api/firmware/images", content=bytes(bad), headers=admin)
        assert r.status_code == 422 and "CRC32 mismatch" in r.json()["detail"]
        r = await client.post(
            "/api/firmware/images", params={"filename": "fw.bgfw"}, content=firmware_image(), headers=admin
        )
        assert r.status_code == 200
        image_id = r.json()["id"]
        r = await client.post(
            "/api/firmware/jobs", json={"bus": "sim", "address": 1, "image": image_id}, headers=admin
        )
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        r = await client.get(f"/api/firmware/jobs/{job_id}/events", headers=admin)
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1]["state"] == "done" and events[-1]["blocks_done"] == events[-1]["blocks_total"] == 24
        assert [e["blocks_done"] for e in events] == sorted(e["blocks_done"] for e in events)
        assert stack.sim.pack(1).bootloader.version == NEW_VERSION
        r = await client.get("/api/firmware/jobs", headers=stack.auth(Role.OPERATOR))
        assert r.json()["jobs"][0]["state"] == "done" and r.json()["packs_in_bootloader"] == []
        r = await client.post(f"/api/firmware/jobs/{job_id}/resume", headers=admin)
        assert r.status_code == 409
        r = await client.get("/api/audit", params={"limit": 100}, headers=admin)
        audit = {(e["action"], e["outcome"]) for e in r.json()}
        assert {
            ("firmware.upload", "refused"),
            ("firmware.upload", "ok"),
            ("firmware.flash", "started"),
        } <= audit
        assert ("firmware.result", "ok") in audit


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordsGateway]:
    with RecordsGateway(tmp_path_factory.mktemp("records-cli"), packs=2) as gw:
        yield gw


def cli(gw: RecordsGateway, role: Role, *args: str) -> list[str]:
    return ["admin", *args, "--url", gw.url, "--token", gw.token(role)]


def test_cli_history(gateway: RecordsGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(cli(gateway, Role.VIEWER, "history", "pull", "sim/1")) == 4  # operator needed
    assert "operator role" in capsys.readouterr().err
    assert main(cli(gateway, Role.OPERATOR, "history", "pull", "sim", "--json")) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]  # --json: JSON lines
    final = {d["pack"]: d for d in lines}
    assert set(final) == {"sim/1", "sim/2"} and all(d["state"] == "done" for d in final.values())
    assert main(cli(gateway, Role.OPERATOR, "history", "pull", "sim")) == 0  # human: a summary table
    out = capsys.readouterr().out
    assert "history download" in out and "│ sim/2 │ done" in out and "{" not in out
    assert main(cli(gateway, Role.VIEWER, "history", "list", "--pack", "sim/2", "--limit", "3")) == 0
    out = capsys.readouterr().out
    assert "Timing record" in out and f"of {RECORDS + 1})" in out
    target = tmp_path / "h.xlsx"
    assert (
        main(cli(gateway, Role.VIEWER, "history", "export", "-o", str(target), "--event", "Timing record"))
        == 0
    )
    capsys.readouterr()
    wb = openpyxl.load_workbook(target, read_only=True)
    assert sum(1 for _ in wb.active.iter_rows()) == 2 * RECORDS + 1  # type: ignore[union-attr]
    wb.close()
    assert main(cli(gateway, Role.OPERATOR, "history", "interval", "sim/2", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {"pack": "sim/2", "interval_min": 60}
    assert main(cli(gateway, Role.ADMIN, "history", "delete", "sim/2")) == 4  # no --confirm
    assert "cannot be undone" in capsys.readouterr().err
    assert main(cli(gateway, Role.ADMIN, "history", "list", "--since", "not-a-time")) == 2
    capsys.readouterr()


def test_cli_record_and_firmware(
    gateway: RecordsGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "rec.csv"
    assert main(cli(gateway, Role.VIEWER, "record", "export", "-o", str(target))) == 0
    capsys.readouterr()
    assert target.read_text().startswith("time_utc,at,pack,availability,measured_at,voltage_v")
    image = tmp_path / "fw.bgfw"
    image.write_bytes(firmware_image())
    assert main(cli(gateway, Role.OPERATOR, "firmware", "flash", "sim/2", str(image))) == 4
    capsys.readouterr()
    assert main(cli(gateway, Role.ADMIN, "firmware", "flash", "sim/2", str(image), "--json")) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1]["state"] == "done" and lines[-1]["new_version"] == NEW_VERSION
    assert lines[0]["state"] == "running" and lines[0]["blocks_done"] == 0  # the job as started
    job = lines[-1]["id"]
    assert main(cli(gateway, Role.OPERATOR, "firmware", "status", job, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "done"
    assert main(cli(gateway, Role.ADMIN, "firmware", "resume", job)) == 4  # done jobs do not resume
    assert main(cli(gateway, Role.ADMIN, "firmware", "abort", "0123456789ab")) == 2  # unknown job
    capsys.readouterr()
    # the same image again: the pack already runs it
    assert main(cli(gateway, Role.ADMIN, "firmware", "flash", "sim/2", str(image))) == 4
    assert "already runs" in capsys.readouterr().err


def test_cli_bus_pull_with_a_silent_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RecordsGateway(tmp_path, packs=3, silent=(3,)) as gw:
        assert main(cli(gw, Role.OPERATOR, "history", "pull", "sim")) == 1  # not every download is done
        rows = {
            line.split("│")[1].strip(): line
            for line in capsys.readouterr().out.splitlines()
            if "│ sim/" in line
        }
        assert set(rows) == {"sim/1", "sim/2", "sim/3"}
        assert "│ done" in rows["sim/1"] and "│ done" in rows["sim/2"]
        assert "│ failed" in rows["sim/3"] and "does not answer" in rows["sim/3"]
        assert main(cli(gw, Role.OPERATOR, "history", "pull", "sim/3")) == 1
        assert "504" in capsys.readouterr().err


def test_cli_bus_pull_without_waiting_names_a_pack_that_could_not_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the first pack of the bus is silent: `--no-wait` must not report it "started"
    with RecordsGateway(tmp_path, packs=2, silent=(1,)) as gw:
        code = main(cli(gw, Role.OPERATOR, "history", "pull", "sim", "--no-wait"))
        out = capsys.readouterr().out
        assert code == 1, out
        assert "started: sim/1" not in out
        failed = [line for line in out.splitlines() if line.startswith("failed: sim/1: ")]
        assert len(failed) == 1 and "does not answer" in failed[0], out
