"""SunSpec register images from the model: the bank unit and the optional per-pack units.

Bank unit (at `base_address`, 40000): `SunS`, model 1, 802 (the bank), 803 (one string per pack),
one 804 per pack (one module each), one 805 per pack (every cell), 124, end marker. A pack unit:
`SunS`, 1, 802, 804, 805 (that pack alone), end marker. Only online packs count in bank values;
a pack that is not online shows "not implemented" in its 803 string, 804 and 805 (the structure
points stay so the layout never moves). The 805 length follows `cells_per_pack`, grown when a pack
reports more cells. Point tables and scale factors come from `mappings/modbus/`.

Sign convention: current (A) and power (W) are positive while the battery charges and negative
while it discharges (the gateway's model convention).

Never performs I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from gateway.core.controls import Cap, ControlState, OperationRequest, Source
from gateway.core.model import ModelView, PackKey, PackSnapshot, Telemetry, TempRole
from gateway.core.policy.engine import ChargeDecision, stops, warns
from gateway.north.modbus.units import MapSettings, UnitKind, UnitView, WritablePoint
from gateway.north.modbus.writes import ControlRegisters, nameplate_power_w, nominal_pack_voltage_v
from mappings.flags import load_outputs
from mappings.modbus import SunSpecMap, SunSpecModel
from protocol.bms.base import FlagInfo
from protocol.inverter.flags import PROTECTION, WARNING, FlagOutput, require
from protocol.modbus.image import EncodeError, RegisterImage, Value, encode_block

SUNS = (0x5375, 0x6E53)
END = (0xFFFF, 0)

# 802 enumerations (values from the model's symbols)
CHAST_EMPTY, CHAST_DISCHARGING, CHAST_CHARGING, CHAST_FULL, CHAST_HOLDING = 2, 3, 4, 5, 6
STATE_DISCONNECTED, STATE_CONNECTED, STATE_FAULT = 1, 3, 99
TYP_LITHIUM_ION = 4
EVT_COMMUNICATION_ERROR = 0


@dataclass(frozen=True, slots=True)
class BuildInput:
    view: ModelView
    controls: ControlState
    controls_raw: Mapping[tuple[str, Source], Cap]  # every cap by (name, source), expired ones too
    registers: ControlRegisters
    settings: MapSettings
    now: float
    started_at: float
    cells: Mapping[PackKey, int]  # 805 cell slots per pack
    default_timeout_s: float  # revert time of Modbus caps unless a controller set another
    decision: ChargeDecision | None = None  # the charge policy's latest limits, when it runs


EVENT_OUTPUT = "sunspec.802"  # Evt1 symbol per meaning and level (mappings/flags/outputs.toml)


def event_bits(
    out: FlagOutput,
    symbols: Mapping[str, int],
    flags: Iterable[FlagInfo],
    communication_error: bool,
) -> frozenset[int]:
    """SunSpec Evt1 bits for the active flags, by their meanings and levels (never their names)."""
    active = tuple(flags)
    bits: set[int] = set()
    if communication_error:
        bits.add(EVT_COMMUNICATION_ERROR)
    for level, meanings in ((PROTECTION, stops(active)), (WARNING, warns(active))):
        bits |= {symbols[symbol] for symbol in out.raised(level, meanings)}
    return frozenset(bits)


def _cha_st(current_a: float, soc_pct: float, settings: MapSettings) -> int:
    if current_a > settings.idle_current_a:
        return CHAST_CHARGING
    if current_a < -settings.idle_current_a:
        return CHAST_DISCHARGING
    if soc_pct >= 99.5:
        return CHAST_FULL
    if soc_pct <= 0.5:
        return CHAST_EMPTY
    return CHAST_HOLDING


def _cell_temps(t: Telemetry) -> tuple[float, ...]:
    temps = t.temperature(TempRole.CELL)
    return tuple(x.value_c for x in temps)


def _avg(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


_Chain = tuple[int, list[int]]  # model id, its encoded registers (header included)


@dataclass(frozen=True, slots=True)
class PackMemo:
    """A pack's block encoded from `pack` (the memo of the builders; see `SunSpecBuilder._memo`)."""

    pack: PackSnapshot
    slots: int
    regs: list[int]
    errors: tuple[EncodeError, ...]


