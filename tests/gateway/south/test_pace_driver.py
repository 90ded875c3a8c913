"""PACE driver against an in-test bus whose packs answer with the codec's own response builders."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import pytest

from gateway.core.model import TempRole
from gateway.south.drivers.base import Control, DeviceError, NoResponse, ParameterWrite, Priority, Unsupported
from gateway.south.drivers.pace import PaceDriver
from mappings.bms.params import ParameterValueError, load_table
from protocol.bms.pace import commands as c
from protocol.bms.pace import values as v
from protocol.bms.pace.frame import PaceDecoder, parse_frame
from protocol.errors import RemoteProtocolError
from tests.support.fake_bus import WireBus

# Group values as captured from a real pack (PbmsTools), keyed by group.
CAPTURED_GROUPS = {
    "cell_ov": ((3600, 3700, 3380, 10), 1),
    "pack_ov": ((57600, 59200, 54000, 10), 1),
    "cell_uv": ((2800, 2500, 2900, 10), 1),
    "pack_uv": ((44800, 40000, 46400, 10), 1),
    "charge_oc": ((104, 110, 10), 1),
    "discharge_oc1": ((105, 110, 10), 1),
    "discharge_oc2": ((150, 4), 0),
    "short_circuit": ((12,), None),
    "balance": ((3400, 30), None),
    "sleep": ((3100, 0, 5), None),
    "full_charge": ((56000, 2000, 5), None),
    "cd_ot": ((3240, 3280, 3230, 3290, 3330, 3280), 1),
    "cd_ut": ((2730, 2680, 2730, 2580, 2530, 2580), 1),
    "mos_ot": ((3630, 3830, 3580), 1),
    "environment_t": ((2530, 2480, 2530, 3380, 3430, 3380), 1),
    "limiter": ((100,), 0),
}


def block(cells: int = 16, temps: int = 6, base_mv: int = 3300, current_a: float = -2.25) -> v.AnalogBlock:
    return v.AnalogBlock(
        tuple((base_mv + i) / 1000 for i in range(cells)),
        tuple(20.0 + i for i in range(temps)),
        current_a,
        round(sum((base_mv + i) / 1000 for i in range(cells)), 3),
        48.19,
        (10346, 140, 10000),
    )


@dataclass
class FakePack:
    address: int
    analog: v.AnalogBlock = field(default_factory=block)
    status: v.StatusBlock = field(
        default_factory=lambda: v.StatusBlock(
            (0,) * 16, (0,) * 6, system=0x0E, protection1=0x01, warning2=0x80, balancing=0b11
        )
    )
    groups: dict[str, c.GroupValues] = field(
        default_factory=lambda: {
            k: c.GroupValues(k, vals, lead) for k, (vals, lead) in CAPTURED_GROUPS.items()
        }
    )
    clock: dt.datetime = dt.datetime(2024, 8, 21, 5, 29, 31)
    protocols: c.Protocols = field(default_factory=lambda: c.Protocols(0x13, 0x14, 0))
    hardware: str = "P16S100A-1812-1.00"
    serial: bytes = b"1812101380309D".ljust(20) + b"GPSR2PC200YW28".ljust(20)
    configuration: int = 0x20
    history: list[c.HistoryRecordV25] = field(default_factory=list)
    refuse: frozenset[int] = frozenset()  # CID2 values answered with RTN 0x04
    off: bool = False  # does not answer at all
    shut_down: bool = False


class FakeBus(WireBus):
    """A BusClient: echoes the request (like some transceivers), then the addressed pack answers."""

    def __init__(
        self, packs: list[FakePack], *, version: int = 0x25, cid1: int = 0x46, pack_count: bool = True
    ):
        self.packs = {p.address: p for p in packs}
        self.master = min(self.packs)
        self.version = version
        self.cid1 = cid1
        self.pack_count = pack_count
        self.sent: list[tuple[c.PaceRequest, Priority]] = []
        super().__init__(PaceDecoder, self._line, silent="fake bus: no matching answer")

    def _line(self, request: bytes, priority: Priority, _expect: bool) -> bytes:
        req = c.parse_request(parse_frame(request))
        self.sent.append((req, priority))
        answer = self.answer(req)  # the echo comes first
        return request + (b"\x00junk" + answer if answer is not None else b"")

    def reply(self, req: c.PaceRequest, rtn: int, info: bytes = b"") -> bytes:
        return c.response(req.address, rtn, info, version=req.version, cid1=req.cid1)

    def answer(self, req: c.PaceRequest) -> bytes | None:
        pack = self.packs.get(req.address)
        if pack is None or pack.off:
            return None
        if req.cid2 in pack.refuse:
            return self.reply(req, 0x04)
        variant = req.variant
        cmd = req.cid2
        if cmd == c.Cmd.ANALOG:
            if req.bank:
                packs = [self.packs[a].analog for a in sorted(self.packs)]
                return self.reply(req, 0, v.encode_analog(v.bank_analog(packs)))
            flag, analog = 0, pack.analog
            if variant is v.Variant.EG4:  # EG4 sends (full capacity, cycles) and no P byte
                flag, analog = 0x10, replace(analog, user_defined=analog.user_defined[:2])
            return self.reply(
                req, 0, v.encode_analog(v.single_analog(req.address, analog, flag), variant=variant)
            )
        if cmd == c.Cmd.STATUS:
            if req.bank:
                blocks = tuple(self.packs[a].status for a in sorted(self.packs))
                return self.reply(req, 0, v.encode_status(v.StatusResponse(0, len(blocks), blocks)))
            if variant is v.Variant.EG4:
                s = v.StatusEg4(
                    0x10, req.address, (0,) * 16, (0,) * 6, fet_status=0x0B, system=0x02, voltage_event=0x02
                )
                return self.reply(req, 0, v.encode_status_eg4(s))
            if variant is v.Variant.V20:
                s20 = v.StatusV20(0, req.address, (0,) * 16, (0,) * 4, status1=0x01, status2=0x06)
                return self.reply(req, 0, v.encode_status_v20(s20))
            return self.reply(req, 0, v.encode_status(v.StatusResponse(0, req.address, (pack.status,))))
        if cmd == c.Cmd.PACK_COUNT:
            return (
                self.reply(req, 0, c.encode_pack_count(len(self.packs)))
                if self.pack_count
                else self.reply(req, 4)
            )
        if cmd == c.Cmd.SYSTEM_PARAMETERS:
            sp = c.SystemParameters(
                3.65, 3.0, 2.7, 50.0, 0.0, 100.0, 58.4, 48.0, 43.2, 60.0, -20.0, -150.0, 0x11
            )
            return self.reply(req, 0, c.encode_system_parameters(sp))
        if cmd == c.Cmd.PROTOCOL_VERSION:
            return c.response(req.address, 0, b"", version=self.version, cid1=self.cid1)
        if cmd == c.Cmd.HARDWARE_VERSION:
            return self.reply(req, 0, pack.hardware.encode().ljust(20, b"\x00"))
        if cmd == c.Cmd.SERIAL_NUMBER:
            return self.reply(req, 0, pack.serial)
        if cmd == c.Cmd.V20_MANUFACTURER:
            return self.reply(req, 0, c.encode_manufacturer_v20("LFP-48V", (2, 6), "EG4 Electronics"))
        if cmd == c.Cmd.READ_CAPACITIES:
            return self.reply(req, 0, c.encode_capacities(c.Capacities(62.04, 103.46, 100.0)))
        if cmd in (c.Cmd.READ_TIME, c.Cmd.V20_READ_TIME):
            return self.reply(req, 0, c.encode_datetime(pack.clock, variant))
        if cmd in (c.Cmd.WRITE_TIME, c.Cmd.V20_WRITE_TIME):
            pack.clock = req.argument
            return self.reply(req, 0)
        if cmd == c.Cmd.READ_PROTOCOLS:
            return self.reply(req, 0, c.encode_protocols(pack.protocols))
        if cmd == c.Cmd.WRITE_PROTOCOLS:
            pack.protocols = req.argument
            return self.reply(req, 0)
        if cmd in c.GROUPS_BY_READ:
            return self.reply(req, 0, c.encode_group_read(pack.groups[c.GROUPS_BY_READ[cmd].key]))
        if cmd in c.GROUPS_BY_WRITE:
            g: c.GroupValues = req.argument
            pack.groups[g.key] = g
            return self.reply(req, 0)
        if cmd == c.Cmd.SWITCH:
            bits = {0x0C: (0x01, False), 0x0D: (0x01, True), 0x06: (0x20, False), 0x07: (0x20, True)}
            bits |= {0x0A: (0x10, False), 0x0B: (0x10, True), 0x08: (0x08, False), 0x09: (0x08, True)}
            bit, on = bits[req.argument]
            pack.configuration = pack.configuration | bit if on else pack.configuration & ~bit
            return self.reply(req, 0, c.encode_switch_ack(c.SwitchAck(req.argument, pack.configuration)))
        if cmd in (c.Cmd.CHARGE_MOS, c.Cmd.DISCHARGE_MOS):
            bit = 0x02 if cmd == c.Cmd.CHARGE_MOS else 0x04
            other = 0x04 if bit == 0x02 else 0x02
            system = pack.status.system
            on = req.argument == c.MOS_ON
            if not on and not system & other:  # the BMS refuses to turn both MOSFETs off
                return self.reply(req, 0x09, bytes([system]))
            system = system | bit if on else system & ~bit
            pack.status = replace(pack.status, system=system)
            return self.reply(req, 0, bytes([system]))
        if cmd in (c.Cmd.SHUTDOWN, c.Cmd.V20_SHUTDOWN):
            pack.shut_down = True
            return self.reply(req, 0)
        if cmd == c.Cmd.READ_HISTORY:
            if req.argument >= len(pack.history):
                return self.reply(req, 0)
            return self.reply(req, 0, c.encode_history(pack.history[req.argument]))
        return self.reply(req, 0x04)

    def commands(self) -> list[str]:
        return [r.name for r, _ in self.sent]


# ---- realtime ------------------------------------------------------------------------------


async def test_realtime_v25_equals_pack_truth_and_skips_echo() -> None:
    pack = FakePack(3)
    bus = FakeBus([pack])
    t = await PaceDriver().read_realtime(bus, 3, now=1000.0)
    assert t.cell_voltages_v == pack.analog.cell_voltages_v
    assert t.current_a == -2.25 and t.voltage_v == pack.analog.voltage_v
    assert (t.soc_pct, t.soh_pct, t.cycles) == (46.58, 103.46, 140)
    assert (t.full_capacity_ah, t.remaining_capacity_ah, t.nominal_capacity_ah) == (103.46, 48.19, 100.0)
    assert [x.role for x in t.temperatures] == [TempRole.CELL] * 4 + [TempRole.MOS, TempRole.AMBIENT]
    assert t.temperatures[4].value_c == 24.0
    assert t.charge_mos_on and t.discharge_mos_on and t.heater_on is None
    assert t.protections == {"Cell OV protection"}
    assert t.alarms == {"Low SOC alarm"}
    assert "Discharging" in t.states and t.balancing_cells == (1, 2)
    assert t.measured_at == 1000.0
    assert bus.commands() == ["analog", "status"]
    assert all(r.command_value == 3 for r, _ in bus.sent)


async def test_realtime_eg4_and_v20_dialects() -> None:
    bus = FakeBus([FakePack(1)], version=0x20, cid1=0x4A)
    t = await PaceDriver(version=0x20, cid1=0x4A).read_realtime(bus, 1, now=1.0)
    assert len(t.temperatures) == 6 and t.heater_on is True
    assert t.protections == {"Cell OV protection"} and "Charging" in t.states
    assert all(r.command_value is None for r, _ in bus.sent)  # EG4 sends an empty INFO

    bus20 = FakeBus([FakePack(2)])
    t20 = await PaceDriver(version=0x20, cid1=0x46).read_realtime(bus20, 2, now=1.0)
    assert t20.protections == {"Pack OV protection"} and t20.charge_mos_on and t20.discharge_mos_on
    assert t20.voltage_v == FakePack(2).analog.voltage_v  # v20 scale (10 mV) applied both ways


async def test_rtn_error_and_silence() -> None:
    pack = FakePack(1, refuse=frozenset({c.Cmd.STATUS}))
    bus = FakeBus([pack])
    with pytest.raises(DeviceError) as err:
        await PaceDriver().read_realtime(bus, 1, now=0.0)
    assert err.value.code == 0x04 and "CID2 invalid" in str(err.value)
    with pytest.raises(NoResponse):
        await PaceDriver().read_realtime(FakeBus([FakePack(1, off=True)]), 1, now=0.0)
    with pytest.raises(NoResponse):
        await PaceDriver().read_realtime(bus, 7, now=0.0)  # nobody at 7: only the echo comes back


# ---- bank read through the master ----------------------------------------------------------


async def test_bank_realtime_through_master() -> None:
    packs = [
        FakePack(1),
        FakePack(2, analog=block(cells=15, temps=4, base_mv=3310, current_a=1.5)),
        FakePack(3, analog=block(base_mv=3350, current_a=0.0)),
    ]
    packs[1].status = v.StatusBlock((0,) * 15, (0,) * 4, system=0x26, fault=0x04)
    bus = FakeBus(packs)
    bank = await PaceDriver().read_bank_realtime(bus, 1, now=5.0)
    assert sorted(bank) == [1, 2, 3]
    assert bank[2].cell_voltages_v == packs[1].analog.cell_voltages_v and len(bank[2].cell_voltages_v) == 15
    assert bank[2].current_a == 1.5 and bank[2].faults == {"NTC fault"} and "Charging" in bank[2].states
    assert bank[3].cell_voltages_v[0] == 3.35
    assert bus.commands() == ["pack_count", "analog", "status"]
    assert all(r.address == 1 for r, _ in bus.sent)
    assert [r.command_value for r, _ in bus.sent[1:]] == [0xFF, 0xFF]


async def test_bank_realtime_without_pack_count_command() -> None:
    bus = FakeBus([FakePack(1), FakePack(2)], pack_count=False)
    bank = await PaceDriver().read_bank_realtime(bus, 1, now=5.0)
    assert sorted(bank) == [1, 2]


async def test_bank_realtime_count_mismatch_is_refused() -> None:
    class Liar(FakeBus):
        def answer(self, req: c.PaceRequest) -> bytes | None:
            if req.cid2 == c.Cmd.PACK_COUNT:
                return self.reply(req, 0, c.encode_pack_count(5))
            return super().answer(req)

    with pytest.raises(RemoteProtocolError, match="counts 5 packs"):
        await PaceDriver().read_bank_realtime(Liar([FakePack(1), FakePack(2)]), 1, now=0.0)


async def test_bank_read_needs_v25() -> None:
    with pytest.raises(Unsupported):
        await PaceDriver(version=0x20, cid1=0x4A).read_bank_realtime(FakeBus([FakePack(1)]), 1, now=0.0)


# ---- identity, capacities, clock, protocols --------------------------------------------------


async def test_identity_v25_and_v20() -> None:
    bus = FakeBus([FakePack(1)])
    d = PaceDriver()
    ident = await d.read_identity(bus, 1)
    assert (ident.version, ident.serial, ident.barcode) == (
        "P16S100A-1812-1.00",
        "1812101380309D",
        "GPSR2PC200YW28",
    )
    assert ident.protocol == "pace"
    assert await d.read_hardware_version(bus, 1) == "P16S100A-1812-1.00"
    assert await d.read_serial_numbers(bus, 1) == ("1812101380309D", "GPSR2PC200YW28")
    assert await d.read_capacities(bus, 1) == c.Capacities(62.04, 103.46, 100.0)

    no_sn = await d.read_identity(FakeBus([FakePack(1, refuse=frozenset({c.Cmd.SERIAL_NUMBER}))]), 1)
    assert no_sn.version == "P16S100A-1812-1.00" and no_sn.serial is None

    bus20 = FakeBus([FakePack(1)], version=0x20, cid1=0x4A)
    i20 = await PaceDriver(version=0x20, cid1=0x4A).read_identity(bus20, 1)
    assert (i20.model, i20.manufacturer, i20.version, i20.serial) == (
        "LFP-48V",
        "EG4 Electronics",
        "2.6",
        None,
    )


async def test_clock_read_and_write() -> None:
    pack = FakePack(1)
    bus = FakeBus([pack])
    d = PaceDriver()
    reading = await d.read_clock(bus, 1, now=123.0)
    assert reading.pack_time == dt.datetime(2024, 8, 21, 5, 29, 31).timestamp() and reading.read_at == 123.0
    target = dt.datetime(2025, 1, 2, 3, 4, 5)
    await d.write_clock(bus, 1, target.timestamp())
    assert pack.clock == target
    assert bus.sent[-1][1] is Priority.ADMIN

    eg4 = FakePack(1)
    bus20 = FakeBus([eg4], version=0x20, cid1=0x4A)
    await PaceDriver(version=0x20, cid1=0x4A).write_clock(bus20, 1, target.timestamp())
    assert eg4.clock == target and bus20.sent[-1][0].name == "v20_write_time"


async def test_inverter_protocol_selection() -> None:
    pack = FakePack(1)
    bus = FakeBus([pack])
    d = PaceDriver()
    p = await d.read_protocols(bus, 1)
    assert (p.can_name, p.rs485_name, p.mode_name) == ("Afore", "RONGKE", "auto")
    await d.write_protocols(bus, 1, c.Protocols(0x03, 0x01, 1))
    assert pack.protocols == c.Protocols(0x03, 0x01, 1)
    sent = len(bus.sent)
    with pytest.raises(Exception, match="not in the PACE CAN table"):
        await d.write_protocols(bus, 1, c.Protocols(0x40, 0x01, 1))
    assert len(bus.sent) == sent  # refused before the bus


# ---- parameters ----------------------------------------------------------------------------


async def test_read_parameters_every_group() -> None:
    bus = FakeBus([FakePack(1)])
    ps = await PaceDriver().read_parameters(bus, 1, now=9.0)
    table = load_table("pace")
    assert set(ps.values) == {p.name for p in table}
    assert ps.get("Cell_OV_Protect") == 3.7 and ps.values["Cell_OV_Protect"].unit == "V"
    assert ps.get("Pack_OVP_Delay_Time") == 1000
    assert ps.get("Discharge_OC_Alarm") == 105  # read as two's complement, shown positive
    assert ps.get("Discharge_OC_2_Delay_Time") == 100
    assert ps.get("Short_Circuit_Delay_Time") == 300
    assert ps.get("Charge_OT_Alarm") == 51.0 and ps.get("Charge_UT_Protect") == -5.0
    assert ps.get("Env_UT_Protect") == -25.0 and ps.get("MOS_OT_Protect") == 110.0
    assert ps.get("Pack_Full_Charge_Voltage") == 56.0 and ps.get("State_of_Charge_Low_Alarm") == 5
    assert ps.get("Charge_Current_Limiter_Start_Current") == 100
    assert ps.read_at == 9.0


async def test_read_parameters_skips_groups_the_firmware_refuses() -> None:
    bus = FakeBus([FakePack(1, refuse=frozenset({0xED}))])
    ps = await PaceDriver().read_parameters(bus, 1, now=0.0)
    assert "Charge_Current_Limiter_Start_Current" not in ps.values and "Cell_OV_Protect" in ps.values


async def test_write_parameters_read_modify_write() -> None:
    pack = FakePack(1)
    bus = FakeBus([pack])
    d = PaceDriver()
    await d.write_parameters(
        bus, 1, [ParameterWrite("Cell_OV_Protect", 3.65), ParameterWrite("Cell_OVP_Delay_Time", 2000)]
    )
    assert pack.groups["cell_ov"] == c.GroupValues("cell_ov", (3600, 3650, 3380, 20), 1)
    assert bus.commands() == ["read_cell_ov", "write_cell_ov"]
    assert bus.sent[-1][1] is Priority.ADMIN
    await d.write_parameters(
        bus, 1, [ParameterWrite("Discharge_OC_Alarm", 100), ParameterWrite("Charge_UT_Alarm", -2)]
    )
    assert pack.groups["discharge_oc1"].values == (100, 110, 10)
    assert pack.groups["cd_ut"].values[0] == 2710
    ps = await d.read_parameters(bus, 1, now=0.0)
    assert (ps.get("Cell_OV_Protect"), ps.get("Discharge_OC_Alarm"), ps.get("Charge_UT_Alarm")) == (
        3.65,
        100,
        -2.0,
    )


async def test_write_out_of_range_sends_nothing() -> None:
    bus = FakeBus([FakePack(1)])
    with pytest.raises(ParameterValueError, match="outside the allowed range"):
        await PaceDriver().write_parameters(bus, 1, [ParameterWrite("Cell_OV_Protect", 5.0)])
    with pytest.raises(KeyError):
        await PaceDriver().write_parameters(bus, 1, [ParameterWrite("No Such Thing", 1)])
    assert bus.sent == []


async def test_every_parameter_round_trips_through_the_pack() -> None:
    pack = FakePack(1)
    bus = FakeBus([pack])
    d = PaceDriver()
    table = load_table("pace")
    wanted = {p.name: p.min if p.name != "Cell_OVP_Release" else p.max for p in table}
    await d.write_parameters(bus, 1, [ParameterWrite(n, val) for n, val in wanted.items()])
    ps = await d.read_parameters(bus, 1, now=0.0)
    assert {n: ps.get(n) for n in wanted} == pytest.approx(wanted)
    assert pack.groups["sleep"].values[1] == 0  # the reserved byte is written back as read


async def test_v20_has_no_parameter_groups() -> None:
    with pytest.raises(Unsupported):
        await PaceDriver(version=0x20, cid1=0x4A).read_parameters(FakeBus([FakePack(1)]), 1, now=0.0)


# ---- controls ------------------------------------------------------------------------------


async def test_mos_control_is_inferred_and_verified() -> None:
    pack = FakePack(1)
    bus = FakeBus([pack])
    with pytest.raises(Unsupported, match="inferred"):
        await PaceDriver().control(bus, 1, Control.CHARGE_MOS, 0)
    assert bus.sent == []
    d = PaceDriver(allow_inferred=True)
    await d.control(bus, 1, Control.CHARGE_MOS, 0)
    assert not pack.status.system & 0x02
    with pytest.raises(DeviceError) as err:  # the BMS refuses both MOSFETs off
        await d.control(bus, 1, Control.DISCHARGE_MOS, 0)
    assert err.value.code == 0x09
    await d.control(bus, 1, Control.CHARGE_MOS, 1)
    assert pack.status.system & 0x02


async def test_switches_shutdown_and_unsupported() -> None:
    pack = FakePack(1)
    bus = FakeBus([pack])
    d = PaceDriver()
    await d.control(bus, 1, Control.BUZZER, 1)
    assert pack.configuration & 0x01
    await d.control(bus, 1, Control.SOUND_LIGHT_ALARM, 0)
    assert not pack.configuration & 0x20
    await d.control(bus, 1, Control.CURRENT_LIMITER, 1)
    assert pack.configuration & 0x10
    await d.set_limiter_gear(bus, 1, low=True)
    assert pack.configuration & 0x08
    await d.control(bus, 1, Control.SHUTDOWN)
    assert pack.shut_down
    for action in (Control.HEATER, Control.FAN, Control.FORCED_SLEEP):
        with pytest.raises(Unsupported):
            await d.control(bus, 1, action, 1)


async def test_switch_not_applied_is_reported() -> None:
    class Stubborn(FakeBus):
        def answer(self, req: c.PaceRequest) -> bytes | None:
            if req.cid2 == c.Cmd.SWITCH:
                return self.reply(req, 0, c.encode_switch_ack(c.SwitchAck(req.argument, 0)))
            return super().answer(req)

    with pytest.raises(DeviceError, match="did not change"):
        await PaceDriver().control(Stubborn([FakePack(1)]), 1, Control.BUZZER, 1)


# ---- history and probe ---------------------------------------------------------------------


async def test_history_until_end_of_data() -> None:
    recs = [
        c.HistoryRecordV25(
            dt.datetime(2024, 2, 29, 2, 0, 56 - i),
            (3.479,) * 16,
            (20.2,) * 6,
            -1.46,
            55.767,
            51.73,
            103.46,
            bytes(12),
        )
        for i in range(3)
    ]
    bus = FakeBus([FakePack(1, history=recs)])
    d = PaceDriver()
    got = []
    index = 0
    while (rec := await d.read_history(bus, 1, index)) is not None:
        got.append(rec)
        index += 1
    assert [r.index for r in got] == [0, 1, 2]
    assert got[0].recorded_at == recs[0].recorded_at.timestamp()
    assert got[0].soc_pct == 50.0 and got[0].voltage_v == 55.767 and got[0].current_a == -1.46
    assert got[0].raw == c.encode_history(recs[0])
    with pytest.raises(Unsupported, match="no record count"):
        await d.history_count(bus, 1)


async def test_probe_learns_the_dialect() -> None:
    d = PaceDriver()
    assert await d.probe(FakeBus([FakePack(4)], version=0x20, cid1=0x4A), 4)
    assert d.variant(4) is v.Variant.EG4
    assert await d.probe(FakeBus([FakePack(5)], version=0x25), 5)
    assert d.variant(5) is v.Variant.V25
    assert not await d.probe(FakeBus([FakePack(6, off=True)]), 6)
    t = await d.read_realtime(FakeBus([FakePack(4)], version=0x20, cid1=0x4A), 4, now=0.0)
    assert len(t.temperatures) == 6


async def test_protocol_version_manufacturer_system_parameters() -> None:
    bus = FakeBus([FakePack(2)], version=0x20, cid1=0x46)
    d = PaceDriver(version=0x20, cid1=0x46)
    assert await d.read_protocol_version(bus, 2) == 0x20
    man = await d.read_manufacturer(bus, 2)
    assert (man.device_name, man.software_version, man.manufacturer) == ("LFP-48V", (2, 6), "EG4 Electronics")
    sp = await d.read_system_parameters(bus, 2)
    assert (sp.cell_high_voltage_v, sp.discharge_low_temperature_c, sp.discharge_current_limit_a) == (
        3.65,
        -20.0,
        -150.0,
    )
    assert bus.sent[-1][0].command_value == 2


async def test_soc_falls_back_to_design_capacity_or_fails_cleanly() -> None:
    b = replace(block(), user_defined=())
    bus = FakeBus([FakePack(1, analog=b)])
    with pytest.raises(RemoteProtocolError, match="SOC unknown"):
        await PaceDriver().read_realtime(bus, 1, now=0.0)
