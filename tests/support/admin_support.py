"""A gateway for the admin tests: simulator on TCP -> bus owner -> poller -> model, the admin service and
router installed into the real HTTP application (`gateway.north.http.create_app`), tokens for every role.

`admin_stack()` runs it on the test's event loop (clients talk to the real app object through
httpx's ASGI transport); `ThreadedGateway` runs the same stack with the real HTTP service on a real
socket in a background thread (for schemathesis and the CLI).

The poller reads everything once and then stays quiet by default (long realtime interval), so the
bus owner's request counter only moves when the admin API sends something.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.app.config import BusConfig, load_config, state_path
from gateway.app.context import AppContext
from gateway.core.model import ModelStore
from gateway.io.transport import SerialSettings
from gateway.north.http import HttpService, create_app
from gateway.north.http.admin import install
from gateway.ops.admin.service import AdminService
from gateway.ops.security.auth import Role, TokenStore
from gateway.south.bus import BusOwner
from gateway.south.poller import BusPoller, load_driver
from simulator import Simulator, SimulatorOptions

CONFIG_TEXT = """\
# bms-gateway test configuration
state_dir = "state"

[can]
# the inverter speaks Pylontech on CAN
protocol = "pylon"  # keep this comment

[inverter_rs485]
protocol = "pylon-rs485"

[admin]
allow_inferred_writes = {allow_inferred}  # the Tianpower table writes are inferred
rate_limit_per_minute = {rate}
# the role walks send hundreds of wrong tokens from 127.0.0.1; the throttle has its own tests
auth_failures_free = 1000000
"""


@dataclass
class Stack:
    sim: Simulator
    ctx: AppContext
    owner: BusOwner
    poller: BusPoller
    admin: AdminService
    client: httpx.AsyncClient
    tokens: dict[Role, str]
    config_path: Path
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    @property
    def bus_requests(self) -> int:
        return self.owner.counters.requests

    def audit_actions(self) -> set[str]:
        return {e.action for e in self.admin.audit_log.query(limit=10000)}


def write_config(tmp: Path, *, allow_inferred: bool = True, rate: int = 100000) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "gateway.toml"
    path.write_text(CONFIG_TEXT.format(allow_inferred=str(allow_inferred).lower(), rate=rate))
    return path


@contextlib.asynccontextmanager
async def admin_stack(
    tmp: Path,
    *,
    protocol: str = "tianpower",
    packs: int = 3,
    allow_inferred: bool = True,
    rate: int = 100000,
    realtime_interval_s: float = 3600.0,
    silent: tuple[int, ...] = (),
) -> AsyncIterator[Stack]:
    """The stack over `packs` simulated packs; the addresses in `silent` are configured but never
    answer (offline in the simulator from the start: the gateway never read them)."""
    sim = Simulator(
        SimulatorOptions(
            protocol=protocol,  # type: ignore[arg-type]
            packs=packs,
            pacing=False,
            turnaround_s=0.0,
            profile="idle",
            time_scale=1e-6,
        )
    )
    config_path = write_config(tmp, allow_inferred=allow_inferred, rate=rate)
    config = load_config(config_path)
    addresses = list(range(1, packs + 1))
    for address in silent:
        sim.set_online(address, False)
    async with sim.serve_tcp("127.0.0.1", 0) as bus_server:
        driver = load_driver(protocol)
        cfg = BusConfig(
            name="sim",
            url=f"socket://127.0.0.1:{bus_server.port}",
            protocol=protocol,  # type: ignore[arg-type]
            addresses=addresses,
            request_gap_s=0.0,
            realtime_interval_s=realtime_interval_s,
            response_timeout_s=1.0,
            retries=1,
            stale_after_s=max(3000.0, realtime_interval_s * 3),
            offline_after_s=max(3600.0, realtime_interval_s * 4),
        )
        owner = BusOwner.from_url(
            cfg.name,
            cfg.url,
            SerialSettings(),
            driver.new_decoder,
            gap_s=0.0,
            response_timeout_s=1.0,
            retries=1,
        )
        store = ModelStore([(cfg.name, a) for a in addresses])
        poller = BusPoller(cfg, owner, store, driver)
        ctx = AppContext(config=config, config_path=config_path, store=store)
        ctx.buses[cfg.name] = owner
        ctx.pollers[cfg.name] = poller
        ctx.simulator = sim
        install(ctx)
        admin = ctx.admin
        store_path = state_path(config, config_path, config.admin.tokens_file)
        token_store = TokenStore(store_path)
        tokens = {role: token_store.create(role, f"test {role.label}")[1] for role in Role}
        tasks = [
            asyncio.create_task(owner.run(lambda: None)),
            asyncio.create_task(poller.run(lambda: None)),
        ]
        transport = httpx.ASGITransport(app=create_app(ctx))
        client = httpx.AsyncClient(transport=transport, base_url="http://gateway.test")
        try:
            for _ in range(500):
                view = store.view
                if all(
                    p.telemetry is not None and p.parameters is not None
                    for (_, address), p in view.packs.items()
                    if address not in silent
                ):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the poller did not read every pack")
            yield Stack(sim, ctx, owner, poller, admin, client, tokens, config_path, tasks)
        finally:
            await client.aclose()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            admin.close()


class ThreadedGateway:
    """The admin stack plus the real HTTP service on 127.0.0.1:<free port>, in a background thread."""

    def __init__(self, tmp: Path, *, tls: tuple[Path, Path] | None = None, **options: Any) -> None:
        self.tmp = tmp
        self.tls = tls
        self.options = options
        self.url = ""
        self.stack: Stack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="admin-gateway", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # reported to the test thread
            self._error = err
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with admin_stack(self.tmp, **self.options) as stack:
            self.stack = stack
            http = HttpService(stack.ctx, "127.0.0.1:0", tls=self.tls)
            started = asyncio.Event()
            task = asyncio.create_task(http.run(started.set))
            try:
                await asyncio.wait_for(started.wait(), 10)
                self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{http.port}"
                self._ready.set()
                await self._stop.wait()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the threaded gateway did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def token(self, role: Role) -> str:
        assert self.stack is not None
        return self.stack.tokens[role]


@contextlib.contextmanager
def threaded_gateway(tmp: Path, **options: Any) -> Iterator[ThreadedGateway]:
    with ThreadedGateway(tmp, **options) as gw:
        yield gw
