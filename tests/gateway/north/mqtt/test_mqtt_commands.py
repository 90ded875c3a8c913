"""Admin commands over MQTT against a real broker (Mosquitto, else amqtt) and the real admin stack with
the simulator: off by default (nothing heard), authenticated by the admin tokens, authorized by role,
validated and audited by the admin service, replies on `<base>/cmd/<action>/reply` or `reply_to`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app.config import MqttConfig
from gateway.north.mqtt.commands import ACTIONS, CommandHandler
from gateway.north.mqtt.publisher import MqttService, install
from gateway.ops.security.auth import Role, TokenStore
from tests.support import REPO
from tests.support.admin_support import Stack, admin_stack
from tests.support.mqtt_broker import Broker, Recorder, recording

BASE = "bmsgw"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Peer(Recorder):
    """An automation on the broker: publishes commands, records every message under its filters."""

    def replies(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [
            json.loads(p)
            for t, p, _ in self.messages
            if (t == topic if topic is not None else t.endswith("/reply"))
        ]

    async def send(self, action: str, payload: dict[str, Any] | bytes, *, retain: bool = False) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(f"{BASE}/cmd/{action}", raw, qos=1, retain=retain)

    async def command(
        self, action: str, payload: dict[str, Any] | bytes, *, reply_topic: str | None = None
    ) -> dict[str, Any]:
        """Publish a command and wait for the reply with its request id (or the next reply on the topic
        when the payload carries no request id)."""
        topic = reply_topic or f"{BASE}/cmd/{action}/reply"
        rid = payload.get("request_id") if isinstance(payload, dict) else None
        seen = len(self.replies(topic))
        await self.send(action, payload)

        def found() -> dict[str, Any] | None:
            for doc in self.replies(topic)[seen:]:
                if rid is None or doc.get("request_id") == rid:
                    return doc
            return None

        await self.wait(lambda: found() is not None)
        doc = found()
        assert doc is not None
        return doc


@contextlib.asynccontextmanager
async def peer(port: int, *filters: str) -> AsyncIterator[Peer]:
    async with recording(port, filters, Peer) as p:
        yield p


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, broker: Broker, *, commands: bool = True, **options: Any
) -> AsyncIterator[tuple[Stack, MqttService, Peer]]:
    """The admin stack on the simulator plus the MQTT adapter installed from the configuration, and a
    peer that sees every command, reply and the gateway's status."""
    async with admin_stack(tmp_path, packs=2, **options) as stack:
        settings: dict[str, Any] = {
            "enabled": True,
            "url": f"mqtt://127.0.0.1:{broker.port}",
            "client_id": "gw-cmd-test",
            "base_topic": BASE,
            "min_interval_s": 0.0,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.3,
            "keepalive_s": 5,
        }
        if commands:
            settings["commands"] = True
        cfg = stack.ctx.config
        stack.ctx.config = cfg.model_copy(update={"mqtt": MqttConfig.model_validate(settings)})
        (service,) = install(stack.ctx)
        assert isinstance(service, MqttService)
        async with peer(broker.port, f"{BASE}/cmd/#", f"{BASE}/status", "homeassistant/device/#") as p:
            task = asyncio.create_task(service.run(lambda: None))
            try:
                # the birth is published after the command subscription: "online" means commands are heard
                await p.wait(lambda: any(t == f"{BASE}/status" and m == b"online" for t, m, _ in p.messages))
                yield stack, service, p
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def param(stack: Stack, address: int, name: str) -> float | None:
    snap = stack.ctx.store.view.pack("sim", address)
    assert snap is not None and snap.parameters is not None
    return snap.parameters.get(name)


