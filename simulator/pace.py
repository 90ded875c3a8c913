"""PACE simulated packs on the wire (v25, or v20 with `pace_version=0x20`): bytes in, bytes out.

What it is for: every command of `protocol.bms.pace` answered from a `SimPack` with the codec's own
request parser and payload encoders, RTN codes for what a pack refuses, and the master behaviour
of real PACE banks: the pack at the lowest address answers the pack-count query (0x90) and the
analog/status reads with INFO 0xFF with one block per online pack (*inferred*: how a real master
reports a silent slave is not documented; leaving it out is the hard case for the driver's block
attribution, see docs/protocols.md). Other packs answer 0xFF reads with RTN 0x06.

Choices the reference leaves open, marked *inferred* in docs/simulator.md: the units of the
parameter defaults (`simulator.pace_model`), the history record's 12 undecoded tail bytes
(byte 0 carries the simulator's event code, the Tianpower numbering), a MOSFET request the pack
refuses is answered RTN 0 with the unchanged system status (the driver verifies the state), and
the firmware-upgrade commands CID2 0xF0-0xF4 (ours, docs/bootloader.md). Injected hardware faults
(`FaultSpec.hardware`) set their status bits by the codec's flag table of the version.

It must never perform I/O and never raise on any request bytes.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

from protocol.bms import bootloader as bl
from protocol.bms.base import FlagInfo, FlagKind, FrameDecoder
from protocol.bms.pace import commands as c
from protocol.bms.pace import values as v
from protocol.bms.pace.frame import (
    BOOT_CODES,
    CID1_LFP,
    VER_20,
    VER_25,
    PaceDecoder,
    PaceFrame,
    Rtn,
    parse_frame,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError
from simulator.pace_model import PaceModel
from simulator.pack import Identity, PackBank, PackTruth, ResponderOptions, SimPack, WireFlags
from simulator.records import epoch_of, event_code, pack_time

HW_WIDTH = 20
FULLY_CHARGED_SOC_PCT = 99.5
SN_WIDTH = 20
_Status = TypeVar("_Status", v.StatusBlock, v.StatusV20)


def bank_pack_flags(blocks: Sequence[object]) -> tuple[int, ...]:
    """The byte a real master sends after each pack's block of a bank answer (bmspace's two-pack
    capture: 0x11, 0x00; its meaning is not documented): the simulator sends 0x00 after each."""
    return (0x00,) * len(blocks)


PROTECTION1 = {"cell_ov": 0, "cell_uv": 1, "pack_ov": 2, "pack_uv": 3, "chg_oc1": 4, "chg_oc2": 4,
               "dsg_oc1": 5, "dsg_oc2": 5, "short_circuit": 6}  # fmt: skip
PROTECTION2 = {"chg_ot": 0, "dsg_ot": 1, "chg_ut": 2, "dsg_ut": 3, "mos_ot": 4, "env_ot": 5, "env_ut": 6}
WARNING1 = {"cell_ov": 0, "cell_uv": 1, "pack_ov": 2, "pack_uv": 3, "chg_oc": 4, "dsg_oc": 5}
WARNING2 = {"chg_ot": 0, "dsg_ot": 1, "chg_ut": 2, "dsg_ut": 3, "env_ot": 4, "env_ut": 5, "mos_ot": 6,
            "soc_low": 7}  # fmt: skip
V20_STATUS1 = {"pack_ov": 0, "cell_uv": 1, "chg_oc1": 2, "chg_oc2": 2, "dsg_oc1": 4, "dsg_oc2": 4,
               "dsg_ot": 5, "dsg_ut": 5, "chg_ot": 6, "chg_ut": 6, "pack_uv": 7}  # fmt: skip


def _bits(table: dict[str, int], active: frozenset[str]) -> int:
    out = 0
    for key in active:
        if key in table:
            out |= 1 << table[key]
    return out


def fault_flag_names(table: Mapping[str, Sequence[FlagInfo]]) -> tuple[str, ...]:
    """The flags of kind "fault" among a status bit table's bits (what `FaultSpec.hardware` may name)."""
    return tuple(f.name for bits in table.values() for f in bits if f.kind is FlagKind.FAULT)


