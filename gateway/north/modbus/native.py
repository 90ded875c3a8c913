"""The native register map's image from the model (layout in `mappings/modbus/native.toml`).

Bank block, control block (writable: caps and requests for the charge policy), then one block per
configured pack in (bus name, address) order at a fixed stride. The native unit always answers,
even with every pack offline: its status bits and availability registers say what is valid, and
values without data read as "not implemented".

Never performs I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from gateway.core.controls import OperationRequest, Source
from gateway.core.model import Availability, PackKey, PackSnapshot, TempRole
from gateway.core.policy.engine import stops, warns
from gateway.north.modbus.sunspec import BuildInput, PackMemo
from gateway.north.modbus.units import UnitKind, UnitView, WritablePoint
from mappings.flags import load_meanings
from mappings.modbus import NativeMap
from protocol.bms.base import FlagInfo, Meaning
from protocol.modbus.image import EncodeError, RegisterImage, Value, encode_block

AVAILABILITY = {
    Availability.UNKNOWN: 0,
    Availability.ONLINE: 1,
    Availability.STALE: 2,
    Availability.OFFLINE: 3,
}
TEMP_ROLE = {TempRole.CELL: 1, TempRole.MOS: 2, TempRole.AMBIENT: 3, TempRole.BOARD: 4}


def _bits(names: Mapping[str, int], active: Mapping[str, bool]) -> frozenset[int]:
    return frozenset(names[n] for n, on in active.items() if on)


def flag_words(flags: Iterable[FlagInfo]) -> dict[str, Value]:
    """`protection_flags` / `warning_flags`: the active meanings' native bits (mappings/flags)."""
    rows = load_meanings()
    active = tuple(flags)

    def word(meanings: frozenset[str]) -> frozenset[int]:
        return frozenset(b for m in meanings for b in rows[Meaning(m)].native_bits)

    return {"protection_flags": word(stops(active)), "warning_flags": word(warns(active))}


