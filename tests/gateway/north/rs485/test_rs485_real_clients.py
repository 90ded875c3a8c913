"""Third-party clients against the gateway's inverter RS485 port, as an integrator would connect them.

The gateway (built by `gateway.app.wiring` on the built-in simulator) opens one end of a null-modem
pair of ptys as its serial device; the client opens the other end with its own serial code:

- `python-pylontech` (PyPI, Frankkkkk/python-pylontech) and `pylontech` (PyPI, Tomcat42/pylontech-python)
  read every answer they ask for, with the values of the simulator's packs;
- pymodbus's RTU client reads the BYD Modbus RTU registers.

Where a client is wrong (not the gateway) the test keeps the call and asserts the documented
difference (docs/inverter-rs485.md, "Clients tested").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
import tty
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest

from gateway.app.config import parse_config
from gateway.app.context import AppContext
from gateway.app.wiring import Supervisor, build_context, build_services
from gateway.core.policy.decisions import DecisionStore
from gateway.north.rs485.service import Rs485InverterService
from simulator import Simulator, SimulatorOptions

pytestmark = pytest.mark.e2e  # real serial links / the installed console script
PACKS = 2
T = TypeVar("T")


class NullModem:
    """A null-modem cable: the gateway's end is a pty; the client's end another pty (`client_url` is
    its path) or, for clients that drive RTS (which a pty refuses), a TCP port on 127.0.0.1 (a
    `socket://` URL, as for an RS485-to-Ethernet converter)."""

    def __init__(self, client: str = "pty") -> None:
        self._fds: list[int] = []
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR translation until the gateway configures it
        self._fds += [master, slave]  # the slave kept open: no hang-up between opens
        self.gateway_path = os.ttyname(slave)
        self._gateway = master
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        if client == "pty":
            cmaster, cslave = os.openpty()
            tty.setraw(cslave)
            self._fds += [cmaster, cslave]
            self._client: int | None = cmaster
            self.client_url = os.ttyname(cslave)
        else:
            self._client = None
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.client_url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="null-modem", daemon=True)

    def _client_fd(self) -> int | None:
        if self._client is not None:
            return self._client
        if self._conn is not None:
            return self._conn.fileno()
        return None

    def _pump(self) -> None:
        while not self._stop.is_set():
            watch = [self._gateway]
            client = self._client_fd()
            if client is not None:
                watch.append(client)
            elif self._listener is not None:
                watch.append(self._listener.fileno())
            ready, _, _ = select.select(watch, [], [], 0.05)
            for fd in ready:
                if self._listener is not None and fd == self._listener.fileno():
                    self._conn, _ = self._listener.accept()
                    continue
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if fd == self._gateway:
                    if client is not None:
                        os.write(client, data)
                elif data:
                    os.write(self._gateway, data)
                elif self._conn is not None:  # the TCP client closed
                    self._conn.close()
                    self._conn = None

    def __enter__(self) -> NullModem:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for sock in (self._conn, self._listener):
            if sock is not None:
                sock.close()
        for fd in self._fds:
            os.close(fd)


@contextlib.asynccontextmanager
async def gateway(protocol: str, client: str = "pty") -> AsyncIterator[tuple[AppContext, Simulator, str]]:
    """The gateway on two simulated Tianpower packs; its inverter port is one end of a null modem,
    the URL of the other end is yielded."""
    sim = Simulator(SimulatorOptions(protocol="tianpower", packs=PACKS, profile="idle", seed=7, pacing=False))
    with NullModem(client) as modem:
        async with sim.serve_tcp("127.0.0.1", 0) as server:
            config = parse_config(
                {
                    "bus": [
                        {
                            "name": "sim",
                            "url": f"socket://127.0.0.1:{server.port}",
                            "protocol": "tianpower",
                            "addresses": list(range(1, PACKS + 1)),
                            "request_gap_s": 0.01,
                            "response_timeout_s": 0.5,
                            "retries": 0,
                            "realtime_interval_s": 0.3,
                            "stale_after_s": 30.0,
                            "offline_after_s": 60.0,
                        }
                    ],
                    "http": {"listen": "127.0.0.1:0"},
                    "modbus": {"enabled": False},
                    "inverter_rs485": {"enabled": True, "url": modem.gateway_path, "protocol": protocol},
                    "policy": {"current_rise_time_constant_s": 0.0},
                }
            )
            ctx = build_context(config)
            supervisor = Supervisor(ctx, build_services(ctx))
            task = asyncio.create_task(supervisor.run())
            try:
                await ready(ctx)
                yield ctx, sim, modem.client_url
            finally:
                supervisor.stop()
                async with asyncio.timeout(15):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


async def ready(ctx: AppContext) -> None:
    """Every pack online with its identity, and a fresh decision."""
    async with asyncio.timeout(20):
        async for view in ctx.store.subscribe():
            packs = view.packs.values()
            if len(view.packs) == PACKS and all(p.online and p.identity.serial for p in packs):
                break
    decisions = ctx.extras["decisions"]
    assert isinstance(decisions, DecisionStore)
    await asyncio.wait_for(decisions.wait_for(lambda d: d.has_data and not d.stale), 20)


def service_of(ctx: AppContext) -> Rs485InverterService:
    service = ctx.extras["inverter_rs485"]
    assert isinstance(service, Rs485InverterService)
    return service


async def in_thread(call: Callable[[], T]) -> T:
    """A blocking client call, bounded."""
    return await asyncio.wait_for(asyncio.to_thread(call), 30)


# --------------------------------------------------------------------------------------------
# python-pylontech (PyPI `python-pylontech`)


async def test_python_pylontech_reads_every_answer(capsys: pytest.CaptureFixture[str]) -> None:
    from pylontech.pylontech import Pylontech

    async with gateway("pylon-rs485") as (ctx, sim, port):
        client = Pylontech(serial_port=port, baudrate=9600)
        try:
            view = service_of(ctx).bank_view()
            truths = [sim.truth(p.address) for p in ctx.store.view.ordered()]
            single: Any = await in_thread(lambda: client.get_values_single(2))
            assert single.NumberOfModule == 2  # the ADR after INFOFLAG
            assert list(single.CellVoltages) == pytest.approx(list(truths[0].cell_voltages_v), abs=0.0011)
            assert single.Voltage == pytest.approx(truths[0].voltage_v, abs=0.011)
            stack: Any = await in_thread(client.get_values)  # 0x42 INFO FF, the captured stack layout
            assert stack.NumberOfModules == PACKS
            for module, truth in zip(stack.Module, truths, strict=True):
                assert module.NumberOfCells == len(truth.cell_voltages_v)
                assert module.Current == pytest.approx(truth.current_a, abs=0.06)
                assert module.TotalCapacity == pytest.approx(truth.full_capacity_ah, abs=0.011)
            management: Any = await in_thread(lambda: client.get_management_info(3))
            limits = service_of(ctx).responder.module_limits(view, 2, 0.0)  # type: ignore[attr-defined]
            assert management.ChargeVoltageLimit == pytest.approx(limits.charge_voltage_v, abs=0.001)
            # the decision follows the packs between our view and the poll: the scale and the signs
            # are what this compares (real packs, and so we, send the discharge limit negative)
            assert management.ChargeCurrentLimit == pytest.approx(limits.charge_current_a, rel=0.1)
            assert management.DischargeCurrentLimit == pytest.approx(-limits.discharge_current_a, rel=0.1)
            assert management.DischargeCurrentLimit < 0 < management.ChargeCurrentLimit
            assert management.status.ChargeEnable and management.status.DischargeEnable
            serial: Any = await in_thread(lambda: client.get_module_serial_number(3))
            assert serial.CommandValue == 3
            assert serial.ModuleSerialNumber.decode().rstrip() == truths[1].identity.serial
            params: Any = await in_thread(client.get_system_parameters)  # 0x47 skips INFOFLAG: parses
            p = view.parameters
            assert params.CellHighVoltageLimit == pytest.approx(p.cell_high_voltage_v)
            assert params.ChargeCurrentLimit == pytest.approx(p.charge_current_limit_a)
            assert params.DischargeCurrentLimit == pytest.approx(-p.discharge_current_limit_a)
            assert params.DischargeLowTemperatureLimit == pytest.approx(p.discharge_low_temperature_c)
            # Documented difference: the client asks 0x4F and 0x51 at ADR 0, which no source shows a
            # pack answering (the captures ask ADR 2). The gateway stays silent; the client times out.
            with pytest.raises(ValueError):
                await in_thread(client.get_manufacturer_info)
        finally:
            client.s.close()
    capsys.readouterr()  # get_management_info prints what it parsed


# --------------------------------------------------------------------------------------------
# pylontech (PyPI `pylontech`, Tomcat42/pylontech-python)


async def test_pylontech_stack_reads_every_answer(capsys: pytest.CaptureFixture[str]) -> None:
    from pylontech.pylontech_stack import PylontechStack

    # this client drives RTS (transmit enable), which a pty refuses: it connects over socket://
    async with gateway("pylon-rs485", client="tcp") as (ctx, sim, port):
        # the constructor polls 0x93 for every battery with the two-byte INFO [ADR, number] (`0201`)
        stack = await in_thread(lambda: PylontechStack(port, baud=9600, manualBattcountLimit=PACKS))
        try:
            truths = [sim.truth(p.address) for p in ctx.store.view.ordered()]
            assert [s.rstrip() for s in stack.pylonData["SerialNumbers"]] == [
                t.identity.serial for t in truths
            ]
            data: Any = await in_thread(stack.update)  # 0x42, 0x92, 0x44 per battery, then 0x47
            for analog, truth in zip(data["AnaloglList"], truths, strict=True):
                assert analog["InfoFlag"] == 0
                assert analog["CellVoltages"] == pytest.approx(list(truth.cell_voltages_v), abs=0.0011)
                assert analog["Current"] == pytest.approx(truth.current_a, abs=0.06)
                assert analog["CycleNumber"] == truth.cycles
            for alarm, truth in zip(data["AlarmInfoList"], truths, strict=True):
                # INFOFLAG first, as in real answers: the cell count lands where the client reads it
                assert alarm["InfoFlag"] == 0 and alarm["CellCount"] == len(truth.cell_voltages_v)
                assert bool(alarm["Status2"] & 0x04) == truth.discharge_mos_on
            view = service_of(ctx).bank_view()
            for n, management in enumerate(data["ChargeDischargeManagementList"], start=1):
                limits = service_of(ctx).responder.module_limits(view, n, 0.0)  # type: ignore[attr-defined]
                assert management["DischargeCurrent"] == pytest.approx(-limits.discharge_current_a, rel=0.1)
                assert management["DischargeCurrent"] < 0
            # Documented difference: the client reads 0x47 from the first INFO byte, ignoring the
            # INFOFLAG every real pack sends first, so each of its values is shifted by one byte.
            system = data["SystemParameter"]
            p = view.parameters
            shifted = (0x00 << 8 | round(p.cell_high_voltage_v * 1000) >> 8) / 1000
            assert system["UnitCellVoltage"] == pytest.approx(shifted)
            assert system["UnitCellVoltage"] != pytest.approx(p.cell_high_voltage_v)
            # the whole-stack request this client builds ([ADR 2, FF]) is answered like INFO FF
            from pylontech.pylontech_decode import PylontechDecode
            from pylontech.pylontech_encode import PylontechEncode

            def whole_stack() -> dict[str, Any]:
                stack.pylon.send(PylontechEncode().getAnalogValue(allPackData=True))
                raws = stack.pylon.receive()
                decoder = PylontechDecode()
                decoder.decode_header(raws[0])
                return decoder.decodeAnalogValue()

            answer = await in_thread(whole_stack)
            assert answer["RTN"] == 0 and answer["CommandValue"] == PACKS
        finally:
            stack.pylon.close()
    capsys.readouterr()  # the library prints its timings


# --------------------------------------------------------------------------------------------
# pymodbus RTU client against the BYD Modbus RTU port


async def test_pymodbus_rtu_client_reads_the_byd_registers() -> None:
    from pymodbus.client import ModbusSerialClient
    from pymodbus.exceptions import ModbusIOException

    async with gateway("byd-modbus") as (ctx, sim, port):
        client = ModbusSerialClient(port=port, baudrate=9600, timeout=1, retries=1)
        try:
            assert await in_thread(client.connect)
            ident: Any = await in_thread(lambda: client.read_holding_registers(100, count=2, device_id=21))
            assert not ident.isError(), ident
            assert bytes.fromhex("".join(f"{r:04X}" for r in ident.registers[:1])) == b"SI"
            status: Any = await in_thread(lambda: client.read_holding_registers(300, count=24, device_id=21))
            assert not status.isError(), status
            truths = [sim.truth(p.address) for p in ctx.store.view.ordered()]
            soc = sum(t.soc_pct * t.full_capacity_ah for t in truths) / sum(
                t.full_capacity_ah for t in truths
            )
            assert status.registers[3] / 100 == pytest.approx(max(soc, 1.0), abs=0.6)  # 303 SOC 0.01 %
            with pytest.raises(ModbusIOException):  # another unit's request: never answered
                await in_thread(lambda: client.read_holding_registers(300, count=1, device_id=22))
        finally:
            client.close()
