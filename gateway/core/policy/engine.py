"""The charge policy: one decision per model view with every limit the inverter gets, and why.

`PolicyEngine.evaluate(view, controls, now)` turns the bank model, the packs' own parameters, the
derating tables of `[policy]` and the caps of `gateway.core.controls` into a `ChargeDecision`: charge
voltage limit, charge/discharge current limits, discharge voltage limit, enable flags, force-charge
and full-charge requests, the values the inverter displays, the active flag meanings per level
(from the codecs' flag tables, never from a flag's name), and for
each limit the *limiting factor* (which rule won). Inverter encoders (CAN, RS485, Modbus) only
translate a decision; they never decide.

This module is pure: no I/O, no asyncio, no clock of its own (the caller passes `now`). The engine
keeps the little state the rules need (low-pass on increases, CVL stepping, force-charge
hysteresis, time of the last full charge) and logs every limit change with its reason.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from gateway.app.config import PolicyConfig
from gateway.core.controls import ControlState, OperationRequest, Source
from gateway.core.model import (
    Availability,
    BankSnapshot,
    ModelView,
    PackKey,
    PackSnapshot,
    Telemetry,
    TempRole,
    aggregate,
)
from protocol.bms.base import FlagInfo, Meaning

if TYPE_CHECKING:
    from protocol.inverter.bank import BankValues
    from protocol.inverter.can.base import BatteryState

log = logging.getLogger(__name__)


class Factor(enum.StrEnum):
    """Why a limit has its value (the rule that won)."""

    CONFIGURED = "configured"  # [policy] rating: cells x cell voltage, pack current rating x packs
    PACK_PARAMETER = "pack_parameter"  # the packs' own protection parameters / current-limit mode
    CELL_VOLTAGE_DERATING = "cell_voltage_derating"
    TEMPERATURE_DERATING = "temperature_derating"
    MOS_TEMPERATURE_DERATING = "mos_temperature_derating"
    SOC_BAND = "soc_band"
    PROTECTION_ACTIVE = "protection_active"
    PACK_OFFLINE = "pack_offline"
    USER_CAP = "user_cap"
    EMS_CAP = "ems_cap"
    STALE_DATA = "stale_data"
    RAMP = "ramp"  # an increase still being low-pass filtered
    CVL_STEP = "cvl_step"  # CVL being lowered in steps


LIMIT_NAMES = ("charge_voltage_v", "discharge_voltage_v", "charge_current_a", "discharge_current_a")
# How the log names each limit (label, unit): the first decision's line follows LIMIT_NAMES' order.
LIMIT_LABELS = {
    "charge_voltage_v": ("CVL", "V"),
    "discharge_voltage_v": ("DVL", "V"),
    "charge_current_a": ("CCL", "A"),
    "discharge_current_a": ("DCL", "A"),
}

# The neutral meanings a decision can carry in `alarms` / `warnings` (`protocol.bms.base.Meaning`
# values that are not states); every output translates them through mappings/flags/outputs.toml.
NEUTRAL_FLAGS = frozenset(m.value for m in Meaning if not m.is_state)
COMMUNICATION = Meaning.COMMUNICATION.value

CHARGE = "charge"
DISCHARGE = "discharge"
BOTH = frozenset({CHARGE, DISCHARGE})

# Pack parameter names (as the vendor tool shows them) the policy reads, first found wins.
CHARGE_OC_PARAMS = ("CHG_OC1_Start", "CHG_OC_Start")
DISCHARGE_OC_PARAMS = ("DISC_OC1_Start", "DISC_OC_Start")
CELL_OV_PARAMS = ("CELL_OV_Start",)
CELL_UV_PARAMS = ("CELL_UV_Start",)
PACK_OV_PARAMS = ("PACK_OV_Start",)
PACK_UV_PARAMS = ("PACK_UV_Start",)
LC_STYLE_PARAM = "LC_Style"
LC_STYLE_HALF = (3.0, 5.0)  # manual 4.4.6: "half of the lower flow value" (effect on the limit inferred)


@dataclass(frozen=True, slots=True)
class ChargeDecision:
    """Everything an inverter protocol sends, decided once. Currents are positive magnitudes.

    The bank values the messages carry are `bank`'s, the aggregate the limits were computed from
    (never copies): the packs fresh within `stale_after_s`; while stale, the last fresh bank with
    current and power zeroed and no pack counted online (see `stale_bank`).
    """

    computed_at: float  # wall clock of the evaluation
    has_data: bool  # False until the first fresh pack reading (encoders must not send before)
    stale: bool  # no fresh pack data: every direction blocked, alarms set
    charge_voltage_v: float  # CVL
    discharge_voltage_v: float  # DVL
    charge_current_a: float  # CCL
    discharge_current_a: float  # DCL
    charge_enabled: bool
    discharge_enabled: bool
    force_charge_1: bool
    force_charge_2: bool
    full_charge_request: bool
    alarms: frozenset[str]  # meanings at the protection level (the flag blocks: the inverter must stop)
    warnings: frozenset[str]  # meanings at the warning level
    packs_blocking_charge: int
    packs_blocking_discharge: int
    bank: BankSnapshot  # packs_online: the fresh packs used for the limits (the protocols' "module count")
    limiting: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def charge_blocked(self) -> bool:
        return not self.charge_enabled

    @property
    def discharge_blocked(self) -> bool:
        return not self.discharge_enabled

    def as_stale(self, now: float, packs_configured: int | None = None) -> ChargeDecision:
        """This decision with stale data: every direction blocked, no requests, communication alarm."""
        flags = frozenset({COMMUNICATION})
        return replace(
            self,
            computed_at=now,
            stale=True,
            charge_current_a=0.0,
            discharge_current_a=0.0,
            charge_enabled=False,
            discharge_enabled=False,
            force_charge_1=False,
            force_charge_2=False,
            full_charge_request=False,
            alarms=self.alarms | flags,
            warnings=self.warnings | flags,
            packs_blocking_charge=0,
            packs_blocking_discharge=0,
            bank=stale_bank(self.bank, now, packs_configured),
            limiting=MappingProxyType(dict.fromkeys(LIMIT_NAMES, Factor.STALE_DATA.value)),
        )


def stale_bank(bank: BankSnapshot, now: float, packs_configured: int | None = None) -> BankSnapshot:
    """The last known bank while its data is stale: measurements kept (the inverter keeps showing
    voltage, SOC, temperatures), no current or power, no pack online (every one counted stale)."""
    configured = bank.packs_configured if packs_configured is None else packs_configured
    return replace(
        bank,
        computed_at=now,
        packs_configured=configured,
        packs_online=0,
        packs_stale=configured,
        packs_offline=0,
        current_a=0.0,
        power_w=0.0,
        remaining_charge_time_s=None,
        remaining_discharge_time_s=None,
    )


def interpolate(table: Sequence[tuple[float, float]], x: float) -> float:
    """Linear interpolation in a derating table, clamped to its end points; an empty table is 1."""
    if not table:
        return 1.0
    if x <= table[0][0]:
        return table[0][1]
    if x >= table[-1][0]:
        return table[-1][1]
    for (x0, f0), (x1, f1) in itertools.pairwise(table):
        if x0 <= x <= x1:
            return f0 + (f1 - f0) * (x - x0) / (x1 - x0)
    return table[-1][1]  # unreachable for a sorted table


def stops(flags: Iterable[FlagInfo]) -> frozenset[str]:
    """The meanings of the flags at the protection level (they block a direction)."""
    return frozenset(f.meaning.value for f in flags if f.level == "protection")


def warns(flags: Iterable[FlagInfo]) -> frozenset[str]:
    """The meanings of the flags at the warning level (problems that block nothing)."""
    return frozenset(f.meaning.value for f in flags if f.level == "warning")


def blocked_directions(flags: Iterable[FlagInfo]) -> frozenset[str]:
    """The directions the flags block, from each flag's table entry (never from its name)."""
    out: set[str] = set()
    for f in flags:
        if f.blocks.charge:
            out.add(CHARGE)
        if f.blocks.discharge:
            out.add(DISCHARGE)
    return frozenset(out)