class SunSpecBuilder:
    """Builds the bank and pack unit views from one `BuildInput`."""

    def __init__(self, models: Mapping[int, SunSpecModel], smap: SunSpecMap) -> None:
        self.models = models
        self.smap = smap
        self.errors: list[EncodeError] = []
        # per-pack models (804, 805) encoded from one snapshot: (unit kind, model, index, pack) ->
        # (the snapshot, cell slots, registers, encode errors). Snapshots are immutable and the
        # model store keeps the object of a pack that was not polled, so `is` means "unchanged".
        self._memo: dict[tuple[UnitKind, int, int, PackKey], PackMemo] = {}
        self.event_output = require(load_outputs(), EVENT_OUTPUT)
        self.event_symbols = models[802].symbols["Evt1"]

    def _pack_model_regs(
        self, kind: UnitKind, mid: int, idx: int, pack: PackSnapshot, b: BuildInput
    ) -> _Chain:
        slots = b.cells.get(pack.key, b.settings.cells_per_pack)
        key = (kind, mid, idx, pack.key)
        hit = self._memo.get(key)
        if hit is not None and hit.pack is pack and hit.slots == slots:
            self.errors.extend(hit.errors)  # counted on every build, as if encoded again
            return mid, hit.regs
        first = len(self.errors)
        mid, values, groups = self._pack_model(mid, idx, pack, b)
        regs = self._encode(self.models[mid], values, groups)
        self._memo[key] = PackMemo(pack, slots, regs, tuple(self.errors[first:]))
        return mid, regs

    def forget(self, keep: set[PackKey]) -> None:
        """Drop memoised blocks of packs no longer in the view."""
        for key in [k for k in self._memo if k[3] not in keep]:
            del self._memo[key]

    def _events(self, flags: Iterable[FlagInfo], communication_error: bool) -> frozenset[int]:
        return event_bits(self.event_output, self.event_symbols, flags, communication_error)

    # -------------------------------------------------------------- chains

    def bank_unit(self, unit_id: int, b: BuildInput, writable: bool) -> UnitView:
        packs = b.view.ordered()
        kind = UnitKind.SUNSPEC_BANK
        chain: list[_Chain] = []
        for item in self.smap.bank_chain:
            mid = int(item.rstrip("*"))
            if item.endswith("*"):
                for n, pack in enumerate(packs, start=1):
                    chain.append(self._pack_model_regs(kind, mid, n, pack, b))
            else:
                chain.append(self._encoded(*self._bank_model(mid, packs, b)))
        return self._assemble(unit_id, kind, chain, b.view.bank.packs_online > 0, writable)

    def pack_unit(self, unit_id: int, number: int, pack: PackSnapshot, b: BuildInput) -> UnitView:
        kind = UnitKind.SUNSPEC_PACK
        chain: list[_Chain] = []
        for item in self.smap.pack_chain:
            mid = int(item.rstrip("*"))
            if mid == 1:
                chain.append(self._encoded(1, self._common_pack(pack, b), []))
            elif mid == 802:
                chain.append(self._encoded(802, self._battery_pack(pack, b), []))
            else:
                chain.append(self._pack_model_regs(kind, mid, 1, pack, b))
        return self._assemble(unit_id, kind, chain, pack.online, False, pack.label)

    def _encoded(self, mid: int, values: dict[str, Value], groups: list[dict[str, Value]]) -> _Chain:
        return mid, self._encode(self.models[mid], values, groups)

    def _assemble(
        self,
        unit_id: int,
        kind: UnitKind,
        chain: list[_Chain],
        online: bool,
        writable: bool,
        label: str = "",
    ) -> UnitView:
        regs: list[int] = list(SUNS)
        index: dict[int, WritablePoint] = {}
        base = self.smap.base_address
        for mid, encoded in chain:
            model = self.models[mid]
            start = base + len(regs)
            regs.extend(encoded)
            if writable:
                for name, rng in self.smap.writable.get(mid, {}).items():
                    point = model.fixed.point(name)
                    sf = self.smap.scale.get(mid, {}).get(point.sf) if isinstance(point.sf, str) else None
                    index[start + point.offset] = WritablePoint(str(mid), point, sf, rng)
        regs.extend(END)
        image = RegisterImage([(base, regs)])
        return UnitView(unit_id, kind, image, online, MappingProxyType(index), label)

    def _encode(
        self, model: SunSpecModel, values: dict[str, Value], groups: list[dict[str, Value]]
    ) -> list[int]:
        scale = self.smap.scale.get(model.id, {})
        length = model.length(len(groups))
        fixed_values = dict(values)
        fixed_values["ID"] = model.id
        fixed_values["L"] = length
        for name, sf in scale.items():
            fixed_values[name] = sf
        regs = encode_block(model.fixed, fixed_values, scale, self.errors)
        if model.group is not None:
            for g in groups:
                regs.extend(encode_block(model.group.block, g, scale, self.errors))
        return regs

    # -------------------------------------------------------------- bank models

    def _bank_model(
        self, mid: int, packs: list[PackSnapshot], b: BuildInput
    ) -> tuple[int, dict[str, Value], list[dict[str, Value]]]:
        if mid == 1:
            return 1, self._common_bank(packs, b), []
        if mid == 802:
            return 802, self._battery_bank(packs, b), []
        if mid == 803:
            return 803, *self._bank_803(packs, b)
        if mid == 124:
            return 124, self._storage_124(b), []
        raise KeyError(f"model {mid} cannot describe the bank")

    def _common_bank(self, packs: list[PackSnapshot], b: BuildInput) -> dict[str, Value]:
        s = b.settings
        serial = s.serial or next((p.identity.serial for p in packs if p.identity.serial), None)
        return {
            "Mn": s.manufacturer,
            "Md": s.model_name,
            "Opt": f"{len(packs)} packs",
            "Vr": s.version,
            "SN": serial or "unknown",
        }

    def _common_pack(self, pack: PackSnapshot, b: BuildInput) -> dict[str, Value]:
        ident = pack.identity
        return {
            "Mn": ident.manufacturer or b.settings.manufacturer,
            "Md": ident.model or ident.protocol or "BMS pack",
            "Opt": pack.label,
            "Vr": ident.version or "",
            "SN": ident.serial or f"{pack.bus}-{pack.address}",
        }

    def _ratings(self, b: BuildInput, packs: list[PackSnapshot]) -> dict[str, Value]:
        ah = 0.0
        known = False
        for p in packs:
            t = p.telemetry
            cap = None if t is None else (t.nominal_capacity_ah or t.full_capacity_ah)
            if cap is not None:
                ah += cap
                known = True
        view = ModelView(b.view.version, MappingProxyType({p.key: p for p in packs}), b.view.bank)
        voltage = nominal_pack_voltage_v(view, b.settings)
        power = nameplate_power_w(view, b.settings)
        return {
            "AHRtg": ah if known else None,
            "WHRtg": ah * voltage if known and voltage else None,
            "WChaRteMax": power,
            "WDisChaRteMax": power,
        }

    def _control_points_802(self, b: BuildInput) -> dict[str, Value]:
        regs, now = b.registers, b.now
        return {
            "SocRsvMax": regs.get("802.SocRsvMax", now),
            "SoCRsvMin": regs.get("802.SoCRsvMin", now),
            "Hb": int(b.now - b.started_at) % 0xFFFF,
            "CtrlHb": regs.get("802.CtrlHb", now),
            "AlmRst": 0,
            "SetOp": 1 if b.controls.operation is OperationRequest.CONNECT else 2,
            "LocRemCtl": 0 if b.settings.writes_enabled else 1,
            "Typ": TYP_LITHIUM_ION,
        }

    def _battery_bank(self, packs: list[PackSnapshot], b: BuildInput) -> dict[str, Value]:
        bank = b.view.bank
        values = self._ratings(b, packs)
        values.update(self._control_points_802(b))
        if not bank.has_data or bank.soc_pct is None or bank.current_a is None:
            values["State"] = STATE_DISCONNECTED
            return values
        online = [(n, p, p.telemetry) for n, p in enumerate(packs, 1) if p.online and p.telemetry]
        cells = [v for _, _, t in online for v in t.cell_voltages_v]
        vmax = max(online, key=lambda x: x[2].cell_max_v)
        vmin = min(online, key=lambda x: x[2].cell_min_v)
        pack_voltages = [t.voltage_v for _, _, t in online]
        state = STATE_CONNECTED
        if bank.faults:
            state = STATE_FAULT
        if b.controls.operation is OperationRequest.DISCONNECT:
            state = STATE_DISCONNECTED
        values.update(
            {
                "SoC": bank.soc_pct,
                "DoD": 100.0 - bank.soc_pct,
                "SoH": bank.soh_pct,
                "NCyc": bank.cycles_max,
                "ChaSt": _cha_st(bank.current_a, bank.soc_pct, b.settings),
                "State": state,
                "Evt1": self._events(bank.flags, bank.packs_online < bank.packs_configured),
                "Evt2": frozenset(),
                "EvtVnd1": frozenset(),
                "EvtVnd2": frozenset(),
                "V": bank.voltage_v,
                "VMax": max(pack_voltages),
                "VMin": min(pack_voltages),
                "CellVMax": vmax[2].cell_max_v,
                "CellVMaxStr": vmax[0],
                "CellVMaxMod": 1,
                "CellVMin": vmin[2].cell_min_v,
                "CellVMinStr": vmin[0],
                "CellVMinMod": 1,
                "CellVAvg": _avg(cells),
                "A": bank.current_a,
                "W": bank.power_w,
            }
        )
        d = b.decision
        if d is not None and d.has_data:
            values["AChaMax"] = d.charge_current_a
            values["ADisChaMax"] = d.discharge_current_a
        return values

    def _battery_pack(self, pack: PackSnapshot, b: BuildInput) -> dict[str, Value]:
        values = self._ratings(b, [pack])
        values.update(self._control_points_802(b))
        values["LocRemCtl"] = 1  # pack units are read-only
        t = pack.telemetry
        if not pack.online or t is None:
            values["State"] = STATE_DISCONNECTED
            return values
        values.update(
            {
                "SoC": t.soc_pct,
                "DoD": 100.0 - t.soc_pct,
                "SoH": t.soh_pct,
                "NCyc": t.cycles,
                "ChaSt": _cha_st(t.current_a, t.soc_pct, b.settings),
                "State": STATE_FAULT if t.faults else STATE_CONNECTED,
                "Evt1": self._events(t.flags, False),
                "Evt2": frozenset(),
                "EvtVnd1": frozenset(),
                "EvtVnd2": frozenset(),
                "V": t.voltage_v,
                "CellVMax": t.cell_max_v,
                "CellVMaxStr": 1,
                "CellVMaxMod": 1,
                "CellVMin": t.cell_min_v,
                "CellVMinStr": 1,
                "CellVMinMod": 1,
                "CellVAvg": t.cell_avg_v,
                "A": t.current_a,
                "W": t.power_w,
            }
        )
        return values

    def _bank_803(
        self, packs: list[PackSnapshot], b: BuildInput
    ) -> tuple[dict[str, Value], list[dict[str, Value]]]:
        bank = b.view.bank
        values: dict[str, Value] = {"NStr": len(packs), "NStrCon": bank.packs_online}
        groups: list[dict[str, Value]] = []
        online: list[tuple[int, Telemetry]] = []
        for n, p in enumerate(packs, start=1):
            t = p.telemetry
            if not p.online or t is None:
                groups.append({"StrNMod": 1, "StrSt": frozenset()})
                continue
            online.append((n, t))
            temps = _cell_temps(t)
            groups.append(
                {
                    "StrNMod": 1,
                    "StrSt": frozenset({0, 1}) if t.charge_mos_on or t.discharge_mos_on else frozenset({0}),
                    "StrSoC": t.soc_pct,
                    "StrSoH": t.soh_pct,
                    "StrA": t.current_a,
                    "StrCellVMax": t.cell_max_v,
                    "StrCellVMaxMod": 1,
                    "StrCellVMin": t.cell_min_v,
                    "StrCellVMinMod": 1,
                    "StrCellVAvg": t.cell_avg_v,
                    "StrModTmpMax": t.temp_max_c,
                    "StrModTmpMaxMod": 1,
                    "StrModTmpMin": t.temp_min_c,
                    "StrModTmpMinMod": 1,
                    "StrModTmpAvg": _avg(temps),
                    "StrEvt1": self._events(t.flags, False),
                    "StrEvt2": frozenset(),
                }
            )
        if online:
            with_temp = [(n, t) for n, t in online if t.temp_max_c is not None and t.temp_min_c is not None]
            if with_temp:
                tmax = max(with_temp, key=lambda x: x[1].temp_max_c or 0.0)
                tmin = min(with_temp, key=lambda x: x[1].temp_min_c or 0.0)
                values.update(
                    {
                        "ModTmpMax": tmax[1].temp_max_c,
                        "ModTmpMaxStr": tmax[0],
                        "ModTmpMaxMod": 1,
                        "ModTmpMin": tmin[1].temp_min_c,
                        "ModTmpMinStr": tmin[0],
                        "ModTmpMinMod": 1,
                        "ModTmpAvg": _avg([x for _, t in online for x in _cell_temps(t)]),
                    }
                )
            vmax = max(online, key=lambda x: x[1].voltage_v)
            vmin = min(online, key=lambda x: x[1].voltage_v)
            amax = max(online, key=lambda x: x[1].current_a)
            amin = min(online, key=lambda x: x[1].current_a)
            values.update(
                {
                    "StrVMax": vmax[1].voltage_v,
                    "StrVMaxStr": vmax[0],
                    "StrVMin": vmin[1].voltage_v,
                    "StrVMinStr": vmin[0],
                    "StrVAvg": _avg([t.voltage_v for _, t in online]),
                    "StrAMax": amax[1].current_a,
                    "StrAMaxStr": amax[0],
                    "StrAMin": amin[1].current_a,
                    "StrAMinStr": amin[0],
                    "StrAAvg": _avg([t.current_a for _, t in online]),
                    "NCellBal": sum(len(t.balancing_cells) for _, t in online),
                }
            )
        return values, groups

    def _storage_124(self, b: BuildInput) -> dict[str, Value]:
        regs, now, bank = b.registers, b.now, b.view.bank
        nameplate = nameplate_power_w(b.view, b.settings)
        mode = regs.get("124.StorCtl_Mod", now)
        wchamax = regs.get("124.WChaMax", now)
        values: dict[str, Value] = {
            "WChaMax": wchamax if wchamax is not None else nameplate,
            "StorCtl_Mod": frozenset(bit for bit in (0, 1) if int(mode or 0) & (1 << bit)),
            "OutWRte": regs.get("124.OutWRte", now) if regs.get("124.OutWRte", now) is not None else 100,
            "InWRte": regs.get("124.InWRte", now) if regs.get("124.InWRte", now) is not None else 100,
            "InOutWRte_RvrtTms": regs.get("124.InOutWRte_RvrtTms", now) or 0,
        }
        if bank.has_data and bank.soc_pct is not None and bank.current_a is not None:
            values.update(
                {
                    "ChaState": bank.soc_pct,
                    "StorAval": bank.remaining_capacity_ah,
                    "InBatV": bank.voltage_v,
                    "ChaSt": _cha_st(bank.current_a, bank.soc_pct, b.settings),
                }
            )
        return values

    # -------------------------------------------------------------- per-pack models (804, 805)

    def _pack_model(
        self, mid: int, idx: int, pack: PackSnapshot, b: BuildInput
    ) -> tuple[int, dict[str, Value], list[dict[str, Value]]]:
        """804 or 805 for one pack; `idx` is its string index (1-based) in the unit."""
        t = pack.telemetry if pack.online else None
        if mid == 804:
            values: dict[str, Value] = {"Idx": idx, "NMod": 1}
            group: dict[str, Value] = {}
            if t is not None:
                temps = _cell_temps(t)
                values.update(
                    {
                        "St": frozenset({0, 1}) if t.charge_mos_on or t.discharge_mos_on else frozenset({0}),
                        "NCellBal": len(t.balancing_cells),
                        "SoC": t.soc_pct,
                        "DoD": 100.0 - t.soc_pct,
                        "NCyc": t.cycles,
                        "SoH": t.soh_pct,
                        "A": t.current_a,
                        "V": t.voltage_v,
                        "CellVMax": t.cell_max_v,
                        "CellVMaxMod": 1,
                        "CellVMin": t.cell_min_v,
                        "CellVMinMod": 1,
                        "CellVAvg": t.cell_avg_v,
                        "ModTmpMax": t.temp_max_c,
                        "ModTmpMaxMod": 1,
                        "ModTmpMin": t.temp_min_c,
                        "ModTmpMinMod": 1,
                        "ModTmpAvg": _avg(temps),
                        "Evt1": self._events(t.flags, False),
                        "Evt2": frozenset(),
                    }
                )
                tmax_i = temps.index(max(temps)) + 1 if temps else None
                tmin_i = temps.index(min(temps)) + 1 if temps else None
                group = {
                    "ModNCell": len(t.cell_voltages_v),
                    "ModSoC": t.soc_pct,
                    "ModSoH": t.soh_pct,
                    "ModCellVMax": t.cell_max_v,
                    "ModCellVMaxCell": t.cell_max_index,
                    "ModCellVMin": t.cell_min_v,
                    "ModCellVMinCell": t.cell_min_index,
                    "ModCellVAvg": t.cell_avg_v,
                    "ModCellTmpMax": t.temp_max_c,
                    "ModCellTmpMaxCell": tmax_i,
                    "ModCellTmpMin": t.temp_min_c,
                    "ModCellTmpMinCell": tmin_i,
                    "ModCellTmpAvg": _avg(temps),
                }
            return 804, values, [group]
        if mid == 805:
            slots = b.cells.get(pack.key, b.settings.cells_per_pack)
            values = {"StrIdx": idx, "ModIdx": 1}
            cells: list[dict[str, Value]] = [{} for _ in range(slots)]
            if t is not None:
                temps = _cell_temps(t)
                values.update(
                    {
                        "NCell": len(t.cell_voltages_v),
                        "SoC": t.soc_pct,
                        "DoD": 100.0 - t.soc_pct,
                        "SoH": t.soh_pct,
                        "NCyc": t.cycles,
                        "V": t.voltage_v,
                        "CellVMax": t.cell_max_v,
                        "CellVMaxCell": t.cell_max_index,
                        "CellVMin": t.cell_min_v,
                        "CellVMinCell": t.cell_min_index,
                        "CellVAvg": t.cell_avg_v,
                        "CellTmpMax": t.temp_max_c,
                        "CellTmpMaxCell": temps.index(max(temps)) + 1 if temps else None,
                        "CellTmpMin": t.temp_min_c,
                        "CellTmpMinCell": temps.index(min(temps)) + 1 if temps else None,
                        "CellTmpAvg": _avg(temps),
                        "NCellBal": len(t.balancing_cells),
                        "SN": pack.identity.serial,
                    }
                )
                n_cells = len(t.cell_voltages_v)
                balancing = set(t.balancing_cells)
                for i, v in enumerate(t.cell_voltages_v[:slots]):
                    cells[i] = {"CellV": v, "CellSt": frozenset({0}) if i + 1 in balancing else frozenset()}
                    if temps and b.settings.cell_temperature_from_sensors:
                        # *inferred*: sensors assumed evenly spread over the cells, in order
                        cells[i]["CellTmp"] = temps[min(len(temps) - 1, i * len(temps) // n_cells)]
                    elif len(temps) == n_cells:
                        cells[i]["CellTmp"] = temps[i]
            else:
                values["SN"] = pack.identity.serial
            return 805, values, cells
        raise KeyError(f"model {mid} is not a per-pack model")
