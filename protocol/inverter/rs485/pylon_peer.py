"""The inverter's side of the Pylontech LV RS485 protocol: build a request, decode an answer.

`protocol.inverter.rs485.pylon` is the battery's side (the responder the gateway runs). This module
reads answers, ours or a real pack's, by the counts they declare: the capture tests hold our
answers against real ones with it, and the tests, the bench and diagnostics build requests with
`build_request`. Nothing here performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import RemoteProtocolError
from protocol.inverter.rs485.base import Identity, SystemParameters
from protocol.inverter.rs485.pylon import CID1_BATTERY
from protocol.ydt1363 import encode_frame


def build_request(ver: int, adr: int, cid2: int, info: bytes = b"") -> bytes:
    """A request as an inverter sends it (used by tests, the bench and diagnostics)."""
    return encode_frame(ver, adr, CID1_BATTERY, cid2, info)


# --------------------------------------------------------------------------------------------
# Answer decoders: read a Pylontech answer's INFO (ours or a real pack's) by the counts it declares.
# Used by the capture tests (real answers and ours must decode alike) and for diagnostics.


class _InfoReader:
    """Walks an answer INFO; a shortfall is the peer's fault (RemoteProtocolError)."""

    def __init__(self, info: bytes, what: str) -> None:
        self.info, self.pos, self.what = info, 0, what

    def take(self, n: int, name: str) -> bytes:
        if self.pos + n > len(self.info):
            raise RemoteProtocolError(f"pylon {self.what}: INFO ends at byte {len(self.info)} reading {name}")
        out = self.info[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u16(self, name: str) -> int:
        return int.from_bytes(self.take(2, name), "big")

    def s16(self, name: str) -> int:
        return int.from_bytes(self.take(2, name), "big", signed=True)

    def u24(self, name: str) -> int:
        return int.from_bytes(self.take(3, name), "big")

    def rest(self) -> bytes:
        out = self.info[self.pos :]
        self.pos = len(self.info)
        return out


@dataclass(frozen=True, slots=True)
class AnalogModule:
    """One 0x42 module block."""

    cell_voltages_v: tuple[float, ...]
    temperatures_c: tuple[float, ...]  # BMS board first, then the cell groups (and MOS if sent)
    current_a: float  # positive = charging
    voltage_v: float
    remaining_capacity_ah: float
    full_capacity_ah: float
    cycles: int
    user_defined: int  # 2 (16-bit capacities) or 4 (24-bit capacities follow)


@dataclass(frozen=True, slots=True)
class AnalogAnswer:
    info_flag: int
    command_value: int  # the module's ADR, or the module count of a whole-stack answer
    modules: tuple[AnalogModule, ...]


def _temp_c(raw: int) -> float:
    return round((raw - 2731) / 10.0, 1)


def _analog_module(r: _InfoReader) -> AnalogModule:
    cells = tuple(r.u16("cell voltage") / 1000 for _ in range(r.u8("cell count")))
    temps = tuple(_temp_c(r.u16("temperature")) for _ in range(r.u8("temperature count")))
    current = r.s16("current") / 10
    voltage = r.u16("module voltage") / 1000
    remaining = r.u16("remaining capacity")
    user = r.u8("user-defined count")
    full = r.u16("total capacity")
    cycles = r.u16("cycles")
    if user == 4:
        remaining, full = r.u24("remaining capacity 2"), r.u24("total capacity 2")
    return AnalogModule(cells, temps, current, voltage, remaining / 1000, full / 1000, cycles, user)


def decode_analog_answer(info: bytes, *, whole_stack: bool = False) -> AnalogAnswer:
    """0x42: INFOFLAG, ADR (or the module count for INFO 0xFF), then the module block(s)."""
    r = _InfoReader(info, "0x42 answer")
    flag, value = r.u8("INFOFLAG"), r.u8("command value")
    modules = tuple(_analog_module(r) for _ in range(value if whole_stack else 1))
    if r.pos != len(info):
        raise RemoteProtocolError(f"pylon 0x42 answer: {len(info) - r.pos} byte(s) after the declared blocks")
    return AnalogAnswer(flag, value, modules)


@dataclass(frozen=True, slots=True)
class AlarmAnswer:
    info_flag: int
    command_value: int
    cell_states: tuple[int, ...]
    temperature_states: tuple[int, ...]
    charge_current_state: int
    module_voltage_state: int
    discharge_current_state: int
    status: tuple[int, ...]  # Status1..Status5
    tail: bytes  # what follows Status5 (one byte, 0x00, in every real answer seen)


def decode_alarm_answer(info: bytes) -> AlarmAnswer:
    """0x44 (one module): INFOFLAG, ADR, cell states, sensor states, three states, Status1–5, tail."""
    r = _InfoReader(info, "0x44 answer")
    flag, value = r.u8("INFOFLAG"), r.u8("command value")
    cells = tuple(r.take(r.u8("cell count"), "cell states"))
    temps = tuple(r.take(r.u8("temperature count"), "temperature states"))
    states = tuple(r.take(3, "current/voltage states"))
    status = tuple(r.take(5, "Status1-5"))
    return AlarmAnswer(flag, value, cells, temps, states[0], states[1], states[2], status, r.rest())


def decode_system_parameters_answer(info: bytes) -> tuple[int, SystemParameters]:
    """0x47: INFOFLAG, then twelve limits (currents in 0.1 A; the discharge limit sent negative)."""
    r = _InfoReader(info, "0x47 answer")
    flag = r.u8("INFOFLAG")
    mv_ = [r.u16(n) / 1000 for n in ("cell high", "cell low", "cell under")]
    charge_t = [_temp_c(r.u16(n)) for n in ("charge high temperature", "charge low temperature")]
    charge_a = r.s16("charge current limit") / 10
    module_v = [r.u16(n) / 1000 for n in ("module high", "module low", "module under")]
    discharge_t = [_temp_c(r.u16(n)) for n in ("discharge high temperature", "discharge low temperature")]
    discharge_a = r.s16("discharge current limit") / 10
    if r.pos != len(info):
        raise RemoteProtocolError(f"pylon 0x47 answer: {len(info) - r.pos} byte(s) after the limits")
    return flag, SystemParameters(
        cell_high_voltage_v=mv_[0],
        cell_low_voltage_v=mv_[1],
        cell_under_voltage_v=mv_[2],
        charge_high_temperature_c=charge_t[0],
        charge_low_temperature_c=charge_t[1],
        charge_current_limit_a=charge_a,
        module_high_voltage_v=module_v[0],
        module_low_voltage_v=module_v[1],
        module_under_voltage_v=module_v[2],
        discharge_high_temperature_c=discharge_t[0],
        discharge_low_temperature_c=discharge_t[1],
        discharge_current_limit_a=discharge_a,  # signed as on the wire (negative from real packs)
    )


@dataclass(frozen=True, slots=True)
class ManagementAnswer:
    command_value: int | None  # the ADR (0x92), None for the system answer (0x63)
    charge_voltage_v: float
    discharge_voltage_v: float
    charge_current_a: float
    discharge_current_a: float  # signed as on the wire (0x92 from real packs: negative)
    status: int


def decode_management_answer(info: bytes, *, system: bool = False) -> ManagementAnswer:
    """0x92 (ADR first) or 0x63 (no ADR): voltage limits (mV), current limits (0.1 A), status."""
    r = _InfoReader(info, "0x63 answer" if system else "0x92 answer")
    value = None if system else r.u8("command value")
    out = ManagementAnswer(
        value,
        r.u16("charge voltage") / 1000,
        r.u16("discharge voltage") / 1000,
        r.s16("charge current") / 10,
        r.s16("discharge current") / 10,
        r.u8("status"),
    )
    if r.pos != len(info):
        raise RemoteProtocolError(f"pylon management answer: {len(info) - r.pos} byte(s) too many")
    return out


def decode_serial_answer(info: bytes) -> tuple[int, str]:
    """0x93: ADR, 16 ASCII characters."""
    r = _InfoReader(info, "0x93 answer")
    value = r.u8("command value")
    text = r.take(16, "serial number").decode("ascii", "replace").rstrip(" \x00")
    if r.pos != len(info):
        raise RemoteProtocolError(f"pylon 0x93 answer: {len(info) - r.pos} byte(s) too many")
    return value, text


def decode_manufacturer_answer(info: bytes) -> Identity:
    """0x51: battery name (10 ASCII), software version (2 bytes), manufacturer (20 ASCII)."""
    r = _InfoReader(info, "0x51 answer")
    name = r.take(10, "battery name").decode("ascii", "replace").rstrip(" \x00")
    major, minor = r.take(2, "software version")
    maker = r.take(20, "manufacturer").decode("ascii", "replace").rstrip(" \x00-")
    return Identity(battery_name=name, manufacturer=maker, software_version=(major, minor))