def _param(pack: PackSnapshot, names: Sequence[str]) -> float | None:
    if pack.parameters is None:
        return None
    for name in names:
        value = pack.parameters.get(name)
        if value is not None and math.isfinite(value) and value > 0:
            return value
    return None


@dataclass(frozen=True, slots=True)
class _Limit:
    value: float
    factor: Factor


@dataclass(frozen=True, slots=True)
class _PackLimits:
    base_charge: _Limit
    base_discharge: _Limit
    charge: _Limit
    discharge: _Limit
    cvl_per_cell_v: float | None  # from CELL_OV_Start - margin
    pack_cvl_v: float | None  # from PACK_OV_Start - cells x margin
    dvl_per_cell_v: float | None
    pack_dvl_v: float | None
    blocks: frozenset[str]


def _worst(table: Sequence[tuple[float, float]], values: Iterable[float]) -> float:
    return min((interpolate(table, v) for v in values), default=1.0)


def _pack_limits(cfg: PolicyConfig, pack: PackSnapshot, t: Telemetry) -> _PackLimits:
    base_c = _Limit(cfg.pack_charge_current_a, Factor.CONFIGURED)
    base_d = _Limit(cfg.pack_discharge_current_a, Factor.CONFIGURED)
    oc = _param(pack, CHARGE_OC_PARAMS)
    if oc is not None and oc * cfg.parameter_current_fraction < base_c.value:
        base_c = _Limit(oc * cfg.parameter_current_fraction, Factor.PACK_PARAMETER)
    od = _param(pack, DISCHARGE_OC_PARAMS)
    if od is not None and od * cfg.parameter_current_fraction < base_d.value:
        base_d = _Limit(od * cfg.parameter_current_fraction, Factor.PACK_PARAMETER)
    if cfg.lc_style_inferred and pack.parameters is not None:
        style = pack.parameters.get(LC_STYLE_PARAM)
        if style in LC_STYLE_HALF:  # *inferred*: the manual's "half" applied to the charge limit
            base_c = _Limit(base_c.value * 0.5, Factor.PACK_PARAMETER)
    cell_temps = [x.value_c for x in t.temperatures if x.role is TempRole.CELL] or [
        x.value_c for x in t.temperatures if x.role is not TempRole.MOS
    ]
    mos_temps = [x.value_c for x in t.temperatures if x.role is TempRole.MOS]
    mos = _worst(cfg.mos_temperature_derating, mos_temps)
    c_factors = [
        (interpolate(cfg.cell_voltage_charge_derating, t.cell_max_v), Factor.CELL_VOLTAGE_DERATING),
        (_worst(cfg.temperature_charge_derating, cell_temps), Factor.TEMPERATURE_DERATING),
        (mos, Factor.MOS_TEMPERATURE_DERATING),
    ]
    d_factors = [
        (interpolate(cfg.cell_voltage_discharge_derating, t.cell_min_v), Factor.CELL_VOLTAGE_DERATING),
        (_worst(cfg.temperature_discharge_derating, cell_temps), Factor.TEMPERATURE_DERATING),
        (mos, Factor.MOS_TEMPERATURE_DERATING),
    ]
    fc, fc_name = min(c_factors, key=lambda f: f[0])
    fd, fd_name = min(d_factors, key=lambda f: f[0])
    charge = base_c if fc >= 1.0 else _Limit(base_c.value * fc, fc_name)
    discharge = base_d if fd >= 1.0 else _Limit(base_d.value * fd, fd_name)
    cells = len(t.cell_voltages_v)
    m = cfg.cell_limit_margin_v
    ov, uv = _param(pack, CELL_OV_PARAMS), _param(pack, CELL_UV_PARAMS)
    pov, puv = _param(pack, PACK_OV_PARAMS), _param(pack, PACK_UV_PARAMS)
    return _PackLimits(
        base_charge=base_c,
        base_discharge=base_d,
        charge=charge,
        discharge=discharge,
        cvl_per_cell_v=None if ov is None else ov - m,
        pack_cvl_v=None if pov is None else pov - cells * m,
        dvl_per_cell_v=None if uv is None else uv + m,
        pack_dvl_v=None if puv is None else puv + cells * m,
        blocks=blocked_directions(t.flags),
    )