class NativeBuilder:
    def __init__(self, nmap: NativeMap) -> None:
        self.map = nmap
        self.errors: list[EncodeError] = []
        self._memo: dict[tuple[int, PackKey], PackMemo] = {}  # pack blocks, as in SunSpecBuilder

    def _pack_regs(self, n: int, pack: PackSnapshot) -> list[int]:
        key = (n, pack.key)
        hit = self._memo.get(key)
        if hit is not None and hit.pack is pack:
            self.errors.extend(hit.errors)  # counted on every build, as if encoded again
            return hit.regs
        first = len(self.errors)
        regs = encode_block(self.map.pack.block, self._pack(pack), errors=self.errors)
        self._memo[key] = PackMemo(pack, 0, regs, tuple(self.errors[first:]))
        return regs

    def forget(self, keep: set[PackKey]) -> None:
        """Drop memoised blocks of packs no longer in the view."""
        for key in [k for k in self._memo if k[1] not in keep]:
            del self._memo[key]

    def unit(self, unit_id: int, b: BuildInput, writable: bool) -> UnitView:
        packs = b.view.ordered()[: self.map.max_packs]
        blocks: list[tuple[int, list[int]]] = [
            (
                self.map.bank.start,
                encode_block(self.map.bank.block, self._bank(packs, b), errors=self.errors),
            ),
            (
                self.map.control.start,
                encode_block(self.map.control.block, self._control(b), errors=self.errors),
            ),
        ]
        for n, pack in enumerate(packs, start=1):
            blocks.append((self.map.pack_start(n), self._pack_regs(n, pack)))
        index: dict[int, WritablePoint] = {}
        if writable:
            for point in self.map.control.block.points:
                rng = self.map.control.ranges[point.name]
                sf = point.sf if isinstance(point.sf, int) else None
                index[self.map.control.start + point.offset] = WritablePoint("native", point, sf, rng)
        return UnitView(
            unit_id, UnitKind.NATIVE, RegisterImage(blocks), True, MappingProxyType(index), "native"
        )

    def _bank(self, packs: list[PackSnapshot], b: BuildInput) -> dict[str, Value]:
        bank = b.view.bank
        numbers = {p.key: n for n, p in enumerate(packs, start=1)}
        status = _bits(
            self.map.bitfields["bank_status"],
            {
                "data_valid": bank.has_data,
                "protection_active": bool(bank.protections),
                "alarm_active": bool(bank.alarms),
                "fault_active": bool(bank.faults),
                "pack_not_online": bank.packs_online < bank.packs_configured,
                "charging": (bank.current_a or 0.0) > b.settings.idle_current_a,
                "discharging": (bank.current_a or 0.0) < -b.settings.idle_current_a,
                "writes_enabled": b.settings.writes_enabled,
                "limits_valid": b.decision is not None and b.decision.has_data,
                "charge_enabled": b.decision is not None
                and b.decision.has_data
                and b.decision.charge_enabled,
                "discharge_enabled": b.decision is not None
                and b.decision.has_data
                and b.decision.discharge_enabled,
            },
        )
        values: dict[str, Value] = {
            "map_version": self.map.version,
            "pack_count": len(packs),
            "pack_base": self.map.pack.start,
            "pack_stride": self.map.pack_stride,
            "packs_online": bank.packs_online,
            "packs_stale": bank.packs_stale,
            "packs_offline": bank.packs_offline,
            "bank_status": status,
            "updated_at": int(bank.computed_at),
            "update_counter": b.view.version % 0xFFFF,
        }
        d = b.decision
        if d is not None and d.has_data:
            values.update(
                {
                    "charge_voltage_limit_v": d.charge_voltage_v,
                    "discharge_voltage_limit_v": d.discharge_voltage_v,
                    "charge_current_limit_a": d.charge_current_a,
                    "discharge_current_limit_a": d.discharge_current_a,
                }
            )
        if not bank.has_data:
            return values
        values.update(
            {
                "voltage_v": bank.voltage_v,
                "current_a": bank.current_a,
                "power_w": bank.power_w,
                "soc_pct": bank.soc_pct,
                "soh_pct": bank.soh_pct,
                "full_capacity_ah": bank.full_capacity_ah,
                "remaining_capacity_ah": bank.remaining_capacity_ah,
                "nominal_capacity_ah": bank.nominal_capacity_ah,
                "cell_diff_v": bank.cell_diff_v,
                "cycles_max": bank.cycles_max,
                "protections_active": len(bank.protections),
                "alarms_active": len(bank.alarms),
                "faults_active": len(bank.faults),
                **flag_words(bank.flags),
                "remaining_charge_time_s": bank.remaining_charge_time_s,
                "remaining_discharge_time_s": bank.remaining_discharge_time_s,
            }
        )
        for ref, prefix in ((bank.cell_max, "cell_max"), (bank.cell_min, "cell_min")):
            if ref is not None:
                values[f"{prefix}_v"] = ref.value
                values[f"{prefix}_pack"] = numbers.get((ref.bus, ref.address))
                values[f"{prefix}_cell"] = ref.index
        values["temp_max_c"] = None if bank.temp_max is None else bank.temp_max.value
        values["temp_min_c"] = None if bank.temp_min is None else bank.temp_min.value
        return values

    def _control(self, b: BuildInput) -> dict[str, Value]:
        now = b.now
        values: dict[str, Value] = {}
        for (name, source), cap in b.controls_raw.items():
            if source is Source.EMS and cap.active(now):
                values[name] = cap.value
        values["cap_timeout_s"] = b.registers.get("native.cap_timeout_s", now) or b.default_timeout_s
        values["operation"] = 1 if b.controls.operation is OperationRequest.CONNECT else 2
        values["alarm_reset"] = 0
        values["heartbeat"] = b.registers.get("native.heartbeat", now) or 0
        return values

    def _pack(self, pack: PackSnapshot) -> dict[str, Value]:
        values: dict[str, Value] = {
            "bus_address": pack.address,
            "availability": AVAILABILITY[pack.availability],
            "serial": pack.identity.serial,
            "version": pack.identity.version,
            "bus": pack.bus,
            "link_success_pct": None if pack.link.success_ratio is None else 100.0 * pack.link.success_ratio,
        }
        t = pack.telemetry if pack.online else None
        if t is None:
            values["pack_status"] = frozenset()
            return values
        bits = self.map.bitfields["pack_status"]
        values["pack_status"] = _bits(
            bits,
            {
                "data_valid": True,
                "charge_mos_on": bool(t.charge_mos_on),
                "discharge_mos_on": bool(t.discharge_mos_on),
                "heater_on": bool(t.heater_on),
                "fan_on": bool(t.fan_on),
                "balancing": t.balancing,
                "charging": t.current_a > 0.0,
                "discharging": t.current_a < 0.0,
                "protection_active": bool(t.protections),
                "alarm_active": bool(t.alarms),
                "fault_active": bool(t.faults),
            },
        )
        values.update(
            {
                "cell_count": len(t.cell_voltages_v),
                "temperature_count": len(t.temperatures),
                "voltage_v": t.voltage_v,
                "current_a": t.current_a,
                "power_w": t.power_w,
                "soc_pct": t.soc_pct,
                "soh_pct": t.soh_pct,
                "full_capacity_ah": t.full_capacity_ah,
                "remaining_capacity_ah": t.remaining_capacity_ah,
                "nominal_capacity_ah": t.nominal_capacity_ah,
                "cycles": t.cycles,
                "cell_max_v": t.cell_max_v,
                "cell_min_v": t.cell_min_v,
                "cell_avg_v": t.cell_avg_v,
                "cell_diff_v": t.cell_diff_v,
                "cell_max_index": t.cell_max_index,
                "cell_min_index": t.cell_min_index,
                "temp_max_c": t.temp_max_c,
                "temp_min_c": t.temp_min_c,
                "protections_active": len(t.protections),
                "alarms_active": len(t.alarms),
                "faults_active": len(t.faults),
                **flag_words(t.flags),
                "measured_at": int(t.measured_at),
                "balancing_cells": frozenset(i - 1 for i in t.balancing_cells if 1 <= i <= 32),
            }
        )
        for i, v in enumerate(t.cell_voltages_v[:32], start=1):
            values[f"cell_voltage_v_{i}"] = v
        for i, temp in enumerate(t.temperatures[:8], start=1):
            values[f"temperature_c_{i}"] = temp.value_c
            values[f"temperature_role_{i}"] = TEMP_ROLE[temp.role]
        return values
