"""Supervision (ready, restart with backoff, config errors, shutdown deadline) and a served gateway."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.app import wiring
from gateway.app.config import Config, ConfigError
from gateway.app.context import AppContext
from gateway.app.supervisor import ReadyCallback, ServiceState
from gateway.app.wiring import Supervisor, build_context, build_services, run_app
from gateway.cli.run import describe
from gateway.core.model import ModelStore
from gateway.north.http import bind


def ctx() -> AppContext:
    return AppContext(config=Config(), config_path=None, store=ModelStore())


class Steady:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cancelled = False

    async def run(self, ready: ReadyCallback) -> None:
        ready()
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled = True


class Flaky:
    """Crashes `failures` times, then runs."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts = 0

    async def run(self, ready: ReadyCallback) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise RuntimeError(f"boom {self.starts}")
        ready()
        await asyncio.Event().wait()


class BadConfig:
    name = "bad"

    async def run(self, ready: ReadyCallback) -> None:
        async with asyncio.TaskGroup() as tg:  # a config error inside a group still stops the start
            tg.create_task(self._fail())

    async def _fail(self) -> None:
        raise ConfigError("modbus.listen: cannot listen on '1.2.3.4:1'")


class Stubborn:
    name = "stubborn"

    async def run(self, ready: ReadyCallback) -> None:
        ready()
        for _ in range(100):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.5)  # ignores cancellation for a while
                return


async def test_crashing_service_restarts_with_backoff_others_keep_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = ctx()
    steady, flaky = Steady("steady"), Flaky(2)
    sup = Supervisor(c, [steady, flaky], restart_initial_s=0.01, restart_max_s=0.05)
    task = asyncio.ensure_future(sup.run())
    async with asyncio.timeout(5):
        await sup.all_ready.wait()
    assert flaky.starts == 3
    st = c.services["flaky"]
    assert st.restarts == 2 and st.last_error == "RuntimeError: boom 2" and st.state is ServiceState.READY
    assert sum("crashed" in r.getMessage() for r in caplog.records) == 2
    sup.stop()
    await task
    assert steady.cancelled
    assert {s.state for s in c.services.values()} == {ServiceState.STOPPED}
    assert not sup.timed_out and sup.fatal is None


async def test_config_error_stops_everything() -> None:
    c = ctx()
    steady = Steady("steady")
    sup = Supervisor(c, [steady, BadConfig()], restart_initial_s=0.01)
    async with asyncio.timeout(5):
        await sup.run()
    assert isinstance(sup.fatal, ConfigError) and "modbus.listen" in str(sup.fatal)
    assert steady.cancelled
    assert c.services["bad"].state is ServiceState.FAILED


async def test_shutdown_deadline_is_reported() -> None:
    c = ctx()
    sup = Supervisor(c, [Stubborn(), Steady("s")], shutdown_deadline_s=0.1)
    task = asyncio.ensure_future(sup.run())
    await sup.all_ready.wait()
    sup.stop()
    await task
    assert sup.timed_out


def test_unique_service_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor(ctx(), [Steady("a"), Steady("a")])


def test_http_bind_errors_are_config_errors() -> None:
    taken = bind("127.0.0.1:0")
    try:
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=r"http.listen: cannot listen on '127.0.0.1:\d+' \(address already"
        ):
            bind(f"127.0.0.1:{port}").close()
    finally:
        taken.close()
    with pytest.raises(ConfigError, match=r"http\.listen"):
        bind("no-such-host.invalid:80")


def test_build_context_without_bus_uses_the_simulator_and_unknown_protocols_fail() -> None:
    c = build_context(Config.model_validate({"simulator": {"packs": 2}}))
    assert c.simulator is not None and list(c.buses) == ["sim"]
    assert c.pack_keys == [("sim", 1), ("sim", 2)]
    names = [s.name for s in build_services(c)]
    assert names[:3] == ["simulator", "bus:sim", "poller:sim"] and names[-1] == "http"
    c2 = build_context(
        Config.model_validate(
            {
                "bus": [
                    {"name": "b", "url": "socket://127.0.0.1:1", "addresses": [1, 2], "names": {"2": "right"}}
                ]
            }
        )
    )
    assert c2.simulator is None and c2.store.view.pack("b", 2).name == "right"  # type: ignore[union-attr]


