"""The simulator: N virtual packs of one family on one shared half-duplex bus.

What it is for: the Python API the runtime, the tests and the benchmarks use (`Simulator`,
`SimulatorOptions`), the ground truth of every pack, the scenario controls (current, profile,
online, cell/temperature overrides, faults), deterministic time (`advance`), `--state` persistence,
and `serve_tcp` which exposes the bus like a transparent RS485-to-Ethernet converter (see
`simulator.bus`).

Determinism: every pack's spread derives from (seed, protocol, address); with the `idle` profile
the state does not move, and no value ever depends on how often it is read.

It must never block the event loop, and never write outside the `state_file` it was given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from protocol.bms import registry as bms_registry
from protocol.bms.base import FrameDecoder
from protocol.errors import RemoteProtocolError
from protocol.registry import Registry
from simulator.faults import Delivery, FaultInjector, FaultSpec
from simulator.pack import PackTruth, ResponderOptions, SimPack, WireFlags

if TYPE_CHECKING:
    from simulator.bus import BusServer

log = logging.getLogger(__name__)

PROFILES = ("idle", "charge", "discharge", "cycle")
PROTOCOLS = bms_registry.names()  # every family has a simulated responder (RESPONDERS)
STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    protocol: str = bms_registry.DEFAULT
    packs: int = 1
    first_address: int = 1
    seed: int = 1
    profile: str = "idle"
    baud: int = 9600
    pacing: bool = True  # 10 bits per byte at `baud`; off for fast tests
    turnaround_s: float = 0.05  # between the end of a request and the first byte of the answer
    faults: FaultSpec = field(default_factory=FaultSpec)
    state_file: str | Path | None = None
    start_epoch_s: float | None = None  # the simulation's wall-clock origin (default: now)
    history_records: int = 0  # timing records each pack holds at start (history download tests)
    time_scale: float = 1.0  # simulated seconds per real second while serving
    tick_s: float = 0.2  # physics step of the serving ticker (real seconds)
    pace_version: int = 0x25  # PACE: 0x25 (default) or 0x20

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if not 1 <= self.packs <= 15:
            raise ValueError(f"packs must be within 1..15, got {self.packs}")
        if self.first_address < 0 or self.first_address + self.packs - 1 > 15:
            raise ValueError(
                f"addresses {self.first_address}..{self.first_address + self.packs - 1} do not fit 0..15"
            )
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.baud <= 0 or self.turnaround_s < 0 or self.time_scale <= 0 or self.tick_s <= 0:
            raise ValueError("baud, time_scale and tick_s must be positive and turnaround_s not negative")
        if self.history_records < 0:
            raise ValueError("history_records must not be negative")
        if self.pace_version not in (0x20, 0x25):
            raise ValueError("pace_version must be 0x20 or 0x25")


class Responder(Protocol):
    """A family's wire behaviour: request bytes in, response bytes out (simulator.*_wire)."""

    def new_decoder(self) -> FrameDecoder: ...

    def create_pack(self, address: int, rng: random.Random) -> SimPack: ...

    def respond(self, sim: Simulator, raw: bytes) -> tuple[int | None, bytes]:
        """(address the request was for, response bytes or b"" for silence)."""
        ...

    def wire_flags(self, sim: Simulator, address: int) -> WireFlags:
        """The flags the pack's status answer carries, as the codec names them."""
        ...

    def fault_flag_names(self) -> tuple[str, ...]:
        """The status flags of kind "fault" the pack can report (what `FaultSpec.hardware` may name),
        from the codec's flag table."""
        ...

    def is_invalid(self, data: bytes) -> bool:
        """True when the family's codec rejects `data` as a frame (used by the corruption fault)."""
        ...

    def protected(self, index: int, length: int) -> bool:
        """True for framing bytes the corruption fault must leave alone."""
        ...


class ResponderClass(Protocol):
    family: str

    def from_options(self, options: ResponderOptions) -> Responder: ...


