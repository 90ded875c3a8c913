"""Contract of every registry (protocol/registry.py is the one mechanism): each entry of each axis
loads, is what its table says it is, declares the name it is registered under, and the axes that
must cover each other do (every BMS family has a driver and a simulated responder)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.app.config import ConfigError, parse_config
from gateway.south.drivers.base import Driver
from gateway.south.drivers.registry import DRIVERS, load_driver
from protocol.bms import registry as bms_registry
from protocol.bms.base import BmsFamily
from protocol.inverter.can import registry as can_registry
from protocol.inverter.can.base import InverterProtocol
from protocol.inverter.rs485 import registry as rs485_registry
from protocol.inverter.rs485.base import Rs485Responder
from protocol.registry import Registry, named_instance
from simulator.core import RESPONDERS, Simulator, SimulatorOptions

AXES: list[tuple[Registry[Any], type]] = [
    (bms_registry.FAMILIES, BmsFamily),
    (DRIVERS, Driver),
    (can_registry.PROTOCOLS, InverterProtocol),
    (rs485_registry.PROTOCOLS, Rs485Responder),
]
ENTRIES = [(registry, kind, name) for registry, kind in AXES for name in registry.names()]


@pytest.mark.parametrize(("registry", "kind", "name"), ENTRIES, ids=[f"{r.kind}:{n}" for r, _, n in ENTRIES])
def test_every_entry_loads_as_declared(registry: Registry[Any], kind: type, name: str) -> None:
    entry = registry.get(name)
    if isinstance(entry, type):
        assert issubclass(entry, kind)
        assert (getattr(entry, "name", None) or getattr(entry, "family", None)) == name
    else:
        assert isinstance(entry, kind) and entry.name == name
    assert registry.get(name) is entry  # loaded once


def test_every_family_has_a_driver_and_a_simulated_responder() -> None:
    assert DRIVERS.names() == bms_registry.names() == RESPONDERS.names()
    for name in bms_registry.names():
        assert load_driver(name).family == name
        sim = Simulator(SimulatorOptions(protocol=name, pacing=False))
        assert sim.responder.family == name  # type: ignore[attr-defined]


def test_every_rs485_protocol_is_built_from_the_configuration() -> None:
    for name in rs485_registry.names():
        config = parse_config({"inverter_rs485": {"protocol": name}}, env={})
        responder = rs485_registry.create(name, config.inverter_rs485)
        assert responder.name == name


@pytest.mark.parametrize(
    ("section", "data", "kind"),
    [
        ("bus", {"bus": [{"name": "a", "url": "socket://127.0.0.1:1", "protocol": "nope"}]}, "BMS protocol"),
        ("simulator", {"simulator": {"protocol": "nope"}}, "BMS protocol"),
        ("can", {"can": {"protocol": "nope"}}, "inverter CAN protocol"),
        ("inverter_rs485", {"inverter_rs485": {"protocol": "nope"}}, "RS485 inverter protocol"),
    ],
)
def test_the_configuration_allows_what_the_registry_knows(
    section: str, data: dict[str, Any], kind: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{section}.*unknown {kind} 'nope' \(allowed: ") as err:
        parse_config(data, env={})
    registry = {
        "BMS protocol": bms_registry.FAMILIES,
        "inverter CAN protocol": can_registry.PROTOCOLS,
        "RS485 inverter protocol": rs485_registry.PROTOCOLS,
    }[kind]
    assert all(name in str(err.value) for name in registry.names())


def test_an_unknown_name_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown BMS protocol 'nope'; known: pace, tianpower"):
        bms_registry.get("nope")
    with pytest.raises(LookupError, match="no driver for BMS protocol 'nope'"):
        load_driver("nope")


def test_a_wrong_entry_is_refused_when_loaded() -> None:
    bad = Registry("BMS protocol", {"pace": "protocol.bms.tianpower:FAMILY"}, named_instance(BmsFamily))
    with pytest.raises(TypeError, match="not a BmsFamily named 'pace'"):
        bad.get("pace")
    with pytest.raises(ValueError, match="expected 'module:attribute'"):
        Registry("x", {"a": "no-colon"}, named_instance(BmsFamily))
