"""The one conftest of the suite.

Layout: the tests mirror the source tree (tests/protocol/, tests/mappings/, tests/gateway/{app,south,
core,north/*,ops/*,cli}/, tests/simulator/, tests/deploy/); helpers shared between test modules live
in tests/support/ and are imported one way (`from tests.support.<module> import ...`); a test module
never imports another test module.

Markers: `e2e` marks process-level tests (they start `bms-gateway` or another process, or serve the
real app on sockets end to end); `pytest -m "not e2e"` is the fast suite, `make test` runs all.
"""

from __future__ import annotations

import pytest

from simulator.core import Simulator, SimulatorOptions
from tests.support.fake_bus import SimulatorBus, SimulatorBusFactory


@pytest.fixture
def simulator_bus() -> SimulatorBusFactory:
    """The fake bus over an in-process simulator: `simulator_bus(protocol="pace", packs=3)` (or any
    `SimulatorOptions` field) -> a `BusClient` whose answers come from the codec's builders."""

    def build(**options: object) -> SimulatorBus:
        opts: dict[str, object] = {"pacing": False, "seed": 7, **options}
        return SimulatorBus(Simulator(SimulatorOptions(**opts)))  # type: ignore[arg-type]

    return build