def _responder_class(name: str, loaded: Any) -> ResponderClass:
    if not isinstance(loaded, type) or getattr(loaded, "family", None) != name:
        raise TypeError(f"{name!r} is registered as {loaded!r}, not a responder of family {name!r}")
    return cast(ResponderClass, loaded)


# The simulated side of every BMS family (the one registry mechanism, `protocol.registry`).
RESPONDERS: Registry[ResponderClass] = Registry(
    "simulated BMS family",
    {
        "tianpower": "simulator.tianpower:TianpowerResponder",
        "pace": "simulator.pace:PaceResponder",
    },
    _responder_class,
)


def _responder(options: SimulatorOptions) -> Responder:
    return RESPONDERS.get(options.protocol).from_options(options)


def check_faults(spec: FaultSpec, options: SimulatorOptions) -> None:
    """ValueError when `spec` names a pack that `options` does not simulate, or a hardware fault
    flag the simulated family does not report as a fault (its codec names them): the
    configuration's check, the same test the simulator makes when it starts and when its faults
    change."""
    _check_addresses(spec, options)
    if spec.hardware:
        _check_hardware(spec, _responder(options).fault_flag_names(), options.protocol)


def _check_addresses(spec: FaultSpec, options: SimulatorOptions) -> None:
    simulated = range(options.first_address, options.first_address + options.packs)
    named = {
        "offline": spec.offline.keys(),
        "slow": spec.slow.keys(),
        "sleep": spec.sleeping,
        "hw": spec.hardware.keys(),
    }
    for key, addresses in named.items():
        missing = sorted(a for a in addresses if a not in simulated)
        if missing:
            raise ValueError(
                f"{key}: pack {', '.join(map(str, missing))} is not simulated "
                f"(addresses {simulated.start}..{simulated.stop - 1})"
            )


def _check_hardware(spec: FaultSpec, valid: tuple[str, ...], protocol: str) -> None:
    for address, names in sorted(spec.hardware.items()):
        unknown = sorted(set(names) - set(valid))
        if unknown:
            raise ValueError(
                f"hardware fault {', '.join(map(repr, unknown))} for pack {address} is not a fault flag "
                f"of {protocol}; valid: {', '.join(valid)}"
            )


