"""Modbus writes turned into caps and requests for the charge policy (`gateway.core.controls`).

Writes never reach a pack. `ControlRegisters` remembers what controllers wrote (so it reads back)
with the same expiry as the cap it produced; `WriteApplier` validates a whole request (every
register writable, every value in range) before applying anything, then applies it and logs it.

SunSpec 124 power limits become current caps: watts / present bank voltage (nominal voltage while
no pack is online). SunSpec 802/124 and the native control block write the same EMS caps; the last
write wins. Negative InWRte/OutWRte (a request to force the other direction) is treated as 0: the
gateway limits, it never forces.

Never performs I/O besides logging.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.controls import Controls, OperationRequest, Source
from gateway.core.model import ModelView
from gateway.north.modbus.units import MapSettings, UnitView, WritablePoint
from protocol.modbus.image import decode_raw
from protocol.modbus.pdu import ExceptionCode, ModbusError

log = logging.getLogger("gateway.north.modbus.writes")


@dataclass(frozen=True, slots=True)
class Written:
    value: float
    expires_at: float | None


class ControlRegisters:
    """Values written by controllers, keyed "802.SoCRsvMin", "124.WChaMax", "native.heartbeat", ..."""

    def __init__(self) -> None:
        self._values: dict[str, Written] = {}

    def get(self, key: str, now: float) -> float | None:
        w = self._values.get(key)
        if w is None or (w.expires_at is not None and now >= w.expires_at):
            return None
        return w.value

    def set(self, key: str, value: float | None, now: float, timeout_s: float | None = None) -> None:
        if value is None:
            self._values.pop(key, None)
        else:
            expires = None if timeout_s is None else now + timeout_s
            self._values[key] = Written(value, expires)


NATIVE_CAPS = (
    "max_charge_current_a",
    "max_discharge_current_a",
    "max_charge_voltage_v",
    "min_discharge_voltage_v",
    "soc_reserve_min_pct",
    "soc_reserve_max_pct",
)
SUNSPEC_CAPS = {"SoCRsvMin": "soc_reserve_min_pct", "SocRsvMax": "soc_reserve_max_pct"}


def nameplate_power_w(view: ModelView, settings: MapSettings) -> float | None:
    """Rated charge/discharge power of the bank: packs x rated current x nominal pack voltage."""
    voltage = nominal_pack_voltage_v(view, settings)
    if voltage is None:
        return None
    return len(view.packs) * settings.rated_current_a * voltage


def nominal_pack_voltage_v(view: ModelView, settings: MapSettings) -> float | None:
    cells = [len(p.telemetry.cell_voltages_v) for p in view.packs.values() if p.telemetry is not None]
    if not cells:
        return None
    return max(cells) * settings.nominal_cell_voltage_v


class WriteApplier:
    def __init__(
        self,
        controls: Controls,
        registers: ControlRegisters,
        settings: MapSettings,
        default_timeout_s: float,
    ) -> None:
        self.controls = controls
        self.registers = registers
        self.settings = settings
        self.default_timeout_s = default_timeout_s

    def validate(
        self, unit: UnitView, address: int, raws: Sequence[int]
    ) -> list[tuple[WritablePoint, float | None]]:
        """The points and engineering values of a write, or ModbusError 0x02 / 0x03."""
        items: list[tuple[WritablePoint, float | None]] = []
        for i, raw in enumerate(raws):
            reg = address + i
            wp = unit.writable.get(reg)
            if wp is None:
                what = "read-only" if unit.image.contains(reg) else "not mapped"
                raise ModbusError(ExceptionCode.ILLEGAL_DATA_ADDRESS, f"register {reg} is {what}")
            decoded = decode_raw(wp.point, [raw])
            if decoded is None:
                items.append((wp, None))  # the "not implemented" value clears
                continue
            assert isinstance(decoded, int)
            value = decoded * (10.0**wp.sf) if wp.sf else float(decoded)
            if not wp.range.minimum - 1e-9 <= value <= wp.range.maximum + 1e-9:
                raise ModbusError(
                    ExceptionCode.ILLEGAL_DATA_VALUE,
                    f"{wp.key} = {value:g} outside {wp.range.minimum:g}..{wp.range.maximum:g}",
                )
            items.append((wp, value))
        return items

    def sunspec_timeout_s(self, now: float) -> float:
        rvrt = self.registers.get("124.InOutWRte_RvrtTms", now)
        return rvrt if rvrt else self.default_timeout_s

    def native_timeout_s(self, now: float) -> float:
        t = self.registers.get("native.cap_timeout_s", now)
        return t if t else self.default_timeout_s

    def apply(
        self,
        unit: UnitView,
        address: int,
        items: list[tuple[WritablePoint, float | None]],
        client: str,
        view: ModelView,
        now: float,
    ) -> None:
        # First store the registers that parameterise the others (revert timeouts).
        for wp, value in items:
            if wp.key in ("124.InOutWRte_RvrtTms", "native.cap_timeout_s"):
                self.registers.set(wp.key, value, now)
        touched_124 = False
        for i, (wp, value) in enumerate(items):
            key = wp.key
            name = wp.point.name
            if wp.table == "802":
                timeout = self.sunspec_timeout_s(now)
                if name in SUNSPEC_CAPS:
                    self.controls.set_cap(SUNSPEC_CAPS[name], value, Source.EMS, timeout, now)
                    self.registers.set(key, value, now, timeout)
                elif name == "SetOp" and value is not None:
                    self.controls.set_operation(
                        OperationRequest.CONNECT if value == 1 else OperationRequest.DISCONNECT
                    )
                elif name == "AlmRst" and value == 1:
                    self.controls.request_alarm_reset(now)
                elif name == "CtrlHb":
                    self.registers.set(key, value, now)
            elif wp.table == "124":
                if name != "InOutWRte_RvrtTms":
                    self.registers.set(key, value, now, self.sunspec_timeout_s(now))
                touched_124 = True
            elif wp.table == "native":
                timeout = self.native_timeout_s(now)
                if name in NATIVE_CAPS:
                    self.controls.set_cap(name, value, Source.EMS, timeout, now)
                elif name == "operation" and value is not None:
                    self.controls.set_operation(
                        OperationRequest.CONNECT if value == 1 else OperationRequest.DISCONNECT
                    )
                elif name == "alarm_reset" and value == 1:
                    self.controls.request_alarm_reset(now)
                elif name == "heartbeat":
                    self.registers.set(key, value, now)
            log.info(
                "modbus write accepted: client=%s unit=%d register=%d point=%s value=%s",
                client,
                unit.unit_id,
                address + i,
                key,
                "not-implemented (clear)" if value is None else f"{value:g}",
            )
        if touched_124:
            self._apply_124(view, now)

    def _apply_124(self, view: ModelView, now: float) -> None:
        """Recompute the current caps from the 124 registers (StorCtl_Mod, WChaMax, In/OutWRte)."""
        timeout = self.sunspec_timeout_s(now)
        nameplate = nameplate_power_w(view, self.settings)
        voltage = view.bank.voltage_v or nominal_pack_voltage_v(view, self.settings)
        wchamax = self.registers.get("124.WChaMax", now)
        mode = int(self.registers.get("124.StorCtl_Mod", now) or 0)
        charge_w: float | None = wchamax
        if mode & 1:
            in_rate = self.registers.get("124.InWRte", now)
            base = wchamax if wchamax is not None else nameplate
            if in_rate is not None and base is not None:
                limited = max(0.0, in_rate) / 100.0 * base
                charge_w = limited if charge_w is None else min(charge_w, limited)
        discharge_w: float | None = None
        if mode & 2:
            out_rate = self.registers.get("124.OutWRte", now)
            if out_rate is not None and nameplate is not None:
                discharge_w = max(0.0, out_rate) / 100.0 * nameplate

        def amps(watts: float | None) -> float | None:
            if watts is None or not voltage or voltage <= 0 or math.isinf(watts):
                return None
            return watts / voltage

        self.controls.set_cap("max_charge_current_a", amps(charge_w), Source.EMS, timeout, now)
        self.controls.set_cap("max_discharge_current_a", amps(discharge_w), Source.EMS, timeout, now)