@pytest.mark.e2e
async def test_commands_are_off_by_default(tmp_path: Path, broker: Broker) -> None:
    assert MqttConfig().commands is False
    async with gateway(tmp_path, broker, commands=False) as (stack, service, p):
        assert service.commands is None
        before_requests = stack.bus_requests
        body = {
            "token": stack.tokens[Role.ADMIN],
            "request_id": "off-1",
            "pack": "sim/1",
            "values": {"CELL_OV_Start": 3.6},
            "allow_inferred": True,
        }
        await p.send("parameters_write", body)
        # barrier: Home Assistant's "online" makes the gateway re-publish discovery; had the gateway
        # subscribed to commands, the command published before it would have reached it first
        configs = sum(1 for t, _, _ in p.messages if t.startswith("homeassistant/device/"))
        await p.client.publish("homeassistant/status", b"online", qos=1)
        await p.wait(lambda: sum(1 for t, _, _ in p.messages if t.startswith("homeassistant/")) > configs)
        await asyncio.sleep(0.3)
        assert p.replies() == []
        assert stack.bus_requests == before_requests
        assert stack.sim.pack(1).params["CELL_OV_Start"] == pytest.approx(3.7)
        assert stack.admin.audit_log.query(limit=100) == []


@pytest.mark.e2e
async def test_commands_through_the_admin_service(tmp_path: Path, broker: Broker) -> None:
    async with gateway(tmp_path, broker) as (stack, service, p):
        admin, viewer = stack.tokens[Role.ADMIN], stack.tokens[Role.VIEWER]
        who = await p.command("whoami", {"token": viewer, "request_id": 1, "client_id": "ha"})
        assert who["status"] == 200 and who["request_id"] == 1
        assert who["result"]["role"] == "viewer" and who["result"]["client"] == "mqtt:ha"

        # an admin token writes a parameter: verified by read-back in the reply and in the model
        body = {
            "token": admin,
            "request_id": "w-1",
            "client_id": "node-red",
            "pack": "sim/1",
            "values": {"CELL_OV_Start": 3.65},
            "allow_inferred": True,
        }
        r = await p.command("parameters_write", body)
        assert r["status"] == 200, r
        assert r["action"] == "parameters_write" and r["result"]["outcome"] == "ok"
        (item,) = r["result"]["packs"][0]["items"]
        assert item["before"] == pytest.approx(3.7) and item["after"] == pytest.approx(3.65)
        assert item["outcome"] == "verified"
        assert stack.sim.pack(1).params["CELL_OV_Start"] == pytest.approx(3.65)
        assert param(stack, 1, "CELL_OV_Start") == pytest.approx(3.65)
        assert param(stack, 2, "CELL_OV_Start") == pytest.approx(3.7)  # only the pack named
        read = await p.command(
            "parameters_read",
            {"token": admin, "request_id": "r-1", "pack": "sim/1", "names": ["CELL_OV_Start"]},
        )
        assert read["status"] == 200
        assert [(x["name"], x["value"]) for x in read["result"]["parameters"]] == [("CELL_OV_Start", 3.65)]
        entry = stack.admin.audit_log.query(action="parameters.write")[0]
        assert entry.outcome == "ok" and entry.client == "mqtt:node-red"
        assert entry.before == {"sim/1": {"CELL_OV_Start": 3.7}}
        assert entry.after == {"sim/1": {"CELL_OV_Start": 3.65}}
        written = len(stack.admin.audit_log.query(limit=1000))

        # a viewer token: 403, nothing on the bus, audited as a refusal
        requests = stack.bus_requests
        body.update(token=viewer, request_id="w-2", values={"CELL_OV_Start": 3.55})
        r = await p.command("parameters_write", body)
        assert r["status"] == 403 and "admin role" in r["error"] and "viewer role" in r["error"]
        assert stack.bus_requests == requests
        assert stack.sim.pack(1).params["CELL_OV_Start"] == pytest.approx(3.65)
        entry = stack.admin.audit_log.query(action="parameters.write")[0]
        assert (entry.outcome, entry.role, entry.client) == ("refused", "viewer", "mqtt:node-red")
        assert entry.detail.startswith("403")

        # an unknown token: 401, audited with the token id it named
        body.update(token="bmsg_deadbeef_nope", request_id="w-3")
        r = await p.command("parameters_write", body)
        assert r["status"] == 401 and "unknown token" in r["error"]
        entry = stack.admin.audit_log.query(action="parameters.write")[0]
        assert (entry.outcome, entry.token_id, entry.role) == ("refused", "deadbeef", "none")
        assert entry.request["keys"] == sorted(body) and "values" not in entry.request  # names only

        # malformed JSON: a clear 422 reply (no request id to echo), audited, the adapter keeps serving
        r = await p.command("parameters_write", b'{"token": "bmsg_x_y", "values": ')
        assert r["status"] == 422 and "not valid JSON" in r["error"] and r["request_id"] is None
        r = await p.command("control", b"[1, 2]")
        assert r["status"] == 422 and "JSON object" in r["error"]
        assert stack.admin.audit_log.query(action="control")[0].outcome == "refused"

        # out of range: 422 naming the parameter and the range, nothing on the bus
        requests = stack.bus_requests
        body.update(token=admin, request_id="w-4", values={"CELL_OV_Start": 9.0})
        r = await p.command("parameters_write", body)
        assert r["status"] == 422 and r["errors"][0]["parameter"] == "CELL_OV_Start"
        assert r["errors"][0]["allowed"] and stack.bus_requests == requests
        assert stack.sim.pack(1).params["CELL_OV_Start"] == pytest.approx(3.65)
        # arguments the command does not know: 422 before anything runs
        r = await p.command("parameters_write", {**body, "request_id": "w-5", "colour": "red"})
        assert r["status"] == 422 and r["errors"][0]["parameter"] == "colour"

        # one audit entry per command since the write: 403, 401, two malformed, two 422
        entries = stack.admin.audit_log.query(limit=1000)
        assert len(entries) - written == 6
        assert all(e.client.startswith("mqtt:") for e in entries)
        assert service.stats.connected and service.commands is not None
        assert service.commands.stats.replied >= 9