@pytest.mark.e2e
async def test_run_app_on_the_simulator_serves_http_and_stops_cleanly(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    config = Config.model_validate(
        {
            "state_dir": str(tmp_path),  # not the working directory's var/
            "http": {"listen": "127.0.0.1:0"},
            "modbus": {"listen": "127.0.0.1:0"},  # not the fixed default port 5020, which may be taken
            "simulator": {"enabled": True, "packs": 2, "profile": "idle"},
        }
    )
    stop = asyncio.Event()
    seen: list[AppContext] = []
    ready = asyncio.Event()

    def on_ready(c: AppContext) -> None:
        seen.append(c)
        ready.set()

    gc.disable()  # as `bms-gateway run` starts (gateway.cli.main)
    app = asyncio.ensure_future(run_app(config, install_signals=False, stop=stop, on_all_ready=on_ready))
    try:
        async with asyncio.timeout(20):
            await ready.wait()
            assert gc.isenabled()  # the collector is back once every service is ready
            url = seen[0].endpoints["http"]
            printed = describe(seen[0])
            assert f"http: {url}" in printed and f"packs: {url}/api/packs" in printed
            assert any(line.startswith("simulator bus: socket://127.0.0.1:") for line in printed)
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/readyz")).status_code == 200
                for _ in range(400):
                    packs = (await client.get("/api/packs")).json()
                    if all(p["availability"] == "online" for p in packs):
                        break
                    await asyncio.sleep(0.05)
                truth = seen[0].simulator.truth(2)  # type: ignore[union-attr]
                pack = (await client.get("/api/packs/sim/2")).json()
                assert pack["telemetry"]["soc_pct"] == pytest.approx(truth.soc_pct, abs=0.01)
                assert pack["telemetry"]["cell_voltages_v"] == pytest.approx(
                    list(truth.cell_voltages_v), abs=1e-3
                )
    finally:
        stop.set()
        assert await app == 0
        gc.enable()
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:  # the HTTP port is closed again
        assert s.connect_ex((host, int(port))) != 0


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    """A self-signed certificate and key in tmp_path (cert.pem, key.pem)."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path


@pytest.mark.e2e
async def test_two_buses_of_different_families_and_https(tmp_path: Path, tls_files: Path) -> None:
    from simulator import Simulator, SimulatorOptions

    tp = Simulator(SimulatorOptions(protocol="tianpower", packs=2, pacing=False, turnaround_s=0.002))
    pace = Simulator(
        SimulatorOptions(protocol="pace", packs=2, first_address=3, pacing=False, turnaround_s=0.002)
    )
    async with tp.serve_tcp("127.0.0.1", 0) as s1, pace.serve_tcp("127.0.0.1", 0) as s2:
        common = {"request_gap_s": 0.0, "response_timeout_s": 0.3, "realtime_interval_s": 0.1}
        config = Config.model_validate(
            {
                "state_dir": str(tmp_path),
                "http": {"listen": "127.0.0.1:0"},
                "modbus": {"enabled": False},
                "admin": {"tls_cert": "cert.pem", "tls_key": "key.pem"},
                "bus": [
                    {
                        "name": "a",
                        "url": f"socket://127.0.0.1:{s1.port}",
                        "protocol": "tianpower",
                        "addresses": [1, 2],
                        **common,
                    },
                    {
                        "name": "p",
                        "url": f"socket://127.0.0.1:{s2.port}",
                        "protocol": "pace",
                        "addresses": [3, 4],
                        **common,
                    },
                ],
            }
        )
        stop = asyncio.Event()
        ready = asyncio.Event()
        seen: list[AppContext] = []

        def on_ready(c: AppContext) -> None:
            seen.append(c)
            ready.set()

        app = asyncio.ensure_future(run_app(config, install_signals=False, stop=stop, on_all_ready=on_ready))
        try:
            async with asyncio.timeout(20):
                await ready.wait()
                url = seen[0].endpoints["http"]
                assert url.startswith("https://")
                async with httpx.AsyncClient(
                    base_url=url, verify=ssl.create_default_context(cafile=str(tls_files / "cert.pem"))
                ) as client:
                    for _ in range(300):
                        packs = (await client.get("/api/packs")).json()
                        if all(p["availability"] == "online" for p in packs):
                            break
                        await asyncio.sleep(0.05)
                    assert [(p["bus"], p["address"], p["identity"]["protocol"]) for p in packs] == [
                        ("a", 1, "tianpower"),
                        ("a", 2, "tianpower"),
                        ("p", 3, "pace"),
                        ("p", 4, "pace"),
                    ]
                    assert all(p["availability"] == "online" for p in packs)
                    bank = (await client.get("/api/system")).json()["bank"]
                    assert bank["packs_online"] == 4
        finally:
            stop.set()
            assert await app == 0


class _NeverReady:
    name = "never-ready"

    async def run(self, ready: ReadyCallback) -> None:
        await asyncio.Event().wait()


async def test_the_collector_comes_back_even_when_a_service_never_gets_ready(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`bms-gateway run` starts with the cyclic collector off; it must not stay off for good."""
    config = Config.model_validate({"state_dir": str(tmp_path), "http": {"listen": "127.0.0.1:0"}})
    monkeypatch.setattr(wiring, "build_edge_services", lambda ctx: [_NeverReady()])
    monkeypatch.setattr(wiring, "build_ops_services", lambda ctx: [])
    monkeypatch.setattr(wiring, "GC_PAUSE_MAX_S", 0.05)
    stop = asyncio.Event()
    before = sys.getswitchinterval()
    gc.disable()
    app = asyncio.ensure_future(run_app(config, install_signals=False, stop=stop))
    try:
        for _ in range(250):
            if gc.isenabled():
                break
            await asyncio.sleep(0.02)
        assert gc.isenabled()
        # while it runs, a thread waiting for the GIL waits at most 1 ms (CAN jitter under load)
        assert sys.getswitchinterval() == pytest.approx(wiring.GIL_SWITCH_INTERVAL_S)
    finally:
        stop.set()
        await app
        gc.enable()
    assert sys.getswitchinterval() == before  # the process-wide setting is given back


def _in_a_fresh_interpreter(code: str) -> str:
    """Standard output of `code` run by a new interpreter, so that no other test's imports count."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_edge_is_built_without_the_http_stack(tmp_path: Path) -> None:
    """Modbus, CAN, RS485 and the pollers serve before FastAPI is imported (`run_app`'s first phase);
    in a fresh interpreter, so that no other test's imports count."""
    code = (
        "import sys\n"
        "from gateway.app.config import Config\n"
        "from gateway.app.wiring import build_context, build_edge_services\n"
        f"config = Config.model_validate({{'state_dir': {str(tmp_path)!r},"
        " 'modbus': {'listen': '127.0.0.1:0'}, 'can': {'enabled': True, 'interface': 'virtual'},"
        " 'simulator': {'enabled': True, 'packs': 1}})\n"
        "names = [s.name for s in build_edge_services(build_context(config, None))]\n"
        "assert 'modbus' in names and 'can' in names, names\n"
        "heavy = sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'aiomqtt', 'prometheus_client')"
        " if m in sys.modules)\n"
        "print(heavy)\n"
    )
    assert _in_a_fresh_interpreter(code).strip() == "[]"


def test_a_start_loads_only_what_its_services_use(tmp_path: Path) -> None:
    """Every service built (both phases) for a Pylon CAN gateway: the firmware transfer and image
    store wait for an operator's upload or flash, and the flag table's targets are checked against
    the DBC files of the protocols in use only (not SMA's or Growatt's)."""
    code = (
        "import sys\n"
        "from gateway.app.config import Config\n"
        "from gateway.app.wiring import build_context, build_edge_services, build_ops_services\n"
        "from protocol.inverter.can import dbc\n"
        f"config = Config.model_validate({{'state_dir': {str(tmp_path)!r},"
        " 'modbus': {'listen': '127.0.0.1:0'},"
        " 'can': {'enabled': True, 'interface': 'virtual', 'protocol': 'pylon'},"
        " 'bus': [{'name': 'b', 'url': 'socket://127.0.0.1:9', 'protocol': 'tianpower'}]})\n"
        "ctx = build_context(config, None)\n"
        "names = [s.name for s in (*build_edge_services(ctx), *build_ops_services(ctx))]\n"
        "assert {'modbus', 'can', 'firmware', 'http'} <= set(names), names\n"
        "print(sorted(m for m in ('gateway.ops.firmware.job', 'gateway.ops.firmware.images')"
        " if m in sys.modules))\n"
        "print(dbc.load.cache_info().currsize)\n"
    )
    on_demand, dbc_files = _in_a_fresh_interpreter(code).splitlines()
    assert on_demand == "[]"
    assert dbc_files == "1"  # pylon.dbc: the CAN encoder's file, which checks its own flag targets


async def test_services_built_later_are_started_and_all_ready_waits_for_them() -> None:
    c = ctx()
    fired: list[list[str]] = []
    release = asyncio.Event()

    async def later() -> list[Steady]:
        await release.wait()  # the HTTP stack still loading
        return [Steady("http")]

    sup = Supervisor(
        c, [Steady("modbus")], on_all_ready=lambda: fired.append(sorted(c.services)), later=later
    )
    task = asyncio.ensure_future(sup.run())
    for _ in range(50):
        await asyncio.sleep(0)
    assert c.services["modbus"].state is ServiceState.READY  # the edge serves already
    assert not sup.all_ready.is_set() and fired == []  # but the gateway is not ready yet
    release.set()
    await asyncio.wait_for(sup.all_ready.wait(), 5)
    assert fired == [["http", "modbus"]]
    sup.stop()
    await asyncio.wait_for(task, 5)
    assert c.services["http"].state is ServiceState.STOPPED


async def test_a_configuration_error_while_building_later_stops_the_gateway() -> None:
    c = ctx()
    first = Steady("modbus")

    async def later() -> list[Steady]:
        raise ConfigError("mqtt.url: not a broker URL")

    sup = Supervisor(c, [first], later=later)
    await asyncio.wait_for(sup.run(), 5)
    assert sup.fatal is not None and "mqtt.url" in str(sup.fatal)
    assert first.cancelled and not sup.all_ready.is_set()
