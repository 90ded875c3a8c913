"""BYD Battery-Box emulation over Modbus RTU: the register blocks as data and a sans-I/O responder.

The gateway answers as Modbus RTU server (unit 21) the way a BYD Battery-Box HVM answers a Fronius
Gen24/Symo (dalathegreat/Battery-Emulator's "BYD Modbus" emulation,
the register list it cites from gitlab pelle8/inverter_resources): identity strings at 100–167,
ratings at 200–212, live values at 300–323, and the inverter's heartbeat register 401 (written every
60 s, alternating 0x00FF/0xFF00) supervised. The Modbus PDU codec and the RTU framing are the shared
ones (`protocol.modbus.pdu`, `protocol.modbus.rtu`).

Addresses below 30000 outside the data blocks read as 0 and accept writes (kept and read back, as the
reference emulator does); the data blocks are read-only (0x02 on write); anything from 30000 up is
0x02. Requests for another unit, with a bad CRC or truncated, are not answered (Modbus RTU rule);
broadcast (unit 0) writes are applied without an answer. Stale data gives state 4 (fault), zero
power limits and no voltage after the contactors, never silence.

This module must never perform I/O; time is passed in (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from protocol.errors import RemoteProtocolError
from protocol.inverter.rs485.base import BankView, Exchange, ResponderSettings, Rs485Responder
from protocol.modbus.pdu import ExceptionCode, ModbusError, handle_pdu
from protocol.modbus.rtu import RtuDecoder, encode_frame

UNIT_ID = 21
BROADCAST_UNIT = 0
ADDRESS_LIMIT = 30000  # reads/writes at or above answer 0x02
HEARTBEAT_REGISTER = 401
HEARTBEAT_TIMEOUT_S = 300.0  # "stale if unchanged 5 min"
CAPACITY_CAP_WH = 57960
POWER_CAP_W = 30000
SOC_FLOOR_PCT = 1.0  # the Gen24 over-discharges when it sees 0 %
MANUFACTURER = "BYD"
MODEL = "BYD Battery-Box Premium HV"
FIRMWARE_VERSIONS = ("5.0", "3.26")


class SystemState:
    STANDBY = 0
    INACTIVE = 1
    ACTIVE = 3
    FAULT = 4
    UPDATING = 5


STATUS_IDLE, STATUS_CHARGING, STATUS_DISCHARGING = 128, 129, 130
CURRENT_DEADBAND_A = 0.5


@dataclass(frozen=True, slots=True)
class Point:
    """One register field: where, how it is encoded, what it means."""

    address: int
    name: str
    kind: str  # "u16" | "s16" | "u64" | "string"
    size: int  # registers
    unit: str
    description: str


# The register map (Battery-Emulator's BYD Modbus emulation). Constant fields carry their value in `name`.
POINTS: tuple[Point, ...] = (
    Point(100, "marker", "string", 1, "", '"SI"'),
    Point(101, "const:1", "u16", 1, "", "identity block version (1)"),
    Point(102, "manufacturer", "string", 16, "", "manufacturer"),
    Point(118, "model", "string", 16, "", "product name"),
    Point(134, "firmware_1", "string", 8, "", "firmware version 1"),
    Point(142, "firmware_2", "string", 8, "", "firmware version 2"),
    Point(150, "serial", "string", 16, "", "serial number"),
    Point(166, "const:1", "u16", 1, "", "constant 1"),
    Point(167, "const:0", "u16", 1, "", "constant 0"),
    Point(200, "const:0", "u16", 1, "", "constant 0"),
    Point(201, "const:0", "u16", 1, "", "constant 0"),
    Point(202, "rated_capacity_wh", "u16", 1, "Wh", "total capacity (capped at 57960)"),
    Point(203, "const:40960", "u16", 1, "", "max power (constant)"),
    Point(204, "const:40960", "u16", 1, "", "max power (constant)"),
    Point(205, "max_voltage_dv", "u16", 1, "0.1 V", "maximum voltage (charge voltage limit)"),
    Point(206, "min_voltage_dv", "u16", 1, "0.1 V", "minimum voltage (discharge voltage limit)"),
    Point(207, "const:53248", "u16", 1, "", "constant"),
    Point(208, "const:10", "u16", 1, "", "constant"),
    Point(209, "const:53248", "u16", 1, "", "constant"),
    Point(210, "const:10", "u16", 1, "", "constant"),
    Point(211, "const:0", "u16", 1, "", "constant 0"),
    Point(212, "const:0", "u16", 1, "", "constant 0"),
    Point(300, "state", "u16", 1, "", "0 standby, 1 inactive, 3 active, 4 fault, 5 updating"),
    Point(301, "const:0", "u16", 1, "", "reserved"),
    Point(302, "status", "u16", 1, "", "128 idle, 129 charging, 130 discharging"),
    Point(303, "soc_centi_pct", "u16", 1, "0.01 %", "state of charge (floored at 1 %)"),
    Point(304, "total_capacity_wh", "u16", 1, "Wh", "total capacity (capped at 57960)"),
    Point(305, "remaining_capacity_wh", "u16", 1, "Wh", "remaining capacity (capped at 57960)"),
    Point(306, "max_discharge_power_w", "u16", 1, "W", "discharge power limit (capped at 30000)"),
    Point(307, "max_charge_power_w", "u16", 1, "W", "charge power limit (capped at 30000)"),
    Point(308, "output_voltage_dv", "u16", 1, "0.1 V", "voltage after the contactors (0 unless active)"),
    Point(309, "output_power_w", "s16", 1, "W", "DC power, charging negative"),
    Point(310, "inner_voltage_dv", "u16", 1, "0.1 V", "inner voltage"),
    Point(311, "inner_power_w", "s16", 1, "W", "inner power, charging negative"),
    Point(312, "min_temperature_dc", "s16", 1, "0.1 °C", "lowest cell temperature"),
    Point(313, "max_temperature_dc", "s16", 1, "0.1 °C", "highest cell temperature"),
    Point(314, "charged_energy_wh", "u64", 4, "Wh", "total energy charged"),
    Point(318, "discharged_energy_wh", "u64", 4, "Wh", "total energy discharged"),
    Point(322, "device_temperature_dc", "s16", 1, "0.1 °C", "device (BMS/MOS) temperature"),
    Point(323, "soh_centi_pct", "u16", 1, "0.01 %", "state of health"),
)
READ_ONLY = frozenset(a for p in POINTS for a in range(p.address, p.address + p.size))


def _clamp(value: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(value)))


def _string_registers(text: str, size: int) -> list[int]:
    raw = text.encode("ascii", "replace")[: 2 * size].ljust(2 * size, b"\x00")
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


def encode_point(point: Point, value: float | str) -> list[int]:
    """A field's registers (saturating numbers to the field's range)."""
    if point.kind == "string":
        return _string_registers(str(value), point.size)
    if isinstance(value, str):
        raise TypeError(f"{point.name}: expected a number")
    if point.kind == "u16":
        return [_clamp(value, 0, 0xFFFF)]
    if point.kind == "s16":
        return [_clamp(value, -0x8000, 0x7FFF) & 0xFFFF]
    raw = _clamp(value, 0, (1 << 64) - 1)
    return [(raw >> shift) & 0xFFFF for shift in (48, 32, 16, 0)]


def register_values(view: BankView) -> dict[str, float | str]:
    """The value of every named field for this view (the blocking answer when stale)."""
    system = view.system
    limits = view.effective_limits
    blocked = view.stale or system is None
    voltage = (system.voltage_v or 0.0) if system is not None else 0.0
    current = (system.current_a or 0.0) if system is not None else 0.0
    full_ah = (system.full_capacity_ah or 0.0) if system is not None else 0.0
    remaining_ah = (system.remaining_capacity_ah or 0.0) if system is not None else 0.0
    power = voltage * current
    charge_w = 0.0 if blocked or not limits.charge_enabled else limits.charge_current_a * voltage
    discharge_w = 0.0 if blocked or not limits.discharge_enabled else limits.discharge_current_a * voltage
    if current > CURRENT_DEADBAND_A:
        status = STATUS_CHARGING
    elif current < -CURRENT_DEADBAND_A:
        status = STATUS_DISCHARGING
    else:
        status = STATUS_IDLE
    temps = []
    device: float | None = None
    if system is not None:
        temps = [e.value for e in (system.temp_min, system.temp_max) if e is not None]
        hottest = [e.value for e in (system.mos_temp_max, system.board_temp_max) if e is not None]
        device = max(hottest) if hottest else None
    min_t = temps[0] if temps else 0.0
    max_t = temps[-1] if temps else 0.0
    return {
        "marker": "SI",
        "manufacturer": MANUFACTURER,
        "model": MODEL,
        "firmware_1": FIRMWARE_VERSIONS[0],
        "firmware_2": FIRMWARE_VERSIONS[1],
        "serial": view.identity.byd_serial,
        "rated_capacity_wh": min(CAPACITY_CAP_WH, full_ah * voltage),
        "max_voltage_dv": limits.charge_voltage_v * 10,
        "min_voltage_dv": limits.discharge_voltage_v * 10,
        "state": SystemState.FAULT if blocked else SystemState.ACTIVE,
        "status": status,
        "soc_centi_pct": max(SOC_FLOOR_PCT, (system.soc_pct or 0.0) if system is not None else 0.0) * 100,
        "total_capacity_wh": min(CAPACITY_CAP_WH, full_ah * voltage),
        "remaining_capacity_wh": min(CAPACITY_CAP_WH, remaining_ah * voltage),
        "max_discharge_power_w": min(POWER_CAP_W, discharge_w),
        "max_charge_power_w": min(POWER_CAP_W, charge_w),
        "output_voltage_dv": 0.0 if blocked else voltage * 10,
        "output_power_w": -power,
        "inner_voltage_dv": voltage * 10,
        "inner_power_w": -power,
        "min_temperature_dc": min_t * 10,
        "max_temperature_dc": max_t * 10,
        "charged_energy_wh": view.energy_charged_wh or 0.0,
        "discharged_energy_wh": view.energy_discharged_wh or 0.0,
        "device_temperature_dc": (device if device is not None else max_t) * 10,
        "soh_centi_pct": (system.soh_pct if system is not None and system.soh_pct is not None else 100.0)
        * 100,
    }


def build_image(view: BankView) -> dict[int, int]:
    """Every data register (address → 16-bit value) for this view."""
    values = register_values(view)
    image: dict[int, int] = {}
    for point in POINTS:
        value: float | str = float(point.name[6:]) if point.name.startswith("const:") else values[point.name]
        for i, reg in enumerate(encode_point(point, value)):
            image[point.address + i] = reg
    return image


class _Bank:
    """A `RegisterBank` over one image plus the inverter-written registers."""

    def __init__(self, image: Mapping[int, int], written: dict[int, int]) -> None:
        self.image = image
        self.written = written
        self.writes: list[tuple[int, tuple[int, ...]]] = []

    def read(self, address: int, count: int) -> bytes:
        if address + count > ADDRESS_LIMIT:
            raise ModbusError(ExceptionCode.ILLEGAL_DATA_ADDRESS, "beyond register 29999")
        values = [self.image.get(a, self.written.get(a, 0)) for a in range(address, address + count)]
        return b"".join(v.to_bytes(2, "big") for v in values)

    def write(self, address: int, values: Sequence[int]) -> None:
        end = address + len(values)
        if end > ADDRESS_LIMIT or any(a in READ_ONLY for a in range(address, end)):
            raise ModbusError(ExceptionCode.ILLEGAL_DATA_ADDRESS, "read-only or beyond register 29999")
        for i, v in enumerate(values):
            self.written[address + i] = v
        self.writes.append((address, tuple(values)))


@dataclass(frozen=True, slots=True)
class HeartbeatState:
    last_value: int | None
    last_change_at: float | None  # monotonic
    ok: bool | None  # None until the inverter wrote it once


class BydModbusResponder(Rs485Responder):
    """Answers Modbus RTU requests for unit 21 from a `BankView` (see the module docstring)."""

    name = "byd-modbus"

    @classmethod
    def from_settings(cls, settings: ResponderSettings) -> BydModbusResponder:
        return cls(settings.byd_unit_id, settings.byd_heartbeat_timeout_s)

    def __init__(self, unit_id: int = UNIT_ID, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S) -> None:
        self.unit_id = unit_id
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._decoder = RtuDecoder(role="server")
        self._written: dict[int, int] = {}
        self._hb_value: int | None = None
        self._hb_changed_at: float | None = None
        self.crc_errors = 0

    @property
    def discarded_bytes(self) -> int:
        return self._decoder.discarded_bytes

    def feed(self, data: bytes) -> None:
        self._decoder.feed(data)

    def line_idle(self) -> None:
        self._decoder.gap()

    def heartbeat(self, now: float) -> HeartbeatState:
        if self._hb_changed_at is None:
            return HeartbeatState(self._hb_value, None, None)
        return HeartbeatState(
            self._hb_value, self._hb_changed_at, now - self._hb_changed_at < self.heartbeat_timeout_s
        )

    def written(self, address: int) -> int | None:
        """The last value the inverter wrote to `address` (None if never)."""
        return self._written.get(address)

    def process(self, view: BankView, now: float) -> list[Exchange]:
        out: list[Exchange] = []
        image: dict[int, int] | None = None
        while True:
            try:
                frame = self._decoder.next_frame()
            except RemoteProtocolError as err:
                self.crc_errors += 1
                out.append(Exchange(None, None, False, "checksum", str(err)))
                continue
            if frame is None:
                return out
            function = frame.pdu[0] if frame.pdu else None
            if frame.unit_id not in (self.unit_id, BROADCAST_UNIT):
                out.append(Exchange(function, None, False, "ignored", f"unit {frame.unit_id} is not ours"))
                continue
            if image is None:
                image = build_image(view)
            bank = _Bank(image, self._written)
            handled = handle_pdu(frame.pdu, bank)
            for address, values in bank.writes:
                self._note_writes(address, values, now)
            if frame.unit_id == BROADCAST_UNIT:
                out.append(Exchange(function, None, False, "broadcast"))
                continue
            outcome = "ok" if handled.exception is None else f"exception_{int(handled.exception):02x}"
            out.append(
                Exchange(
                    function,
                    encode_frame(self.unit_id, handled.response),
                    handled.exception is None,
                    outcome,
                )
            )

    def _note_writes(self, address: int, values: Sequence[int], now: float) -> None:
        if address <= HEARTBEAT_REGISTER < address + len(values):
            value = values[HEARTBEAT_REGISTER - address]
            if value != self._hb_value:
                self._hb_value = value
                self._hb_changed_at = now