def with_hardware_faults(
    block: _Status, table: Mapping[str, Sequence[FlagInfo]], names: frozenset[str]
) -> _Status:
    """`block` with the bits of the named flags set, their positions taken from the codec's table."""
    if not names:
        return block
    fields = {
        field: getattr(block, field) | sum(1 << bit for bit, f in enumerate(bits) if f.name in names)
        for field, bits in table.items()
    }
    return dataclasses.replace(block, **fields)


def analog_block(truth: PackTruth) -> v.AnalogBlock:
    return v.AnalogBlock(
        cell_voltages_v=truth.cell_voltages_v,
        temperatures_c=(*truth.cell_temperatures_c, truth.mos_temperature_c, truth.ambient_temperature_c),
        current_a=truth.current_a,
        voltage_v=truth.voltage_v,
        remaining_ah=truth.remaining_capacity_ah,
        user_defined=(
            round(truth.full_capacity_ah * 100),
            truth.cycles,
            round(truth.nominal_capacity_ah * 100),
        ),
    )


def system_byte(truth: PackTruth) -> int:
    return (
        (0x01 if not truth.extra.get("limiter_on", True) else 0)
        | (0x02 if truth.charge_mos_on else 0)
        | (0x04 if truth.discharge_mos_on else 0)
        | (0x08 if truth.discharging else 0)
        | (0x20 if truth.charging else 0)
    )


def configuration_byte(truth: PackTruth) -> int:
    return (
        (0x01 if truth.buzzer_on else 0)
        | (0x02 if truth.manual_charge_mos_off else 0)
        | (0x04 if truth.manual_discharge_mos_off else 0)
        | (0x08 if truth.extra.get("limiter_low_gear", False) else 0)
        | (0x10 if truth.extra.get("limiter_on", True) else 0)
        | (0x20 if truth.sound_light_on else 0)
    )


def status_block(truth: PackTruth, params: dict[str, float]) -> v.StatusBlock:
    return with_hardware_faults(_status_block(truth, params), v.V25_STATUS_BITS, truth.hardware_faults)


def _status_block(truth: PackTruth, params: dict[str, float]) -> v.StatusBlock:
    cell_warn = []
    for volts in truth.cell_voltages_v:
        w = 0
        if "cell_ov" in truth.alarms and volts >= params["Cell_OV_Alarm"]:
            w = 2
        elif "cell_uv" in truth.alarms and volts <= params["Cell_UV_Alarm"]:
            w = 1
        cell_warn.append(w)
    full = truth.soc_pct >= FULLY_CHARGED_SOC_PCT and not truth.discharging
    return v.StatusBlock(
        cell_warnings=tuple(cell_warn),
        temp_warnings=(0,) * (len(truth.cell_temperatures_c) + 2),
        charge_current_warning=2 if "chg_oc" in truth.alarms else 0,
        total_voltage_warning=2 if "pack_ov" in truth.alarms else (1 if "pack_uv" in truth.alarms else 0),
        discharge_current_warning=2 if "dsg_oc" in truth.alarms else 0,
        protection1=_bits(PROTECTION1, truth.protections),
        protection2=_bits(PROTECTION2, truth.protections) | (0x80 if full else 0),
        system=system_byte(truth),
        configuration=configuration_byte(truth),
        fault=0,
        balancing=sum(1 << (i - 1) for i in truth.balancing_cells),
        warning1=_bits(WARNING1, truth.alarms),
        warning2=_bits(WARNING2, truth.alarms),
    )


def status_v20(truth: PackTruth, address: int) -> v.StatusV20:
    return with_hardware_faults(_status_v20(truth, address), v.V20_STATUS_BITS, truth.hardware_faults)


def _status_v20(truth: PackTruth, address: int) -> v.StatusV20:
    return v.StatusV20(
        data_flag=0,
        command_value=address,
        cell_warnings=(0,) * len(truth.cell_voltages_v),
        temp_warnings=(0,) * (len(truth.cell_temperatures_c) + 2),
        status1=_bits(V20_STATUS1, truth.protections),
        status2=(0x02 if truth.charge_mos_on else 0) | (0x04 if truth.discharge_mos_on else 0)
        | (0x08 if truth.discharging else 0),
        status3=(0x01 if truth.buzzer_on else 0) | (0x20 if truth.heater_on else 0)
        | (0x40 if truth.discharging else 0) | (0x80 if truth.charging else 0),
    )  # fmt: skip


