"""Virtual Basengreen/Tianpower and PACE packs on a real byte stream (see docs/simulator.md).

Public API: `Simulator`, `SimulatorOptions`, `FaultSpec`, `PackTruth`, `WireFlags`, `parse_fault_spec`.
Importing this package has no side effects; nothing runs until a `Simulator` is built.
"""

from simulator.core import PROFILES, Simulator, SimulatorOptions
from simulator.faults import FaultSpec, OfflineSchedule, parse_fault_spec
from simulator.pack import Identity, PackTruth, WireFlags

__all__ = [
    "PROFILES",
    "FaultSpec",
    "Identity",
    "OfflineSchedule",
    "PackTruth",
    "Simulator",
    "SimulatorOptions",
    "WireFlags",
    "parse_fault_spec",
]
