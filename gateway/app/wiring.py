"""Building the gateway from a validated `Config` and supervising it.

`build_context(config)` creates the model store, one bus owner and one poller per bus (and the
built-in simulator with its bus when no bus is configured or `[simulator] enabled = true`).
`build_services(ctx)` lists every service; adapters add their one wiring line there.
`Supervisor` runs them in one TaskGroup: each reports ready, a crashing service is logged and
restarted with exponential backoff, a `ConfigError` stops the gateway, and a stop request
(SIGTERM/SIGINT) cancels everything within a deadline.

It must never import an adapter's third-party library at module import time (adapters are
imported inside `build_services`), and never read configuration files itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.app.config import BusConfig, Config, ConfigError, state_path
from gateway.app.context import AppContext
from gateway.app.supervisor import ReadyCallback, Service, ServiceState, ServiceStatus
from gateway.core.model import ModelStore, PackKey
from gateway.io.transport import Backoff, Connection, SerialSettings, TransportError, open_connection
from gateway.south.bus import BusOwner, Opener
from gateway.south.drivers.base import Driver
from gateway.south.poller import BusPoller, load_driver

if TYPE_CHECKING:
    from simulator import Simulator

log = logging.getLogger(__name__)

SHUTDOWN_DEADLINE_S = 10.0
GC_PAUSE_MAX_S = 10.0  # the longest the cyclic collector stays off at start-up (see _all_ready)
# How long the running thread keeps the GIL while another waits for it (CPython's default: 5 ms).
# The gateway's own threads (CAN send and receive, serial I/O, SQLite) each hold a deadline-bound
# step; with the event loop busy (Modbus saturated) they waited up to 5 ms for the GIL, which was
# the CAN frame jitter under load (docs/performance.md). 1 ms bounds that wait; the extra switches
# only happen while a second thread is actually runnable.
GIL_SWITCH_INTERVAL_S = 0.001
SIMULATOR_BUS = "sim"


class _Run:
    """A Service made of a name and a run coroutine function (the bus owners)."""

    def __init__(self, name: str, run: Callable[[ReadyCallback], Awaitable[None]]) -> None:
        self.name = name
        self._run = run

    async def run(self, ready: ReadyCallback) -> None:
        await self._run(ready)


class SimulatorService:
    """Serves the in-process simulator on TCP so the gateway reads it through the real bus path."""

    name = "simulator"

    def __init__(
        self,
        sim: Simulator,
        host: str = "127.0.0.1",
        port: int = 0,
        on_bound: Callable[[str], None] | None = None,
    ) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.on_bound = on_bound
        self.bound_port: int | None = None
        self._bound = asyncio.Event()

    async def wait_port(self, timeout_s: float = 5.0) -> int:
        try:
            async with asyncio.timeout(timeout_s):
                await self._bound.wait()
        except TimeoutError:
            raise TransportError("the built-in simulator is not serving yet") from None
        assert self.bound_port is not None
        return self.bound_port

    async def run(self, ready: ReadyCallback) -> None:
        try:
            async with self.sim.serve_tcp(self.host, self.port) as server:
                self.bound_port = server.port
                self._bound.set()
                if self.on_bound is not None:
                    self.on_bound(f"socket://{self.host}:{server.port}")
                ready()
                await asyncio.Event().wait()  # until cancelled
        except OSError as err:
            raise ConfigError(f"simulator.listen: cannot listen on {self.host}:{self.port}: {err}") from None
        finally:
            self._bound.clear()


# Above any single-pack answer of either family (the sim bus never polls a PACE bank read).
SIMULATOR_LONGEST_ANSWER_BYTES = 400


def simulator_bus_config(config: Config, name: str = SIMULATOR_BUS) -> BusConfig:
    sim = config.simulator
    wire_s = SIMULATOR_LONGEST_ANSWER_BYTES * 10 / sim.baud if sim.pacing else 0.0
    return BusConfig(
        name=name,
        url="socket://127.0.0.1:0",  # replaced by the simulator's bound port at connect time
        protocol=sim.protocol,
        addresses=list(range(sim.first_address, sim.first_address + sim.packs)),
        request_gap_s=0.05,
        response_timeout_s=1.0 + wire_s,  # a slow configured baud still fits its answers
        realtime_interval_s=2.0,
    )


def uses_simulator(config: Config) -> bool:
    return config.simulator.enabled or not config.bus


def _driver(bcfg: BusConfig) -> Driver | None:
    if bcfg.protocol == "auto":
        return None
    try:
        return load_driver(bcfg.protocol)
    except LookupError as err:
        raise ConfigError(f"bus.{bcfg.name}.protocol: {err}") from None


def build_context(config: Config, config_path: Path | None = None) -> AppContext:
    """Everything the services share; raises ConfigError for what validation could not see."""
    bus_cfgs = list(config.bus)
    sim_service: SimulatorService | None = None
    simulator = None
    if uses_simulator(config):
        from simulator import Simulator, SimulatorOptions

        sc = config.simulator
        name = SIMULATOR_BUS if SIMULATOR_BUS not in {b.name for b in bus_cfgs} else "simulator"
        from simulator.faults import parse_fault_spec

        sim_state = state_path(config, config_path, sc.state_file) if sc.state_file else None
        try:
            simulator = Simulator(
                SimulatorOptions(
                    protocol=sc.protocol,
                    packs=sc.packs,
                    first_address=sc.first_address,
                    seed=sc.seed,
                    profile=sc.profile,
                    baud=sc.baud,
                    pacing=sc.pacing,
                    faults=parse_fault_spec(sc.faults),
                    state_file=sim_state,
                    history_records=sc.history_records,
                )
            )
        except ValueError as err:  # e.g. an unreadable or foreign state file
            raise ConfigError(f"simulator: {err}") from None
        host, port = "127.0.0.1", 0
        if sc.listen:
            h, _, p = sc.listen.rpartition(":")
            host, port = h, int(p)
        sim_service = SimulatorService(simulator, host, port)
        bus_cfgs.append(simulator_bus_config(config, name))

    keys: list[PackKey] = []
    names: dict[PackKey, str] = {}
    for b in bus_cfgs:
        for a in b.addresses:
            keys.append((b.name, a))
            if str(a) in b.names:
                names[(b.name, a)] = b.names[str(a)]
    ctx = AppContext(config=config, config_path=config_path, store=ModelStore(keys, names))
    ctx.simulator = simulator
    if sim_service is not None:
        ctx.simulator_service = sim_service
        sim_service.on_bound = lambda where: ctx.register_endpoint("simulator bus", where)

    for b in bus_cfgs:
        driver = _driver(b)
        if sim_service is not None and b is bus_cfgs[-1]:
            owner = BusOwner(
                b.name,
                _simulator_opener(sim_service),
                driver.new_decoder if driver else None,
                gap_s=b.request_gap_s,
                response_timeout_s=b.response_timeout_s,
                retries=b.retries,
                backoff=Backoff(initial_s=0.2, max_s=5.0),
            )
        else:
            settings = SerialSettings(
                baudrate=b.baudrate, parity=b.parity, stopbits=b.stopbits, bytesize=b.bytesize
            )
            owner = BusOwner.from_url(
                b.name,
                b.url,
                settings,
                driver.new_decoder if driver else None,
                gap_s=b.request_gap_s,
                response_timeout_s=b.response_timeout_s,
                retries=b.retries,
            )
        ctx.buses[b.name] = owner
        ctx.pollers[b.name] = BusPoller(b, owner, ctx.store, driver)
    return ctx


def _simulator_opener(sim_service: SimulatorService) -> Opener:
    async def opener() -> Connection:
        port = await sim_service.wait_port()
        return await open_connection(f"socket://127.0.0.1:{port}")

    return opener


# The adapters built once the edge already serves: the HTTP stack (FastAPI, pydantic's API models,
# uvicorn) and what hangs off it. Their modules are imported in a worker thread while the event
# loop answers Modbus, CAN and RS485 (`run_app`).
OPS_MODULES = (
    "gateway.north.http.admin",
    "gateway.north.http.records",
    "gateway.north.mqtt.publisher",
    "gateway.north.metrics.collector",
    "gateway.app.systemd",
    "gateway.north.web",
    "gateway.north.http.service",
    "gateway.north.modbus.http",
)


def build_edge_services(ctx: AppContext) -> list[Service]:
    """The services an inverter or an EMS talks to, in start order: the shared stores first
    (`gateway.app.shared`), the simulator, buses and pollers, then Modbus, the charge policy, CAN
    and RS485. None of them imports the HTTP stack, so they serve while it is still loading.

    Every adapter installs through the one convention `install(ctx) -> list[Service]` (an adapter
    that is off returns []; it sets its typed field on the context for the others). Adapters are
    imported here, one line each, so an unused adapter's third-party library costs nothing.
    """
    from gateway.app import shared

    shared.build(ctx)
    services: list[Service] = []
    if ctx.simulator_service is not None:
        services.append(ctx.simulator_service)
    for name, owner in ctx.buses.items():
        services.append(_Run(f"bus:{name}", owner.run))
    services.extend(ctx.pollers.values())

    from gateway.north.modbus.server import install as install_modbus  # Modbus/TCP (SunSpec + native)

    services.extend(install_modbus(ctx))
    from gateway.core.policy.service import install as install_policy  # charge policy -> ctx.decisions

    services.extend(install_policy(ctx))
    from gateway.north.can.service import install as install_can  # inverter CAN (python-can)

    services.extend(install_can(ctx))
    from gateway.north.rs485.service import install as install_rs485  # inverter RS485 port

    services.extend(install_rs485(ctx))
    return services


def build_ops_services(ctx: AppContext) -> list[Service]:
    """The rest, in start order, after `build_edge_services`: the admin API, records, MQTT, metrics,
    the systemd watchdog, the web UI, and the HTTP service last (it mounts the routers the others
    added when it starts)."""
    from gateway.north.http.admin import install as install_admin  # admin API (+ clock auto-sync)

    services = install_admin(ctx)
    from gateway.north.http.records import install as install_records  # history, recording, firmware

    services.extend(install_records(ctx))
    from gateway.north.mqtt.publisher import install as install_mqtt  # MQTT + Home Assistant discovery

    services.extend(install_mqtt(ctx))
    from gateway.north.metrics.collector import install as install_metrics  # GET /metrics

    services.extend(install_metrics(ctx))
    from gateway.app.systemd import install as install_watchdog  # Type=notify + WatchdogSec

    services.extend(install_watchdog(ctx))
    from gateway.north.web import install as install_web  # the web UI at / (when `[http] ui`)

    services.extend(install_web(ctx))
    from gateway.north.http.service import install as install_http

    services.extend(install_http(ctx))
    return services


def build_services(ctx: AppContext) -> list[Service]:
    """Every service of this gateway, in start order (edge, then the rest), built at once."""
    return [*build_edge_services(ctx), *build_ops_services(ctx)]


def _import(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


class Supervisor:
    """Runs services in one TaskGroup; restarts crashes with backoff; stops on ConfigError or stop()."""

    def __init__(
        self,
        ctx: AppContext,
        services: Sequence[Service],
        *,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 30.0,
        shutdown_deadline_s: float = SHUTDOWN_DEADLINE_S,
        on_all_ready: Callable[[], None] | None = None,
        later: Callable[[], Awaitable[Sequence[Service]]] | None = None,
    ) -> None:
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique: {names}")
        self.ctx = ctx
        self.services = list(services)
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.shutdown_deadline_s = shutdown_deadline_s
        self.on_all_ready = on_all_ready
        self.fatal: ConfigError | None = None
        self.timed_out = False  # True when a service did not stop within the deadline
        self.all_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        # services built while the first ones already run (`run_app`: everything but the edge);
        # "all ready" waits for them too
        self._later = later
        self._complete = later is None
        self._later_error: BaseException | None = None
        for s in services:
            ctx.services[s.name] = ServiceStatus(s.name)

    def stop(self) -> None:
        self._stop.set()

    def _ready(self, status: ServiceStatus | None) -> None:
        if status is not None:
            status.mark_ready()
        if not self.all_ready.is_set() and self._complete and self.ctx.all_ready:
            self.all_ready.set()
            if self.on_all_ready is not None:
                self.on_all_ready()

    async def _keep(self, service: Service) -> None:
        status = self.ctx.services[service.name]
        backoff = Backoff(self.restart_initial_s, max(self.restart_initial_s, self.restart_max_s))
        while True:
            status.state = ServiceState.STARTING
            started = time.monotonic()
            try:
                await service.run(lambda: self._ready(status))
                if self._stopping:
                    status.state = ServiceState.STOPPED  # it swallowed our cancellation: stop anyway
                    return
                raise RuntimeError("run() returned")
            except asyncio.CancelledError:
                status.state = ServiceState.STOPPED
                raise
            except Exception as err:
                if self._stopping:
                    status.state = ServiceState.STOPPED
                    log.warning("service %s failed while stopping: %r", service.name, err)
                    return
                config_error = _config_error(err)
                status.mark_failed(config_error or err)
                if config_error is not None:
                    log.error("service %s: configuration error: %s", service.name, config_error)
                    self.fatal = config_error
                    self._stop.set()
                    return
                if time.monotonic() - started > self.restart_max_s:
                    backoff.reset()  # it ran fine for a while: start over with short delays
                delay = backoff.next_delay()
                log.error(
                    "service %s crashed (%s: %s); restarting in %.1f s",
                    service.name,
                    type(err).__name__,
                    err,
                    delay,
                    exc_info=err,
                )
                status.restarts += 1
                await asyncio.sleep(delay)

    async def _add_later(self, tg: asyncio.TaskGroup, tasks: list[asyncio.Task[None]]) -> None:
        """Build the services that come later and start them (a build error stops everything)."""
        assert self._later is not None
        try:
            more = list(await self._later())
        except Exception as err:
            config_error = _config_error(err)
            if config_error is not None:
                log.error("configuration error: %s", config_error)
                self.fatal = config_error
            else:
                self._later_error = err
            self._stop.set()
            return
        names = [s.name for s in (*self.services, *more)]
        if len(set(names)) != len(names):
            self._later_error = ValueError(f"service names must be unique: {names}")
            self._stop.set()
            return
        if self._stopping:
            return
        for s in more:
            self.ctx.services[s.name] = ServiceStatus(s.name)
            self.services.append(s)
            tasks.append(tg.create_task(self._keep(s), name=f"service:{s.name}"))
        self._complete = True
        self._ready(None)  # (every service may be ready already when the later ones are none)

    async def run(self) -> None:
        """Run until stop() (or a configuration error); then cancel everything within the deadline."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._keep(s), name=f"service:{s.name}") for s in self.services]
            adding = None if self._later is None else tg.create_task(self._add_later(tg, tasks))
            await self._stop.wait()
            if adding is not None and not adding.done():
                adding.cancel()
            # stop in reverse start order (HTTP and adapters first, then pollers, buses, simulator)
            self._stopping = True
            deadline = time.monotonic() + self.shutdown_deadline_s
            for t in reversed(tasks):
                t.cancel()
                await asyncio.wait({t}, timeout=max(0.0, deadline - time.monotonic()))
            pending = [t for t in tasks if not t.done()]
            if pending:
                self.timed_out = True
                log.error(
                    "services did not stop within %.1f s: %s",
                    self.shutdown_deadline_s,
                    ", ".join(t.get_name() for t in pending),
                )
        if self._later_error is not None:
            raise self._later_error


