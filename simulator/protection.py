"""Protection and alarm state machine of a simulated pack, driven by the pack's own parameters.

What it is for: each condition (cell over-voltage, discharge over-current, MOS over-temperature, ...)
has a start threshold, a delay and a stop (release) threshold taken from the pack's parameter table.
A condition becomes active once its measured quantity has stayed beyond the start threshold for the
whole delay, and is released when the quantity is back past the stop threshold (over-current
protections, which have no stop threshold, release after a fixed recovery time with the MOS off,
as real packs do). Every transition is returned so the pack can set status flags, switch MOSFETs and
store a history event.

Family-neutral: the condition keys below are ours; each family maps them to its parameter names,
status bits and event codes. It must never perform I/O or know any wire format.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class Kind(enum.StrEnum):
    PROTECTION = "protection"
    ALARM = "alarm"


class Quantity(enum.StrEnum):
    CELL_MAX_V = "cell_max_v"
    CELL_MIN_V = "cell_min_v"
    CELL_DIFF_V = "cell_diff_v"
    PACK_V = "pack_v"
    CHARGE_A = "charge_a"  # max(0, current)
    DISCHARGE_A = "discharge_a"  # max(0, -current)
    CELL_TEMP_MAX_C = "cell_temp_max_c"
    CELL_TEMP_MIN_C = "cell_temp_min_c"
    MOS_TEMP_C = "mos_temp_c"
    AMBIENT_C = "ambient_c"
    SOC_PCT = "soc_pct"


OC_RECOVERY_S = 30.0  # over-current protections release after this long (simulator's choice)

# condition key -> (quantity, above?, blocks charge?, blocks discharge?)
CONDITIONS: dict[str, tuple[Quantity, bool, bool, bool]] = {
    "cell_ov": (Quantity.CELL_MAX_V, True, True, False),
    "cell_uv": (Quantity.CELL_MIN_V, False, False, True),
    "pack_ov": (Quantity.PACK_V, True, True, False),
    "pack_uv": (Quantity.PACK_V, False, False, True),
    "chg_oc": (Quantity.CHARGE_A, True, True, False),  # alarm only
    "chg_oc1": (Quantity.CHARGE_A, True, True, False),
    "chg_oc2": (Quantity.CHARGE_A, True, True, False),
    "dsg_oc": (Quantity.DISCHARGE_A, True, False, True),  # alarm only
    "dsg_oc1": (Quantity.DISCHARGE_A, True, False, True),
    "dsg_oc2": (Quantity.DISCHARGE_A, True, False, True),
    "chg_ot": (Quantity.CELL_TEMP_MAX_C, True, True, False),
    "chg_ut": (Quantity.CELL_TEMP_MIN_C, False, True, False),
    "dsg_ot": (Quantity.CELL_TEMP_MAX_C, True, False, True),
    "dsg_ut": (Quantity.CELL_TEMP_MIN_C, False, False, True),
    "mos_ot": (Quantity.MOS_TEMP_C, True, True, True),
    "env_ot": (Quantity.AMBIENT_C, True, True, True),
    "env_ut": (Quantity.AMBIENT_C, False, True, True),
    "soc_low": (Quantity.SOC_PCT, False, False, False),  # alarm only
    "cell_diff": (Quantity.CELL_DIFF_V, True, False, False),  # alarm only
    "short_circuit": (Quantity.DISCHARGE_A, True, False, True),  # tripped by `trip`, never by a rule
}
OVER_CURRENT = frozenset({"chg_oc1", "chg_oc2", "dsg_oc1", "dsg_oc2", "short_circuit"})


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """Thresholds of one condition in SI units (V, A, °C, %, s)."""

    key: str
    kind: Kind
    start: float
    stop: float | None  # None: release after OC_RECOVERY_S (over-current)
    delay_s: float


@dataclass(frozen=True, slots=True)
class Transition:
    key: str
    kind: Kind
    active: bool  # True: fired, False: released
    at_s: float  # simulation time


@dataclass(slots=True)
class _RuleState:
    pending_since: float | None = None
    active: bool = False
    active_since: float = 0.0


@dataclass(slots=True)
class ProtectionEngine:
    rules: tuple[RuleSpec, ...] = ()
    _state: dict[tuple[str, Kind], _RuleState] = field(default_factory=dict)

    def set_rules(self, rules: Iterable[RuleSpec]) -> None:
        """New thresholds (a parameter write); active conditions stay active until released."""
        self.rules = tuple(rules)
        for r in self.rules:
            self._state.setdefault((r.key, r.kind), _RuleState())

    def active(self, kind: Kind) -> frozenset[str]:
        return frozenset(k for (k, kd), st in self._state.items() if kd is kind and st.active)

    def pending(self) -> bool:
        """True while a delay is running (the caller then keeps its time steps short)."""
        return any(st.pending_since is not None for st in self._state.values())

    def blocks(self) -> tuple[bool, bool]:
        """(charge blocked, discharge blocked) by active protections."""
        chg = dsg = False
        for key in self.active(Kind.PROTECTION):
            _q, _above, c, d = CONDITIONS[key]
            chg |= c
            dsg |= d
        return chg, dsg

    def trip(self, key: str, now_s: float) -> Transition | None:
        """An instantaneous protection (a short circuit): active at once, released after
        OC_RECOVERY_S like the over-current protections. None when it is already active."""
        st = self._state.setdefault((key, Kind.PROTECTION), _RuleState())
        if st.active:
            return None
        st.active = True
        st.active_since = now_s
        return Transition(key, Kind.PROTECTION, True, now_s)

    def evaluate(self, now_s: float, values: Mapping[Quantity, float]) -> list[Transition]:
        out: list[Transition] = []
        ruled = {(r.key, r.kind) for r in self.rules}
        for (key, kind), st in self._state.items():
            if (key, kind) not in ruled and st.active and now_s - st.active_since >= OC_RECOVERY_S:
                st.active = False
                out.append(Transition(key, kind, False, now_s))
        for rule in self.rules:
            quantity, above, _c, _d = CONDITIONS[rule.key]
            value = values[quantity]
            st = self._state[(rule.key, rule.kind)]
            beyond = value >= rule.start if above else value <= rule.start
            if not st.active:
                if not beyond:
                    st.pending_since = None
                    continue
                if st.pending_since is None:
                    st.pending_since = now_s
                if now_s - st.pending_since >= rule.delay_s - 1e-9:
                    st.active = True
                    st.active_since = now_s
                    st.pending_since = None
                    out.append(Transition(rule.key, rule.kind, True, now_s))
                continue
            if rule.stop is None:
                released = not beyond and now_s - st.active_since >= OC_RECOVERY_S
            else:
                released = value <= rule.stop if above else value >= rule.stop
            if released:
                st.active = False
                out.append(Transition(rule.key, rule.kind, False, now_s))
        return out
