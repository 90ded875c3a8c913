"""One bank view: every output (CAN frames, RS485 answers, Modbus registers, metrics) carries the
values of the model's one `BankSnapshot`, and that snapshot is what the encoders' structural type
(`protocol.inverter.bank.BankValues`) describes."""

from __future__ import annotations

import struct
import types
import typing
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pymodbus.client import AsyncModbusTcpClient

from gateway.app.config import PolicyConfig
from gateway.core.controls import Controls
from gateway.core.model import (
    Availability,
    BankSnapshot,
    CellRef,
    ModelStore,
    PackSnapshot,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.core.policy.engine import ChargeDecision, PolicyEngine
from gateway.north.metrics.collector import GatewayCollector, MetricsSources, make_registry, render
from gateway.north.rs485.service import build_bank_view
from mappings.flags import load_outputs
from protocol.inverter import bank as wire
from protocol.inverter.bank import BankValues, PackValue
from protocol.inverter.can import dbc, registry
from protocol.inverter.rs485.byd_modbus import POINTS, build_image
from protocol.inverter.rs485.pylon import PylonOptions, PylonResponder, parse_frame
from protocol.inverter.rs485.pylon_peer import build_request
from tests.support.modbus_support import running

NOW = 1_800_000_000.0


KEYS = [("bus1", 1), ("bus1", 2), ("bus2", 1), ("bus2", 2)]  # bus2/2 never answers


def telemetry(
    cells: list[float],
    cell_temps: tuple[float, ...],
    *,
    mos: float,
    board: float | None,
    soc: float,
    full_ah: float,
    soh: float,
    cycles: int,
    current: float,
) -> Telemetry:
    temps = [Temperature(TempRole.CELL, i + 1, t) for i, t in enumerate(cell_temps)]
    temps.append(Temperature(TempRole.MOS, 1, mos))
    if board is not None:
        temps.append(Temperature(TempRole.BOARD, 1, board))
    return Telemetry.build(
        measured_at=NOW - 1,
        cell_voltages_v=cells,
        temperatures=temps,
        voltage_v=round(sum(cells), 2),
        current_a=current,
        soc_pct=soc,
        soh_pct=soh,
        full_capacity_ah=full_ah,
        remaining_capacity_ah=round(full_ah * soc / 100, 2),
        nominal_capacity_ah=full_ah,
        cycles=cycles,
    )


def store() -> ModelStore:
    """Three online packs on two buses (different capacities, SOC, sensors) and one never seen."""
    a = telemetry(
        [3.310] * 16,
        (24.0, 25.5),
        mos=31.0,
        board=28.0,
        soc=61.0,
        full_ah=100.0,
        soh=97.0,
        cycles=120,
        current=-10.0,
    )
    b_cells = [3.320] * 16
    b_cells[4] = 3.412
    b = telemetry(
        b_cells,
        (22.0, 26.5),
        mos=35.0,
        board=None,
        soc=55.0,
        full_ah=280.0,
        soh=95.0,
        cycles=80,
        current=-20.0,
    )
    c_cells = [3.300] * 16
    c_cells[8] = 3.201
    c = telemetry(
        c_cells, (19.5, 23.0), mos=29.0, board=None, soc=70.0, full_ah=50.0, soh=99.0, cycles=301, current=5.0
    )
    s = ModelStore(KEYS)
    s.publish(
        PackSnapshot("bus1", 1, Availability.ONLINE, a),
        PackSnapshot("bus1", 2, Availability.ONLINE, b),
        PackSnapshot("bus2", 1, Availability.ONLINE, c),
        now=NOW,
    )
    return s


def decide(s: ModelStore) -> ChargeDecision:
    return PolicyEngine(PolicyConfig()).evaluate(s.view, Controls().state(NOW), NOW)


def test_the_bank_has_the_values_every_output_needs() -> None:
    bank = store().view.bank
    assert (bank.packs_configured, bank.packs_online, bank.packs_offline) == (4, 3, 1)
    assert bank.cell_max == CellRef("bus1", 2, 5, 3.412) and bank.cell_min == CellRef("bus2", 1, 9, 3.201)
    assert bank.temp_max == CellRef("bus1", 2, 2, 26.5) and bank.temp_min == CellRef("bus2", 1, 1, 19.5)
    assert bank.temp_mean_c == round((24.0 + 25.5 + 22.0 + 26.5 + 19.5 + 23.0) / 6, 2)
    assert (bank.cycles_max, bank.cycles_mean, bank.soh_min_pct, bank.cells_per_pack) == (301, 167, 95.0, 16)
    # a pack without a board sensor shows its MOS sensor as the board temperature (and no MOS one)
    assert bank.board_temp_max == CellRef("bus1", 2, 1, 35.0) and bank.board_temp_mean_c == 30.67
    assert bank.mos_temp_max == bank.mos_temp_min == CellRef("bus1", 1, 1, 31.0)


def test_the_decision_carries_the_model_bank_and_a_stale_copy_of_it() -> None:
    s = store()
    engine = PolicyEngine(PolicyConfig())
    fresh = engine.evaluate(s.view, Controls().state(NOW), NOW)
    assert fresh.bank == s.view.bank  # every pack fresh: the very same values
    later = NOW + 3600
    stale = engine.evaluate(s.view, Controls().state(later), later)
    assert stale.stale and stale.bank.computed_at == later
    assert (stale.bank.voltage_v, stale.bank.soc_pct, stale.bank.cell_max) == (
        fresh.bank.voltage_v,
        fresh.bank.soc_pct,
        fresh.bank.cell_max,
    )
    assert (stale.bank.current_a, stale.bank.packs_online, stale.bank.packs_configured) == (0.0, 0, 4)


def _allowed(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(a for arg in typing.get_args(hint) for a in _allowed(arg))
    return (hint,)


def _conforms(value: object, hint: Any) -> bool:
    for allowed in _allowed(hint):
        if allowed is type(None) and value is None:
            return True
        if allowed is PackValue and value is not None:
            return all(_conforms(getattr(value, n), h) for n, h in _members(PackValue).items())
        if allowed is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if (
            isinstance(allowed, type)
            and allowed not in (PackValue, type(None))
            and isinstance(value, allowed)
        ):
            return True
        if typing.get_origin(allowed) is tuple and isinstance(value, tuple):
            return all(_conforms(v, a) for v, a in zip(value, typing.get_args(allowed), strict=True))
    return False


def _members(protocol: type) -> dict[str, Any]:
    return {
        name: typing.get_type_hints(prop.fget)["return"]
        for name, prop in vars(protocol).items()
        if isinstance(prop, property) and prop.fget is not None
    }


def test_a_real_bank_snapshot_is_the_encoders_bank_values() -> None:
    # statically: `gateway.core.policy.engine` assigns a BankSnapshot to BankValues under mypy;
    # here, at run time, every member with the declared type, on a bank with and without data
    static: BankValues = store().view.bank
    members = _members(BankValues)
    assert len(members) >= 20
    for bank in (static, BankSnapshot(NOW, 2, 0, 1, 1)):
        for name, hint in members.items():
            assert _conforms(getattr(bank, name), hint), (name, getattr(bank, name), hint)


def test_can_rs485_modbus_and_metrics_carry_the_one_bank() -> None:
    s = store()
    bank = s.view.bank
    decision = decide(s)
    assert bank.voltage_v is not None and bank.current_a is not None and bank.soc_pct is not None
    assert bank.soh_pct is not None and bank.soh_min_pct is not None and bank.temp_mean_c is not None
    assert bank.cell_max and bank.cell_min and bank.temp_max and bank.temp_min
    assert bank.board_temp_max is not None and bank.board_temp_mean_c is not None

    # CAN: the Pylon V2 union (0x35x values and the 0x37x extremes)
    proto = registry.create("pylon-v2", flag_outputs=load_outputs())
    can = dict(dbc.decode(proto.db, f) for f in proto.due(decision, NOW))

    def sent(message: str, signal: str, value: float) -> bool:
        """The signal carries `value` to its resolution."""
        scale = float(proto.db.get_message_by_name(message).get_signal_by_name(signal).scale)
        return abs(can[message][signal] - value) <= scale / 2 + 1e-9

    assert sent("Measurements", "Voltage", bank.voltage_v)
    assert sent("Measurements", "Current", bank.current_a)
    assert sent("Measurements", "Temperature", bank.temp_mean_c)
    assert (can["SocSoh"]["SOC"], can["SocSoh"]["SOH"]) == (round(bank.soc_pct), round(bank.soh_pct))
    assert (can["ModuleCounts"]["ModulesOnline"], can["ModuleCounts"]["ModulesOffline"]) == (3, 1)
    assert sent("CellExtremes", "MaxCellVoltage", bank.cell_max.value)
    assert sent("CellExtremes", "MinCellTemperature", bank.temp_min.value)
    assert sent("InstalledCapacity", "InstalledCapacityAh", bank.full_capacity_ah or 0.0)
    max_id = bytes(int(can["MaxCellVoltageId"][f"Id{i}"]) for i in range(8)).decode()
    assert max_id == wire.place(bank.cell_max)[:8] == "bus1/2/5"

    # RS485: Pylontech 0x61 (the bank as one battery, extremes at their module position) and BYD
    view = build_bank_view(s.view, decision)
    positions = {m.pack: m.position for m in view.modules}
    answer = PylonResponder(PylonOptions(inferred_system_analog=True)).handle(
        build_request(0x20, 2, 0x61), view, NOW
    )
    assert answer.response is not None
    info = parse_frame(answer.response).info
    (volt, cur, soc, cyc_mean, cyc_max, soh, soh_min, cmax, cmax_at, cmin, cmin_at, tmean) = (
        struct.unpack_from(">HhBHHBBHHHHH", info)
    )
    assert (volt, cur, soc) == (
        round(bank.voltage_v * 1000),
        round(bank.current_a * 100),
        round(bank.soc_pct),
    )
    assert (cyc_mean, cyc_max, soh, soh_min) == (bank.cycles_mean, bank.cycles_max, round(bank.soh_pct), 95)
    assert (cmax, cmax_at) == (round(bank.cell_max.value * 1000), positions[bank.cell_max.pack] << 8 | 5)
    assert (cmin, cmin_at) == (round(bank.cell_min.value * 1000), positions[bank.cell_min.pack] << 8 | 9)
    assert tmean == round(bank.temp_mean_c * 10 + 2731)
    board_mean, board_max, board_max_at = struct.unpack_from(">HHH", info, 39)
    assert board_mean == round(bank.board_temp_mean_c * 10 + 2731)
    assert (board_max, board_max_at) == (round(bank.board_temp_max.value * 10 + 2731), 2 << 8 | 1)
    image = build_image(view)
    at = {p.name: p.address for p in POINTS}
    assert image[at["soc_centi_pct"]] == round(bank.soc_pct * 100)
    assert image[at["max_temperature_dc"]] == round(bank.temp_max.value * 10)
    assert image[at["device_temperature_dc"]] == round(bank.board_temp_max.value * 10)

    # metrics
    text = render(
        make_registry(GatewayCollector(MetricsSources(store=s, decision=lambda: decision)))
    ).decode()
    metrics = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert metrics[("bms_bank_voltage_volts", ())] == bank.voltage_v
    assert metrics[("bms_bank_current_amperes", ())] == bank.current_a
    assert metrics[("bms_bank_state_of_charge_ratio", ())] == bank.soc_pct / 100
    assert metrics[("bms_bank_cell_voltage_max_volts", ())] == bank.cell_max.value
    assert metrics[("bms_bank_temperature_min_celsius", ())] == bank.temp_min.value
    assert metrics[("bms_bank_packs", (("state", "online"),))] == 3


async def test_modbus_native_bank_block_carries_the_one_bank() -> None:
    s = store()
    bank = s.view.bank
    assert bank.voltage_v is not None and bank.current_a is not None and bank.soc_pct is not None
    assert bank.cell_max is not None and bank.temp_max is not None
    async with running(s) as server:
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port or 0, timeout=5, retries=0)
        await client.connect()
        try:
            answer = await client.read_holding_registers(0, count=41, device_id=2)
        finally:
            client.close()
    assert not answer.isError()
    regs = answer.registers
    assert regs[4:7] == [bank.packs_online, bank.packs_stale, bank.packs_offline]
    assert regs[10] == round(bank.voltage_v * 100)
    assert regs[11] == round(bank.current_a * 10) & 0xFFFF
    assert regs[14] == round(bank.soc_pct * 10)
    assert regs[22:27] == [round(bank.cell_max.value * 1000), round(bank.cell_min.value * 1000), 211, 2, 5]  # type: ignore[union-attr]
    assert regs[29] == round(bank.temp_max.value * 10)
    assert regs[31:33] == [0, bank.cycles_max]