def _all_ready(ctx: AppContext, then: Callable[[AppContext], None] | None) -> None:
    """Every service is ready: freeze what start-up allocated, then tell the caller.

    `gc.freeze()` moves every object alive now (imported modules, FastAPI's and pydantic's
    schemas, the maps: ~90,000 objects) out of the collector's sight. Without it each full
    collection walks them all, ~80 ms on a small box during which nothing else runs: a CAN frame,
    a Modbus answer or a poll waits (docs/performance.md, CAN jitter). The `run` command starts
    with the collector off (`gateway.cli.main`); it is switched on here, after the freeze.
    """
    gc.freeze()
    gc.enable()
    if then is not None:
        then(ctx)


def _config_error(err: BaseException) -> ConfigError | None:
    if isinstance(err, ConfigError):
        return err
    if isinstance(err, BaseExceptionGroup):
        for sub in err.exceptions:
            found = _config_error(sub)
            if found is not None:
                return found
    return None


async def run_app(
    config: Config,
    config_path: Path | None = None,
    *,
    install_signals: bool = True,
    on_all_ready: Callable[[AppContext], None] | None = None,
    stop: asyncio.Event | None = None,
    shutdown_deadline_s: float = SHUTDOWN_DEADLINE_S,
    hard_deadline: bool = False,
) -> int:
    """Build and run the gateway until SIGTERM/SIGINT (or `stop` is set).

    Exit codes: 0 after a clean stop, 1 when shutdown overran its deadline; a configuration error
    is raised as ConfigError. With `hard_deadline` (the `run` command) the process is ended with
    exit code 1 if it is still alive shortly after the deadline (a service ignoring cancellation).
    """
    ctx = build_context(config, config_path)
    edge = build_edge_services(ctx)

    async def the_rest() -> list[Service]:
        # The HTTP stack is most of the start-up's imports: a worker thread loads it while the loop
        # already answers Modbus, CAN and RS485 (the imports hold no lock the loop's code waits
        # for: no module is imported from two places in a circle, tests/test_architecture.py).
        await asyncio.to_thread(_import, OPS_MODULES)
        return build_ops_services(ctx)

    sup = Supervisor(
        ctx,
        edge,
        shutdown_deadline_s=shutdown_deadline_s,
        on_all_ready=lambda: _all_ready(ctx, on_all_ready),
        later=the_rest,
    )
    loop = asyncio.get_running_loop()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, GIL_SWITCH_INTERVAL_S))
    # The collector is back on once every service is ready (`_all_ready`), or after this long
    # when a service never gets ready (it must not stay off for the life of the process).
    gc_on = loop.call_later(GC_PAUSE_MAX_S, gc.enable)

    def request_stop() -> None:
        if hard_deadline:
            timer = threading.Timer(shutdown_deadline_s + 2.0, os._exit, (1,))
            timer.daemon = True
            timer.start()
        sup.stop()

    handled: list[signal.Signals] = []
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, request_stop)
                handled.append(sig)
    watcher: asyncio.Task[None] | None = None
    if stop is not None:

        async def _watch() -> None:
            await stop.wait()
            request_stop()

        watcher = asyncio.ensure_future(_watch())
    try:
        await sup.run()
    finally:
        gc_on.cancel()
        gc.enable()
        sys.setswitchinterval(switch_interval)
        if watcher is not None:
            watcher.cancel()
        for sig in handled:
            loop.remove_signal_handler(sig)
    if sup.fatal is not None:
        raise sup.fatal
    return 1 if sup.timed_out else 0