@pytest.mark.e2e
async def test_controls_clock_protocols_and_reply_to(tmp_path: Path, broker: Broker) -> None:
    async with gateway(tmp_path, broker, realtime_interval_s=0.1) as (stack, _service, p):
        admin, operator = stack.tokens[Role.ADMIN], stack.tokens[Role.OPERATOR]
        r = await p.command(
            "control", {"token": admin, "request_id": "c1", "pack": "sim/1", "control": "fan"}
        )
        assert r["status"] == 200 and r["result"]["items"][0]["outcome"] in ("verified", "written")
        assert stack.sim.pack(1).fan_on
        r = await p.command(
            "control", {"token": admin, "request_id": "c2", "pack": "sim/1", "control": "current_limiter"}
        )
        assert r["status"] == 409 and "no documented command" in r["error"]
        r = await p.command(
            "control", {"token": operator, "request_id": "c3", "pack": "sim/1", "control": "fan", "on": False}
        )
        assert r["status"] == 403 and stack.sim.pack(1).fan_on
        late = {"token": admin, "request_id": "c4", "pack": "sim/1", "control": "fan", "on": False}
        r = await p.command("control", {**late, "expires_at": time.time() - 60})
        assert r["status"] == 409 and "expired" in r["error"] and stack.sim.pack(1).fan_on
        assert [e.outcome for e in stack.admin.audit_log.query(action="control")] == [
            "refused",
            "refused",
            "refused",
            "ok",
        ]
        r = await p.command("control", {**late, "request_id": "c5", "expires_at": time.time() + 600})
        assert r["status"] == 200 and not stack.sim.pack(1).fan_on

        r = await p.command("clock_sync", {"token": operator, "request_id": "k1", "packs": "all"})
        assert r["status"] == 200 and r["result"]["written"] == ["sim/1", "sim/2"]
        r = await p.command("clock_sync", {"token": operator, "request_id": "k2"})
        assert r["status"] == 422 and "exactly one of" in r["error"]

        r = await p.command("gateway_protocols", {"token": admin, "request_id": "g1", "can": "warp"})
        assert r["status"] == 422 and "unknown CAN protocol" in r["error"]
        assert stack.ctx.config.can.protocol == "pylon"

        # reply_to: honoured under <base>/cmd/ (two levels or more), refused elsewhere
        mine = f"{BASE}/cmd/replies/automation-7"
        r = await p.command(
            "whoami", {"token": operator, "request_id": "t1", "reply_to": mine}, reply_topic=mine
        )
        assert r["status"] == 200 and r["result"]["role"] == "operator"
        r = await p.command(
            "whoami", {"token": operator, "request_id": "t2", "reply_to": f"{BASE}/bank/state"}
        )
        assert r["status"] == 422 and "reply_to" in r["error"]
        r = await p.command("self_destruct", {"token": admin, "request_id": "x"})
        assert r["status"] == 404 and "parameters_write" in r["error"]
        # no reply is ever retained
        assert not any(retained for t, _, retained in p.messages if "/cmd/" in t)