class PaceResponder:
    family = "pace"

    @classmethod
    def from_options(cls, options: ResponderOptions) -> PaceResponder:
        return cls(options.pace_version)

    def __init__(self, version: int = VER_25) -> None:
        self.version = version
        self.variant = v.Variant.V25 if version == VER_25 else v.Variant.V20
        self.model = PaceModel(version)
        self._status_bits = v.V25_STATUS_BITS if version == VER_25 else v.V20_STATUS_BITS

    # --- Responder protocol -------------------------------------------------------------------

    def new_decoder(self) -> FrameDecoder:
        return PaceDecoder()

    def create_pack(self, address: int, rng: random.Random) -> SimPack:
        serial_no = rng.randrange(100000)
        identity = Identity(
            version="P16S100A-SIM-V2.5" if self.version == VER_25 else "P16S100A-SIM-V2.0",
            barcode=f"PACE-HW-{serial_no:05d}",
            serial=f"PACESIM{serial_no:05d}{address:02d}",
            manufacturer="PACE (simulated)",
            model="P16S100A-SIM",
        )
        pack = SimPack.create(address, self.model, rng, identity)
        pack.extra.update({"can_protocol": 0x01, "rs485_protocol": 0x01, "protocol_mode": 0x00,
                           "limiter_on": True, "limiter_low_gear": False})  # fmt: skip
        return pack

    def wire_flags(self, sim: PackBank, address: int) -> WireFlags:
        pack = sim.pack(address)
        truth = pack.measure(sim.epoch_s)
        flags = (
            status_block(truth, pack.params).flags()
            if self.version == VER_25
            else status_v20(truth, address).flags()
        )
        return WireFlags(flags.protections, flags.alarms, flags.faults, flags.states)

    def fault_flag_names(self) -> tuple[str, ...]:
        return fault_flag_names(self._status_bits)

    def is_invalid(self, data: bytes) -> bool:
        try:
            parse_frame(data)
        except RemoteProtocolError:
            return True
        return False

    def protected(self, index: int, length: int) -> bool:
        # SOI, the LENGTH characters (1 + 8 .. 1 + 11) and EOI keep the frame's shape intact.
        return index == 0 or index == length - 1 or 9 <= index <= 12

    def respond(self, sim: PackBank, raw: bytes) -> tuple[int | None, bytes]:
        try:
            frame = parse_frame(raw)
        except RemoteProtocolError:
            return None, b""
        address = frame.address
        pack = sim.answering_pack(address)
        if pack is None:
            return address, b""
        op = BOOT_CODES.op(frame.command)
        if op is not None:
            body = pack.bootloader.handle(op, frame.info)
            sim.dirty = True
            return address, self._reply(frame, Rtn.NORMAL, body)
        if pack.bootloader.mode is bl.Mode.BOOTLOADER:
            return address, b""
        if frame.command == c.Cmd.PROTOCOL_VERSION:
            return address, c.response(address, Rtn.NORMAL, b"", version=self.version, cid1=frame.cid1)
        if frame.version != self.version:
            return address, self._reply(frame, Rtn.VER_ERROR)
        if frame.cid1 != CID1_LFP:
            return address, self._reply(frame, Rtn.CID2_INVALID)
        try:
            req = c.parse_request(frame)
        except RemoteProtocolError:
            known = frame.command in {int(x) for x in c.Cmd}
            return address, self._reply(frame, Rtn.FORMAT_ERROR if known else Rtn.CID2_INVALID)
        try:
            rtn, info = self._answer(sim, pack, req)
        except (LocalProtocolError, ValueError, KeyError):
            rtn, info = Rtn.INVALID_DATA, b""
        if rtn is None:
            return address, b""
        return address, self._reply(frame, rtn, info)

    def _reply(self, frame: PaceFrame, rtn: int, info: bytes = b"") -> bytes:
        return c.response(frame.address, rtn, info, version=self.version, cid1=frame.cid1)

    # --- commands -----------------------------------------------------------------------------

    def _master(self, sim: PackBank) -> int:
        return min(sim.packs)

    def _bank(self, sim: PackBank) -> list[SimPack]:
        return [p for a, p in sorted(sim.packs.items()) if not sim.offline(a) and not p.sleeping]

    def _answer(self, sim: PackBank, pack: SimPack, req: c.PaceRequest) -> tuple[int | None, bytes]:
        cid2 = req.cid2
        epoch = sim.epoch_s
        if cid2 in (c.Cmd.ANALOG, c.Cmd.STATUS):
            return self._realtime(sim, pack, req)
        if cid2 == c.Cmd.PACK_COUNT:
            if pack.address != self._master(sim):
                return Rtn.INVALID_DATA, b""
            return Rtn.NORMAL, c.encode_pack_count(len(self._bank(sim)))
        if cid2 == c.Cmd.V20_MANUFACTURER:
            return Rtn.NORMAL, c.encode_manufacturer_v20("PACE-SIM", (2, 5 if self.version == VER_25 else 0),
                                                         pack.identity.manufacturer)  # fmt: skip
        if self.version == VER_20:
            return self._answer_v20(sim, pack, req)
        if cid2 == c.Cmd.HARDWARE_VERSION:
            return Rtn.NORMAL, c.encode_text(pack.version, HW_WIDTH)
        if cid2 == c.Cmd.SERIAL_NUMBER:
            # the 40-byte form of a real PbmsTools pack: BMS serial, then a blank pack serial
            return Rtn.NORMAL, c.encode_text(pack.identity.serial, SN_WIDTH) + c.encode_text("", SN_WIDTH)
        if cid2 == c.Cmd.READ_TIME:
            return Rtn.NORMAL, c.encode_datetime(pack_time(pack.clock(epoch)), v.Variant.V25)
        if cid2 == c.Cmd.WRITE_TIME:
            pack.clock_offset_s = epoch_of(req.argument) - epoch
            sim.dirty = True
            return Rtn.NORMAL, b""
        if cid2 == c.Cmd.READ_CAPACITIES:
            t = pack.measure(epoch)
            return Rtn.NORMAL, c.encode_capacities(
                c.Capacities(t.remaining_capacity_ah, t.full_capacity_ah, t.nominal_capacity_ah)
            )
        if cid2 == c.Cmd.READ_PROTOCOLS:
            e = pack.extra
            return Rtn.NORMAL, c.encode_protocols(
                c.Protocols(e["can_protocol"], e["rs485_protocol"], e["protocol_mode"])
            )
        if cid2 == c.Cmd.WRITE_PROTOCOLS:
            p: c.Protocols = req.argument
            p.validate()
            pack.extra.update({"can_protocol": p.can, "rs485_protocol": p.rs485, "protocol_mode": p.mode})
            sim.dirty = True
            return Rtn.NORMAL, b""
        if cid2 == c.Cmd.SWITCH:
            return self._switch(pack, req.argument, epoch)
        if cid2 in (c.Cmd.CHARGE_MOS, c.Cmd.DISCHARGE_MOS):
            if req.argument not in (c.MOS_ON, c.MOS_OFF):
                return Rtn.INVALID_DATA, b""
            pack.set_mos(cid2 == c.Cmd.CHARGE_MOS, req.argument == c.MOS_ON)
            return Rtn.NORMAL, bytes([system_byte(pack.measure(epoch))])
        if cid2 == c.Cmd.SHUTDOWN:
            return (Rtn.NORMAL, b"") if pack.force_sleep() else (Rtn.INVALID_DATA, b"")
        if cid2 == c.Cmd.READ_HISTORY:
            return Rtn.NORMAL, self._history(pack, int(req.argument))
        if cid2 in c.GROUPS_BY_READ:
            layout = c.GROUPS_BY_READ[cid2]
            specs = [self.model.by_field.get((layout.read, i)) for i in range(len(layout.fields))]
            values = tuple(0 if spec is None else spec.to_wire(pack.params[spec.name]) for spec in specs)
            lead = 1 if layout.lead else None
            return Rtn.NORMAL, c.encode_group_read(c.GroupValues(layout.key, values, lead))
        if cid2 in c.GROUPS_BY_WRITE:
            g: c.GroupValues = req.argument
            updates = {
                spec.name: spec.from_wire(raw)
                for i, raw in enumerate(g.values)
                if (spec := self.model.by_field.get((g.layout.read, i))) is not None
            }
            pack.write_parameters(updates)  # ValueError -> RTN 06, nothing changed
            sim.dirty = True
            return Rtn.NORMAL, b""
        return Rtn.CID2_INVALID, b""

    def _answer_v20(self, sim: PackBank, pack: SimPack, req: c.PaceRequest) -> tuple[int | None, bytes]:
        cid2 = req.cid2
        if cid2 == c.Cmd.V20_READ_TIME:
            return Rtn.NORMAL, c.encode_datetime(pack_time(pack.clock(sim.epoch_s)), v.Variant.V20)
        if cid2 == c.Cmd.V20_WRITE_TIME:
            pack.clock_offset_s = epoch_of(req.argument) - sim.epoch_s
            sim.dirty = True
            return Rtn.NORMAL, b""
        if cid2 == c.Cmd.V20_SERIAL:
            return Rtn.NORMAL, c.encode_text(pack.identity.serial, SN_WIDTH)
        if cid2 == c.Cmd.V20_SHUTDOWN:
            return (Rtn.NORMAL, b"") if pack.force_sleep() else (Rtn.INVALID_DATA, b"")
        return Rtn.CID2_INVALID, b""

    def _realtime(self, sim: PackBank, pack: SimPack, req: c.PaceRequest) -> tuple[int | None, bytes]:
        analog = req.cid2 == c.Cmd.ANALOG
        if req.bank:
            if pack.address != self._master(sim) or self.version != VER_25:
                return Rtn.INVALID_DATA, b""
            packs = self._bank(sim)
            truths = [(p, p.measure(sim.epoch_s)) for p in packs]
            if analog:
                blocks_a = [analog_block(t) for _p, t in truths]
                return Rtn.NORMAL, v.encode_analog(
                    v.bank_analog(blocks_a, pack_flags=bank_pack_flags(blocks_a))
                )
            if any(p.hardware_faults for p in packs):
                sim.count("hardware_fault_responses")
            blocks = tuple(status_block(t, p.params) for p, t in truths)
            return Rtn.NORMAL, v.encode_status(
                v.StatusResponse(0, len(blocks), blocks, b"", bank_pack_flags(blocks))
            )
        if req.command_value is not None and req.command_value != pack.address:
            return Rtn.INVALID_DATA, b""
        truth = pack.measure(sim.epoch_s)
        if analog:
            return Rtn.NORMAL, v.encode_analog(
                v.single_analog(pack.address, analog_block(truth)), variant=self.variant
            )
        if pack.hardware_faults:
            sim.count("hardware_fault_responses")
        if self.version == VER_25:
            return Rtn.NORMAL, v.encode_status(
                v.StatusResponse(0, pack.address, (status_block(truth, pack.params),))
            )
        return Rtn.NORMAL, v.encode_status_v20(status_v20(truth, pack.address))

    def _switch(self, pack: SimPack, code: int, epoch: float) -> tuple[int | None, bytes]:
        e = pack.extra
        actions = {
            c.SwitchCode.LED_ALARM_OFF: lambda: setattr(pack, "sound_light_on", False),
            c.SwitchCode.LED_ALARM_ON: lambda: setattr(pack, "sound_light_on", True),
            c.SwitchCode.LIMITER_HIGH_GEAR: lambda: e.update(limiter_low_gear=False),
            c.SwitchCode.LIMITER_LOW_GEAR: lambda: e.update(limiter_low_gear=True),
            c.SwitchCode.LIMITER_OFF: lambda: e.update(limiter_on=False),
            c.SwitchCode.LIMITER_ON: lambda: e.update(limiter_on=True),
            c.SwitchCode.BUZZER_OFF: lambda: setattr(pack, "buzzer_on", False),
            c.SwitchCode.BUZZER_ON: lambda: setattr(pack, "buzzer_on", True),
        }
        action = actions.get(code)  # type: ignore[call-overload]
        if action is None:
            return Rtn.INVALID_DATA, b""
        action()
        truth = pack.measure(epoch)
        return Rtn.NORMAL, c.encode_switch_ack(c.SwitchAck(code, configuration_byte(truth)))

    def _history(self, pack: SimPack, index: int) -> bytes:
        rec = pack.history.newest_first(index)
        if rec is None:
            return b""  # the empty answer means "no more records"
        tail = bytes([event_code(rec.event) & 0xFF]) + bytes(11)
        return c.encode_history(
            c.HistoryRecordV25(
                recorded_at=pack_time(rec.at_epoch_s),
                cell_voltages_v=tuple(mv / 1000.0 for mv in rec.cell_mv),
                temperatures_c=tuple(float(t) for t in rec.temps_c),
                current_a=rec.current_a,
                voltage_v=rec.voltage_mv / 1000.0,
                remaining_ah=rec.remaining_ah,
                full_ah=rec.full_ah,
                tail=tail,
            )
        )
