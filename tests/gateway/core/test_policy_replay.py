"""Replay of a recorded simulator run (two packs, full charge then full discharge) through the policy.

The run is recorded from `simulator` (its true pack states, minute by minute, converted to
model snapshots as the poller would publish them), then replayed through one `PolicyEngine`. The
assertions are about the trace: which rule limits what, and when.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import pytest

from gateway.app.config import PolicyConfig
from gateway.core.controls import Controls
from gateway.core.model import (
    Availability,
    ModelView,
    PackSnapshot,
    ParameterReading,
    ParameterSet,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.core.policy.engine import ChargeDecision, PolicyEngine
from mappings.flags import load_outputs
from protocol.inverter.can import dbc, registry
from simulator import PackTruth, Simulator, SimulatorOptions, WireFlags
from tests.support.can_policy_fixtures import view
from tests.support.flags import named

EPOCH = 1_800_000_000.0
STEP_S = 60.0


def snapshot(truth: PackTruth, wire: WireFlags, now: float) -> PackSnapshot:
    temps = [Temperature(TempRole.CELL, i + 1, t) for i, t in enumerate(truth.cell_temperatures_c)]
    temps.append(Temperature(TempRole.MOS, 1, truth.mos_temperature_c))
    telemetry = Telemetry.build(
        measured_at=now,
        cell_voltages_v=truth.cell_voltages_v,
        temperatures=temps,
        voltage_v=truth.voltage_v,
        current_a=truth.current_a,
        soc_pct=truth.soc_pct,
        soh_pct=truth.soh_pct,
        full_capacity_ah=truth.full_capacity_ah,
        remaining_capacity_ah=truth.remaining_capacity_ah,
        nominal_capacity_ah=truth.nominal_capacity_ah,
        cycles=truth.cycles,
        # the flags as the codec decodes them, with their meanings from the codec's table
        flags=named(*wire.protections, *wire.alarms, *wire.faults, *wire.states),
    )
    parameters = ParameterSet.of(now, [ParameterReading(k, v, "") for k, v in truth.parameters.items()])
    return PackSnapshot("sim", truth.address, Availability.ONLINE, telemetry=telemetry, parameters=parameters)


@dataclass(frozen=True, slots=True)
class Step:
    now: float
    phase: str
    view: ModelView


@cache
def recorded_run() -> tuple[Step, ...]:
    sim = Simulator(SimulatorOptions(packs=2, profile="charge", pacing=False, start_epoch_s=EPOCH, seed=3))
    steps: list[Step] = []

    def record(phase: str, minutes: int) -> None:
        for _ in range(minutes):
            sim.advance(STEP_S)
            now = sim.epoch_s
            steps.append(
                Step(
                    now,
                    phase,
                    view([snapshot(sim.truth(a), sim.wire_flags(a), now) for a in sim.addresses], now),
                )
            )

    record("charge", 100)
    sim.set_profile("discharge")
    record("discharge", 200)
    return tuple(steps)


@cache
def replay() -> tuple[tuple[Step, ChargeDecision], ...]:
    engine = PolicyEngine(PolicyConfig())
    controls = Controls()
    return tuple((s, engine.evaluate(s.view, controls.state(s.now), s.now)) for s in recorded_run())


def decisions(phase: str) -> Iterator[ChargeDecision]:
    return (d for s, d in replay() if s.phase == phase)


def test_the_recording_covers_a_full_charge_and_discharge() -> None:
    socs = [s.view.bank.soc_pct for s in recorded_run()]
    assert max(socs) >= 97.0
    assert min(socs) <= 6.0
    assert all(d.has_data and not d.stale for _, d in replay())


def test_charge_current_tapers_by_cell_voltage_near_full() -> None:
    charge = list(decisions("charge"))
    # the packs' CHG_OC1_Start (110 A) x 0.9 is below the 100 A rating: the pack parameter limits
    assert charge[0].limiting["charge_current_a"] == "pack_parameter"
    assert charge[0].charge_current_a == pytest.approx(2 * 99 * 0.9)
    tapered = [d for d in charge if d.bank.cell_max.value >= 3.40]
    assert tapered, "the run reaches the taper region"
    assert all(d.limiting["charge_current_a"] == "cell_voltage_derating" for d in tapered)
    assert all(d.charge_current_a < 0.75 * charge[0].charge_current_a for d in tapered)
    assert charge[-1].charge_current_a <= 0.01 * 180  # full: (almost) nothing more
    assert all(d.charge_enabled and d.discharge_enabled for d in charge)


def test_discharge_derates_near_empty_and_requests_force_charge() -> None:
    discharge = list(decisions("discharge"))
    low = [d for d in discharge if d.bank.cell_min.value <= 3.10]
    assert low and all(d.limiting["discharge_current_a"] == "cell_voltage_derating" for d in low)
    assert all(d.discharge_current_a < 0.5 * 180 for d in low)  # each pack derates by its own cells
    assert discharge[0].discharge_current_a == pytest.approx(180)
    assert discharge[-1].discharge_current_a < 0.1 * 180
    assert not discharge[0].force_charge_1 and not discharge[0].force_charge_2
    assert discharge[-1].force_charge_2 and discharge[-1].force_charge_1  # SOC ended at ~5 %
    assert "soc_low" in discharge[-1].warnings  # the packs' SOC-low alarm, by its meaning
    first_fc2 = next(i for i, d in enumerate(discharge) if d.force_charge_2)
    assert discharge[first_fc2].bank.soc_pct <= 9.0


def test_voltage_limits_stay_put_over_the_run() -> None:
    # the simulated packs' CELL_OV_Start (3.70 V) and CELL_UV_Start (2.70 V) are outside the defaults
    for _, d in replay():
        assert d.charge_voltage_v == pytest.approx(55.2)
        assert d.discharge_voltage_v == pytest.approx(46.4)
        assert not d.full_charge_request


@pytest.mark.parametrize("name", registry.names())
def test_every_protocol_encodes_the_whole_run(name: str) -> None:
    protocol = registry.create(name, flag_outputs=load_outputs())
    for step, d in replay()[::25]:
        frames = protocol.encode_all(protocol.messages_sent(), d, step.now)
        for f in frames:
            msg_name, values = dbc.decode(protocol.db, f.__class__(protocol.dbc_id(f), f.data, f.is_extended))
            assert msg_name and values