@pytest.mark.e2e
async def test_retained_commands_are_ignored(tmp_path: Path, broker: Broker) -> None:
    _, token = TokenStore(tmp_path / "state" / "tokens.json").create(Role.ADMIN, "early")  # valid
    body = {"token": token, "request_id": "ret", "pack": "sim/1", "values": {"CELL_OV_Start": 3.6}}
    async with peer(broker.port) as early:  # stored by the broker before the gateway subscribes
        await early.send("parameters_write", body, retain=True)
    async with gateway(tmp_path, broker) as (stack, service, p):
        handler = service.commands
        assert handler is not None
        # the broker hands the stored message over right after the subscription, before any later
        # command: once a later command is answered the retained one was seen, and ignored
        r = await p.command("whoami", {"token": stack.tokens[Role.VIEWER], "request_id": "after"})
        assert r["status"] == 200 and handler.stats.ignored_retained >= 1  # amqtt may hand it over twice
        assert [d["request_id"] for d in p.replies()] == ["after"]
        assert stack.sim.pack(1).params["CELL_OV_Start"] == pytest.approx(3.7)
        assert [e.action for e in stack.admin.audit_log.query(limit=100)] == ["mqtt.whoami"]


@pytest.mark.e2e
async def test_rate_limit_is_the_admin_api_budget(tmp_path: Path, broker: Broker) -> None:
    async with gateway(tmp_path, broker, rate=3) as (stack, service, p):
        token = stack.tokens[Role.VIEWER]
        codes = [(await p.command("whoami", {"token": token, "request_id": i}))["status"] for i in range(4)]
        assert codes == [200, 200, 200, 429]
        handler = service.commands
        assert handler is not None and handler.stats.rate_limited == 1
        whoami = stack.admin.audit_log.query(action="mqtt.whoami", limit=100)
        assert len(whoami) == 3 and all(e.outcome == "ok" for e in whoami)  # the 429 is not audited
        assert (await p.command("whoami", {"token": stack.tokens[Role.OPERATOR], "request_id": 9}))[
            "status"
        ] == 200
        # unauthenticated senders share one budget; beyond it they are dropped without reply or audit
        for i in range(3):
            r = await p.command("whoami", {"token": "bmsg_a_b", "request_id": f"a{i}"})
            assert r["status"] == 401
        await p.send("whoami", {"token": "bmsg_a_b", "request_id": "a3"})
        await p.wait(lambda: handler.stats.dropped_anonymous == 1)
        assert len(stack.admin.audit_log.query(action="mqtt.whoami", token_id="a")) == 3


# ---- the handler without a broker -----------------------------------------------------------------


@pytest.mark.e2e
async def test_handler_topics_and_action_table(tmp_path: Path) -> None:
    async with admin_stack(tmp_path, packs=1) as stack:
        handler = CommandHandler.from_context(stack.ctx)
        assert handler.topic_filter == "bms-gateway/cmd/+"
        assert handler.action_of("bms-gateway/cmd/control") == "control"
        assert handler.action_of("bms-gateway/cmd/control/reply") is None
        assert handler.action_of("bms-gateway/state") is None
        assert handler.action_of("bms-gateway/cmd/") is None
        assert {a.role for a in ACTIONS.values()} == {Role.VIEWER, Role.OPERATOR, Role.ADMIN}
        reply = await handler.handle("whoami", b"\xff\xfe")
        assert reply is not None and reply.status == 422 and "UTF-8" in reply.document["error"]
        reply = await handler.handle("whoami", json.dumps({"request_id": "n"}).encode())
        assert reply is not None and reply.status == 401 and reply.document["request_id"] == "n"
        assert reply.topic == "bms-gateway/cmd/whoami/reply"
        ok = await handler.handle("whoami", json.dumps({"token": stack.tokens[Role.ADMIN]}).encode())
        assert ok is not None and ok.status == 200 and ok.document["result"]["client"] == "mqtt:unknown"
        assert handler.submit("bms-gateway/cmd/whoami", b"{}", retain=True) is False

        admin = stack.tokens[Role.ADMIN]
        requests = stack.bus_requests
        dry = {"token": admin, "pack": "sim/1", "values": {"CELL_OV_Start": 3.6}, "dry_run": True}
        reply = await handler.handle("parameters_write", json.dumps(dry).encode())
        assert reply is not None and reply.status == 200
        (item,) = reply.document["result"]["packs"][0]["items"]
        assert (item["outcome"], item["before"], item["requested"]) == ("would_change", 3.7, 3.6)
        assert stack.bus_requests == requests and stack.sim.pack(1).params["CELL_OV_Start"] == 3.7
        assert stack.admin.audit_log.query(action="parameters.write")[0].outcome == "dry_run"
        # an unknown pack: 404 from the service, which does not audit it; this layer does
        reply = await handler.handle("clock_sync", json.dumps({"token": admin, "pack": "sim/9"}).encode())
        assert reply is not None and reply.status == 404 and "sim/9" in reply.document["error"]
        entry = stack.admin.audit_log.query(action="clock.sync")[0]
        assert (entry.outcome, entry.packs, entry.detail[:3]) == ("refused", ["sim/9"], "404")


