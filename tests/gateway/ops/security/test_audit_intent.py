"""A write killed mid-flight (issue 20, failure 2): 4 of 8 SIGKILLs during a 3.1 s parameter write
changed the pack and left no audit entry. Now the intent is in the audit log before the first byte
goes to the pack and the outcome after, closing it; an intent no outcome closes is "in_progress"
while its process runs and "interrupted" after, in the API and the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.ops.security.audit import AuditLog, Intent
from gateway.ops.security.auth import Principal, Role
from tests.support.admin_support import admin_stack
from tests.support.gateway_process import cli, start, stop, write_config

# Tianpower commands that only read (protocol.bms.tianpower.messages.Cmd); 0xDC reads and writes
READS = {0x01, 0x06, 0x33, 0x42, 0x43, 0x45, 0xF1, 0xF3, 0x39, 0x3A, 0x3B, 0x3C, 0x3D}


class _Who:
    principal = Principal("t-1", Role.ADMIN)
    client = "127.0.0.1"


def test_an_intent_without_outcome_is_in_progress_then_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path)
    intent = Intent(log, _Who(), "parameters.write", {"values": {"CELL_OV_Start": 3.6}})
    asyncio.run(intent.before_first_byte(["sim/1"], before={"CELL_OV_Start": 3.65}))
    closed = Intent(log, _Who(), "clock.sync", {"packs": ["sim/2"]})
    asyncio.run(closed.before_first_byte(["sim/2"]))
    log.append(token_id="t-1", role="admin", client="x", action="clock.sync", outcome="ok", closes=closed.ids)
    shown = {e.action: e for e in log.query()}
    assert shown["parameters.write"].outcome == "in_progress" and shown["parameters.write"].before
    assert shown["clock.sync"].outcome == "ok" and shown["clock.sync"].closes == closed.ids
    assert [e.action for e in log.query()].count("clock.sync") == 1  # the closed intent is not shown
    log.close()
    after_restart = AuditLog(path)  # another process: nobody is running that write any more
    try:
        assert [(e.action, e.outcome) for e in after_restart.interrupted()] == [
            ("parameters.write", "interrupted")
        ]
    finally:
        after_restart.close()


async def test_the_intent_is_in_the_log_before_the_first_byte_of_every_write(tmp_path: Path) -> None:
    async with admin_stack(tmp_path) as stack:
        seen: list[tuple[str, int]] = []  # (first request byte of each write, open intents at that moment)
        original = stack.owner.transact

        async def spy(request: bytes, *args: Any, **kw: Any) -> Any:
            rows = stack.admin.audit_log._db.execute("SELECT count(*) FROM audit WHERE outcome = 'intent'")
            seen.append((request.hex(), rows.fetchone()[0]))
            return await original(request, *args, **kw)

        stack.owner.transact = spy  # type: ignore[method-assign]
        auth = stack.auth(Role.ADMIN)
        writes = [
            (
                "PUT",
                "/api/packs/sim/1/parameters",
                {"values": {"CELL_OV_Stop": 3.41}, "allow_inferred": True},
            ),
            ("PUT", "/api/parameters", {"values": {"CELL_OV_Stop": 3.42}, "allow_inferred": True}),
            ("POST", "/api/clock/sync", {"packs": ["sim/2"]}),
            ("POST", "/api/packs/sim/1/control", {"action": "buzzer", "on": True, "allow_inferred": True}),
            ("PUT", "/api/packs/sim/3/serial", {"serial": "BG-0099"}),
        ]
        for method, path, body in writes:
            before = len(seen)
            intents_before = stack.admin.audit_log._db.execute(
                "SELECT count(*) FROM audit WHERE outcome = 'intent'"
            ).fetchone()[0]
            r = await stack.client.request(method, path, json=body, headers=auth)
            assert r.status_code == 200, (path, r.text)
            # every request that may change the pack went out after its intent was in the log
            changing = [(req, n) for req, n in seen[before:] if bytes.fromhex(req)[2] not in READS]
            assert changing, path
            assert all(n > intents_before for _, n in changing), (path, changing)
        stack.owner.transact = original  # type: ignore[method-assign]
        entries = stack.admin.audit_log.query(limit=100)
        assert not [e for e in entries if e.outcome in ("intent", "in_progress", "interrupted")]
        written = [
            e for e in entries if e.action in ("parameters.write", "clock.sync", "control", "config.serial")
        ]
        assert len(written) == len(writes) and all(e.closes for e in written)


@pytest.mark.e2e
def test_a_gateway_killed_mid_write_leaves_an_interrupted_entry(tmp_path: Path) -> None:
    # paced at 9600 baud: a write of every parameter takes seconds, time to be killed in the middle
    config = write_config(tmp_path, packs=1)
    config.write_text(
        config.read_text().replace('profile = "idle"', 'profile = "idle"\nbaud = 9600\npacing = true')
    )
    gw = start(config)
    auth = {"Authorization": f"Bearer {gw.token}"}
    db = tmp_path / "state" / "audit.sqlite"
    try:
        with httpx.Client(base_url=gw.url, headers=auth, timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:  # the parameters are read once before a write can be planned
                params = client.get("/api/packs/sim/1/parameters")
                if params.status_code == 200:
                    break
                assert time.monotonic() < deadline, params.text
                time.sleep(0.2)
            values = {p["name"]: p["value"] for p in params.json()["parameters"] if p["value"] is not None}
            answered: list[int] = []

            def write() -> None:
                try:
                    r = client.put(
                        "/api/packs/sim/1/parameters", json={"values": values, "allow_inferred": True}
                    )
                    answered.append(r.status_code)
                except httpx.HTTPError:
                    answered.append(0)

            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            deadline = time.monotonic() + 30
            while not _intents(db):  # kill as soon as the intent is in the log
                assert time.monotonic() < deadline and not answered, "the write never recorded its intent"
                time.sleep(0.005)
            gw.proc.send_signal(signal.SIGKILL)
            gw.proc.wait(10)
            writer.join(30)
        assert gw.proc.returncode == -signal.SIGKILL and answered in ([0], [])
    finally:
        stop(gw)
    gw2 = start(config)
    try:
        env_args = ["--url", gw2.url, "--token", gw2.token]
        done = cli("admin", "audit", "--json", *env_args)
        assert done.returncode == 0, done.stderr
        entries = json.loads(done.stdout)
        cut = [e for e in entries if e["outcome"] == "interrupted"]
        assert [e["action"] for e in cut] == ["parameters.write"] and cut[0]["packs"] == ["sim/1"]
        assert cut[0]["before"]  # what the pack held before, for whoever checks it
        human = cli("admin", "audit", *env_args)
        assert human.returncode == 0 and "interrupted" in human.stdout
        assert "1 write(s) interrupted" in human.stdout and "sim/1" in human.stdout
    finally:
        stop(gw2)


def _intents(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            return int(con.execute("SELECT count(*) FROM audit WHERE outcome = 'intent'").fetchone()[0])
    except sqlite3.Error:
        return 0