def _bank_current(limits: list[tuple[_Limit, _Limit]], scale: float, missing_packs: int) -> _Limit:
    """Sum over packs x scale; the factor is the rule that took the most current away."""
    total = sum(lim.value for _, lim in limits) * scale
    lost: dict[Factor, float] = {}
    for base, lim in limits:
        if lim.value < base.value:
            lost[lim.factor] = lost.get(lim.factor, 0.0) + base.value - lim.value
    if lost:
        return _Limit(total, max(lost, key=lambda f: lost[f]))
    if missing_packs:
        return _Limit(total, Factor.PACK_OFFLINE)
    if any(base.factor is Factor.PACK_PARAMETER for base, _ in limits):
        return _Limit(total, Factor.PACK_PARAMETER)
    return _Limit(total, Factor.CONFIGURED)


def _cap_factor(source: Source) -> Factor:
    return Factor.EMS_CAP if source is Source.EMS else Factor.USER_CAP


def _fmt(value: float) -> str:
    return f"{value:.1f}"


class PolicyEngine:
    """Evaluates the charge policy; one instance per gateway (it keeps the rules' state)."""

    def __init__(self, config: PolicyConfig, *, last_full_charge_at: float | None = None) -> None:
        self.config = config
        self.last_full_charge_at = last_full_charge_at
        self._last: ChargeDecision | None = None
        self._last_fresh: ChargeDecision | None = None
        self._last_eval_at: float | None = None
        self._cvl_v: float | None = None
        self._cvl_step_at: float | None = None
        self._fc1 = False
        self._fc2 = False
        # a pack's limits depend only on its snapshot and the configuration: worked out once per
        # snapshot (immutable; the model store keeps the object of a pack that was not polled)
        self._pack_limits: dict[PackKey, tuple[PackSnapshot, PolicyConfig, _PackLimits]] = {}

    def _limits_of(self, pack: PackSnapshot, t: Telemetry) -> _PackLimits:
        hit = self._pack_limits.get(pack.key)
        if hit is not None and hit[0] is pack and hit[1] is self.config:
            return hit[2]
        limits = _pack_limits(self.config, pack, t)
        self._pack_limits[pack.key] = (pack, self.config, limits)
        return limits

    @property
    def last(self) -> ChargeDecision | None:
        return self._last

    def evaluate(self, view: ModelView, controls: ControlState, now: float) -> ChargeDecision:
        cfg = self.config
        fresh = [
            (p, p.telemetry)
            for p in view.ordered()
            if p.availability is Availability.ONLINE
            and p.telemetry is not None
            and now - p.telemetry.measured_at <= cfg.stale_after_s
        ]
        if not fresh:
            decision = self._stale(view, now)
        else:
            decision = self._fresh(view, fresh, controls, now)
            self._last_fresh = decision
        self._log_changes(self._last, decision)
        self._last = decision
        self._last_eval_at = now
        return decision

    # -- stale data: every direction blocked, alarm bits, last known measurements ------------------
    def _stale(self, view: ModelView, now: float) -> ChargeDecision:
        limiting = MappingProxyType(dict.fromkeys(LIMIT_NAMES, Factor.STALE_DATA.value))
        flags = frozenset({COMMUNICATION})
        prev = self._last_fresh
        if prev is None:
            cells = 16
            return ChargeDecision(
                computed_at=now, has_data=False, stale=True,
                charge_voltage_v=cells * self.config.charge_cell_voltage_v,
                discharge_voltage_v=cells * self.config.discharge_cell_voltage_v,
                charge_current_a=0.0, discharge_current_a=0.0,
                charge_enabled=False, discharge_enabled=False,
                force_charge_1=False, force_charge_2=False, full_charge_request=False,
                alarms=flags, warnings=flags,
                packs_blocking_charge=0, packs_blocking_discharge=0,
                bank=self._bank(view, now), limiting=limiting,
            )  # fmt: skip
        self._fc1 = self._fc2 = False
        return prev.as_stale(now, len(view.packs))

    def _bank(self, view: ModelView, now: float) -> BankSnapshot:
        """The bank over the packs fresh within the stale limit (the set `evaluate` decides on).

        When every online pack's reading is within the limit (the usual case) that is the model's
        own aggregate, the same packs through the same function: it is used as it is, not computed
        a second time on every view."""
        limit = self.config.stale_after_s
        if all(
            not p.online or p.telemetry is None or now - p.telemetry.measured_at <= limit
            for p in view.packs.values()
        ):
            return view.bank
        return aggregate(view.packs.values(), now, max_age_s=limit)

    # -- fresh data ---------------------------------------------------------------------------------
    def _fresh(
        self,
        view: ModelView,
        fresh: list[tuple[PackSnapshot, Telemetry]],
        controls: ControlState,
        now: float,
    ) -> ChargeDecision:
        cfg = self.config
        bank = self._bank(view, now)
        per_pack = [(p, t, self._limits_of(p, t)) for p, t in fresh]
        missing = len(view.packs) - len(fresh)
        cells = bank.cells_per_pack or 0
        soc = bank.soc_pct if bank.soc_pct is not None else 0.0
        voltage = bank.voltage_v if bank.voltage_v is not None else 0.0

        # currents: sum over fresh packs x scale, then SOC band, then caps
        ccl = _bank_current(
            [(pl.base_charge, pl.charge) for _, _, pl in per_pack], cfg.parallel_scale, missing
        )
        dcl = _bank_current(
            [(pl.base_discharge, pl.discharge) for _, _, pl in per_pack], cfg.parallel_scale, missing
        )
        f = interpolate(cfg.soc_charge_derating, soc)
        if f < 1.0:
            ccl = _Limit(ccl.value * f, Factor.SOC_BAND)
        f = interpolate(cfg.soc_discharge_derating, soc)
        if f < 1.0:
            dcl = _Limit(dcl.value * f, Factor.SOC_BAND)
        ccl = self._cap(ccl, cfg.max_charge_current_a, controls, "max_charge_current_a")
        dcl = self._cap(dcl, cfg.max_discharge_current_a, controls, "max_discharge_current_a")

        # voltages
        cvl = _Limit(cells * cfg.charge_cell_voltage_v, Factor.CONFIGURED)
        dvl = _Limit(cells * cfg.discharge_cell_voltage_v, Factor.CONFIGURED)
        for _, _, pl in per_pack:
            for v in (None if pl.cvl_per_cell_v is None else cells * pl.cvl_per_cell_v, pl.pack_cvl_v):
                if v is not None and v < cvl.value:
                    cvl = _Limit(v, Factor.PACK_PARAMETER)
            for v in (None if pl.dvl_per_cell_v is None else cells * pl.dvl_per_cell_v, pl.pack_dvl_v):
                if v is not None and v > dvl.value:
                    dvl = _Limit(v, Factor.PACK_PARAMETER)
        cvl = self._cap(cvl, cfg.max_charge_voltage_v, controls, "max_charge_voltage_v")
        dvl = self._cap(dvl, cfg.min_discharge_voltage_v, controls, "min_discharge_voltage_v", higher=True)
        cvl = self._step_cvl(cvl, voltage, now)

        # blocks: protections, operation request, SOC reserve
        block_c = sum(1 for _, _, pl in per_pack if CHARGE in pl.blocks)
        block_d = sum(1 for _, _, pl in per_pack if DISCHARGE in pl.blocks)
        charge_block: Factor | None = Factor.PROTECTION_ACTIVE if block_c else None
        discharge_block: Factor | None = Factor.PROTECTION_ACTIVE if block_d else None
        if controls.operation is OperationRequest.DISCONNECT:
            charge_block = charge_block or Factor.EMS_CAP
            discharge_block = discharge_block or Factor.EMS_CAP
        cap = controls.caps.get("soc_reserve_max_pct")
        if cap is not None and soc >= cap.value:
            charge_block = charge_block or _cap_factor(cap.source)
        cap = controls.caps.get("soc_reserve_min_pct")
        if cap is not None and soc <= cap.value:
            discharge_block = discharge_block or _cap_factor(cap.source)
        if charge_block is not None:
            ccl = _Limit(0.0, charge_block)
        if discharge_block is not None:
            dcl = _Limit(0.0, discharge_block)

        prev = self._last_fresh if self._last is not None and not self._last.stale else None
        if self._last is not None and self._last.stale:
            prev = self._last  # recovering from stale data: ramp up from 0 A
        ccl = self._low_pass(ccl, None if prev is None else prev.charge_current_a, now)
        dcl = self._low_pass(dcl, None if prev is None else prev.discharge_current_a, now)

        # requests
        if soc <= cfg.force_charge_1_start_soc_pct:
            self._fc1 = True
        elif soc >= cfg.force_charge_1_stop_soc_pct:
            self._fc1 = False
        if soc <= cfg.force_charge_2_start_soc_pct:
            self._fc2 = True
        elif soc >= cfg.force_charge_2_stop_soc_pct:
            self._fc2 = False
        if self.last_full_charge_at is None or soc >= cfg.full_charge_soc_pct:
            self.last_full_charge_at = now
        full_request = now - self.last_full_charge_at >= cfg.full_charge_days * 86400.0

        alarms = stops(f for _, t in fresh for f in t.flags)
        warnings = warns(f for _, t in fresh for f in t.flags)
        if missing:
            warnings |= {COMMUNICATION}
        return ChargeDecision(
            computed_at=now,
            has_data=True,
            stale=False,
            charge_voltage_v=cvl.value,
            discharge_voltage_v=min(dvl.value, cvl.value),
            charge_current_a=ccl.value,
            discharge_current_a=dcl.value,
            charge_enabled=charge_block is None,
            discharge_enabled=discharge_block is None,
            force_charge_1=self._fc1,
            force_charge_2=self._fc2,
            full_charge_request=full_request,
            alarms=alarms,
            warnings=warnings,
            packs_blocking_charge=block_c,
            packs_blocking_discharge=block_d,
            bank=bank,
            limiting=MappingProxyType(
                {
                    "charge_voltage_v": cvl.factor.value,
                    "discharge_voltage_v": dvl.factor.value,
                    "charge_current_a": ccl.factor.value,
                    "discharge_current_a": dcl.factor.value,
                }
            ),
        )

    def _cap(
        self,
        limit: _Limit,
        user_cap: float | None,
        controls: ControlState,
        name: str,
        *,
        higher: bool = False,
    ) -> _Limit:
        """Apply the [policy] user cap and the controls' cap of `name` (minimum wins, or maximum)."""
        candidates: list[_Limit] = []
        if user_cap is not None:
            candidates.append(_Limit(user_cap, Factor.USER_CAP))
        cap = controls.caps.get(name)
        if cap is not None:
            candidates.append(_Limit(cap.value, _cap_factor(cap.source)))
        for c in candidates:
            if (c.value > limit.value) if higher else (c.value < limit.value):
                limit = c
        return limit

    def _step_cvl(self, target: _Limit, voltage_v: float, now: float) -> _Limit:
        """Raise CVL at once; lower it at once only down to the present voltage, below in steps."""
        cfg = self.config
        prev = self._cvl_v
        if prev is None or target.value >= prev:
            self._cvl_v = target.value
            return target
        value = max(target.value, min(prev, voltage_v))
        if value > target.value and (
            self._cvl_step_at is None or now - self._cvl_step_at >= cfg.cvl_step_interval_s
        ):
            stepped = max(target.value, prev - cfg.cvl_step_v)
            if stepped < value:
                value = stepped
                self._cvl_step_at = now
        self._cvl_v = value
        if value > target.value + 1e-9:
            return _Limit(value, Factor.CVL_STEP)
        return target

    def _low_pass(self, target: _Limit, prev: float | None, now: float) -> _Limit:
        """Decreases are immediate; increases approach the target with the configured time constant."""
        tau = self.config.current_rise_time_constant_s
        if prev is None or target.value <= prev or tau <= 0 or self._last_eval_at is None:
            return target
        dt = max(0.0, now - self._last_eval_at)
        value = prev + (target.value - prev) * (1.0 - math.exp(-dt / tau))
        if target.value - value <= max(0.5, 0.01 * target.value):
            return target
        return _Limit(value, Factor.RAMP)

    def _log_changes(self, old: ChargeDecision | None, new: ChargeDecision) -> None:
        if old is None:
            log.info(
                "charge policy: %s",
                ", ".join(
                    f"{LIMIT_LABELS[name][0]} {_fmt(getattr(new, name))} {LIMIT_LABELS[name][1]} "
                    f"({new.limiting.get(name)})"
                    for name in LIMIT_NAMES
                ),
            )
            return
        if old.stale != new.stale:
            if new.stale:
                log.warning("charge policy: bank data stale: all directions blocked")
            else:
                log.info("charge policy: bank data fresh")
        for name in LIMIT_NAMES:
            before, after = _fmt(getattr(old, name)), _fmt(getattr(new, name))
            reason, old_reason = new.limiting.get(name), old.limiting.get(name)
            if before == after and reason == old_reason:
                continue
            level = (
                logging.DEBUG
                if reason in (Factor.RAMP, Factor.CVL_STEP) and reason == old_reason
                else logging.INFO
            )
            log.log(level, "charge policy: %s %s -> %s (limited by %s)", name, before, after, reason)
        for flag in (
            "charge_enabled",
            "discharge_enabled",
            "force_charge_1",
            "force_charge_2",
            "full_charge_request",
        ):
            if getattr(old, flag) != getattr(new, flag):
                log.info("charge policy: %s -> %s", flag, getattr(new, flag))


if TYPE_CHECKING:  # mypy holds the model's bank and this decision to the encoders' structural types

    def _read_by_the_encoders(
        bank: BankSnapshot, decision: ChargeDecision
    ) -> tuple[BankValues, BatteryState]:
        return bank, decision