def test_every_command_is_documented() -> None:
    doc = (REPO / "docs" / "mqtt.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Commands over MQTT") :]
    assert all(f"| `{name}` |" in section for name in ACTIONS)


# ---- the whole gateway -----------------------------------------------------------------------------


@pytest.mark.e2e
async def test_run_app_wires_commands_to_the_admin_service(tmp_path: Path, broker: Broker) -> None:
    """`bms-gateway run` with the built-in simulator and `[mqtt] commands = true`: a parameter written
    over MQTT reaches the simulated pack, shows in the model, and is in the audit log."""
    from gateway.app.config import Config
    from gateway.app.context import AppContext
    from gateway.app.wiring import run_app

    state = tmp_path / "state"
    _, token = TokenStore(state / "tokens.json").create(Role.ADMIN, "e2e")
    config = Config.model_validate(
        {
            "state_dir": str(state),
            "http": {"listen": "127.0.0.1:0"},
            "modbus": {"enabled": False},
            "simulator": {"enabled": True, "packs": 1, "profile": "idle"},
            "admin": {"allow_inferred_writes": True},
            "mqtt": {
                "enabled": True,
                "commands": True,
                "url": f"mqtt://127.0.0.1:{broker.port}",
                "client_id": "e2e-cmd",
                "base_topic": BASE,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.3,
            },
        }
    )
    stop = asyncio.Event()
    ready: asyncio.Future[AppContext] = asyncio.get_running_loop().create_future()
    async with peer(broker.port, f"{BASE}/cmd/#", f"{BASE}/status") as p:
        app = asyncio.ensure_future(
            run_app(config, None, install_signals=False, stop=stop, on_all_ready=ready.set_result)
        )
        try:
            ctx = await asyncio.wait_for(asyncio.shield(ready), 20)
            await p.wait(lambda: any(t == f"{BASE}/status" and m == b"online" for t, m, _ in p.messages))
            assert ctx.simulator is not None
            body = {
                "token": token,
                "request_id": "e2e",
                "client_id": "e2e-test",
                "pack": "sim/1",
                "values": {"CELL_OV_Start": 3.62},
                "allow_inferred": True,
            }
            for _ in range(400):  # the first poll (protocol detected, parameters read) is the point
                first = ctx.store.view.pack("sim", 1)
                if first is not None and first.parameters is not None:
                    break
                await asyncio.sleep(0.05)
            r = await p.command("parameters_write", body)
            assert r["status"] == 200, r
            assert r["result"]["packs"][0]["items"][0]["outcome"] == "verified"
            assert ctx.simulator.pack(1).params["CELL_OV_Start"] == pytest.approx(3.62)
            snap = ctx.store.view.pack("sim", 1)
            assert snap is not None and snap.parameters is not None
            assert snap.parameters.get("CELL_OV_Start") == pytest.approx(3.62)
            entries = ctx.extras["admin"].audit_log.query(action="parameters.write")
            assert entries[0].outcome == "ok" and entries[0].client == "mqtt:e2e-test"
        finally:
            stop.set()
            assert await asyncio.wait_for(app, 20) == 0