class Simulator:
    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.responder: Responder = _responder(options)
        self.now_s = 0.0  # simulation time since start
        self.epoch0_s = options.start_epoch_s if options.start_epoch_s is not None else time.time()
        self.profile = options.profile
        self.packs: dict[int, SimPack] = {}
        for address in range(options.first_address, options.first_address + options.packs):
            rng = random.Random(f"{options.seed}:{options.protocol}:{address}")
            self.packs[address] = self.responder.create_pack(address, rng)
        self._check_faults(options.faults)
        self._injector = FaultInjector(random.Random(f"{options.seed}:faults"), options.faults)
        self._apply_faults(options.faults)
        self.dirty = False
        self.wall_time: Callable[[], float] = time.monotonic  # replaceable in tests (sleep wake-up)
        if options.history_records:
            self._prefill_history(options.history_records)
        if options.state_file is not None and Path(options.state_file).exists():
            self.load_state(options.state_file)
        for pack in self.packs.values():
            pack.record("start_system", self.epoch_s)

    # --- scenario API -------------------------------------------------------------------------

    @property
    def addresses(self) -> tuple[int, ...]:
        return tuple(self.packs)

    @property
    def epoch_s(self) -> float:
        """The simulation's wall clock (what a pack's clock shows, before its own offset)."""
        return self.epoch0_s + self.now_s

    def pack(self, address: int) -> SimPack:
        try:
            return self.packs[address]
        except KeyError:
            raise KeyError(f"no simulated pack at address {address} (have {list(self.packs)})") from None

    def truth(self, address: int) -> PackTruth:
        return self.pack(address).measure(self.epoch_s)

    def wire_flags(self, address: int) -> WireFlags:
        """The status flags the pack reports right now, by the codec's names (e.g. "CELL_OV_Prot",
        "Cell OV protection"): what a gateway's snapshot should show."""
        self.pack(address)
        return self.responder.wire_flags(self, address)

    def set_current(self, address: int, amps: float | None) -> None:
        """Force a pack's current (+ = charging); None returns it to the profile."""
        self.pack(address).current_override_a = amps

    def set_profile(self, profile: str) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
        self.profile = profile

    def set_online(self, address: int, online: bool) -> None:
        self.pack(address).online = online

    def set_cell_voltage(self, address: int, cell: int, volts: float | None) -> None:
        """Override cell `cell` (1-based) of a pack; None removes the override."""
        pack = self.pack(address)
        if not 1 <= cell <= len(pack.physics.cells):
            raise ValueError(f"cell {cell} outside 1..{len(pack.physics.cells)}")
        if volts is None:
            pack.cell_override_v.pop(cell - 1, None)
        else:
            pack.cell_override_v[cell - 1] = volts

    def set_ambient(self, address: int, celsius: float) -> None:
        """Ambient temperature of a pack (cells and MOS follow with their time constants)."""
        self.pack(address).physics.ambient_c = celsius

    def set_temperatures(self, address: int, celsius: float) -> None:
        """Put ambient, every cell sensor and the MOS at `celsius` at once (protection tests)."""
        ph = self.pack(address).physics
        ph.ambient_c = celsius
        ph.cell_temps_c = [celsius + o for o in ph.cell_temp_offsets_c]
        ph.mos_temp_c = celsius

    def short_circuit(self, address: int) -> None:
        """Short the pack's terminals: the short-circuit protection trips at once (discharge MOS off,
        event, counter) and releases after the over-current recovery time."""
        self.pack(address).short_circuit(self.now_s, self.epoch_s)
        self.dirty = True

    def clear_history(self, address: int) -> None:
        """The tool's "Delete Record" (no wire command for it is publicly documented)."""
        self.pack(address).history.clear()
        self.dirty = True

    def sleep(self, address: int) -> None:
        self.pack(address).sleeping = True

    def wake(self, address: int) -> None:
        """The reset button (manual §4.5.3)."""
        self.pack(address).wake()

    @property
    def faults(self) -> FaultSpec:
        return self._injector.spec

    @faults.setter
    def faults(self, spec: FaultSpec) -> None:
        """Replace the fault spec (ValueError, and nothing changed, for a hardware fault flag the
        family does not report as a fault)."""
        self._check_faults(spec)
        self._injector.spec = spec
        self._apply_faults(spec)

    def _check_faults(self, spec: FaultSpec) -> None:
        _check_addresses(spec, self.options)
        _check_hardware(spec, self.responder.fault_flag_names(), self.options.protocol)

    def _apply_faults(self, spec: FaultSpec) -> None:
        for address in spec.sleeping:
            if address in self.packs:
                self.packs[address].sleeping = True
        for address, pack in self.packs.items():
            pack.hardware_faults = frozenset(spec.hardware.get(address, ()))

    @property
    def fault_counters(self) -> Mapping[str, int]:
        return self._injector.snapshot()

    def count(self, name: str) -> None:
        self._injector.count(name)

    # --- time -----------------------------------------------------------------------------------

    def advance(self, seconds: float, *, max_step_s: float | None = None) -> None:
        """Step every pack's physics by `seconds` of simulated time (deterministically).

        Steps are 1 s, 0.1 s while a protection delay runs; `max_step_s` replaces the 1 s (coarser
        for long runs, finer to catch a threshold crossing early), never the 0.1 s."""
        if seconds < 0:
            raise ValueError("cannot advance by a negative time")
        remaining = seconds
        records_before = sum(p.history.count for p in self.packs.values())
        while remaining > 1e-12:
            step = min(p.max_step_s() for p in self.packs.values())
            if max_step_s is not None and not any(p.engine.pending() for p in self.packs.values()):
                step = max_step_s
            dt = min(remaining, step)
            self.now_s += dt
            for p in self.packs.values():
                p.step(dt, self.now_s, self.epoch_s, self.profile)
            remaining -= dt
        if sum(p.history.count for p in self.packs.values()) != records_before:
            self.dirty = True  # new history records: the state file is behind

    # --- the wire -------------------------------------------------------------------------------

    def offline(self, address: int) -> bool:
        pack = self.packs.get(address)
        if pack is None:
            return True
        sched = self.faults.offline.get(address)
        return not pack.online or (sched is not None and sched.offline_at(self.now_s))

    def answering_pack(self, address: int) -> SimPack | None:
        """The pack at `address` if it answers a request now: present, online and awake.

        Called once per request addressed to `address`: the request counts as bus activity for the
        pack's sleep timer (`SimPack.on_request`), and an offline or sleeping pack's silence is
        counted (`offline_ignored`, `sleep_ignored`). None: stay silent.
        """
        pack = self.packs.get(address)
        if pack is None:
            return None
        if self.offline(address):
            self.count("offline_ignored")
            return None
        if not pack.on_request(self.wall_time(), self.now_s):
            self.count("sleep_ignored")
            return None
        return pack

    def deliver(self, raw: bytes) -> Delivery:
        """One complete request frame -> what goes on the wire (faults applied, no pacing)."""
        try:
            address, response = self.responder.respond(self, raw)
        except RemoteProtocolError:
            address, response = None, b""
        return self._injector.apply(
            raw, response, address, self.responder.is_invalid, self.responder.protected
        )

    def split_requests(self, data: bytes) -> list[bytes]:
        decoder = self.responder.new_decoder()
        decoder.feed(data)
        return [f.raw for f in decoder.frames() if not isinstance(f, RemoteProtocolError)]

    async def handle(self, request: bytes) -> bytes:
        """In-process request -> response bytes (content faults applied, no pacing, may be b"")."""
        return b"".join(self.deliver(raw).data for raw in self.split_requests(request))

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0, *, pty: bool = False) -> _Serving:
        """`async with sim.serve_tcp(host, port) as server:` -> server.port, server.pty_path."""
        return _Serving(self, host, port, pty)

    # --- persistence ----------------------------------------------------------------------------

    def state_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "protocol": self.options.protocol,
            "saved_at_epoch_s": self.epoch_s,
            "packs": {str(a): p.to_json() for a, p in self.packs.items()},
        }

    def save_state(self, path: str | Path | None = None) -> None:
        target = Path(path or self.options.state_file or "")
        if not str(target):
            raise ValueError("no state file configured")
        data = json.dumps(self.state_json(), indent=1, sort_keys=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name, dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.dirty = False

    def load_state(self, path: str | Path) -> None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read simulator state {path}: {err}") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not a simulator state file (format {STATE_FORMAT})")
        if data.get("protocol") != self.options.protocol:
            raise ValueError(
                f"{path}: saved for protocol {data.get('protocol')!r}, not {self.options.protocol!r}"
            )
        for key, pdata in dict(data.get("packs", {})).items():
            address = int(key)
            if address in self.packs and isinstance(pdata, dict):
                self.packs[address].restore(pdata)

    def _prefill_history(self, count: int) -> None:
        interval = next(iter(self.packs.values())).history.interval_s
        for pack in self.packs.values():
            for k in range(count, 0, -1):
                pack.record("timing", self.epoch_s - k * interval)


class _Serving:
    """Async context manager around `simulator.bus.BusServer`."""

    def __init__(self, sim: Simulator, host: str, port: int, pty: bool) -> None:
        self._sim = sim
        self._host = host
        self._port = port
        self._pty = pty
        self._server: BusServer | None = None

    async def __aenter__(self) -> BusServer:
        from simulator.bus import BusServer

        self._server = BusServer(self._sim, self._host, self._port, pty=self._pty)
        await self._server.start()
        return self._server

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        await self._server.close()
