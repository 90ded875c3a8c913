"""Fault injection for the simulated bus: what can go wrong on a real RS485 line, on purpose, counted.

What it is for: per-byte corruption, dropped and truncated responses, extra delay and jitter,
garbage between frames, the master's request echoed back, packs going offline and back on a
schedule, slow packs and sleeping packs; and BMS hardware faults (a disconnected NTC, a failed MOS):
status flags of kind "fault" a pack reports in its status answers, by the family codec's flag names
(the simulator checks them against the family's flag table, see `Simulator.faults`). Every injected
fault increments a counter so a test can prove that the gateway rejected exactly the corrupted frames.

`FaultSpec` is immutable and can be replaced at run time (`sim.faults = FaultSpec(...)`);
`parse_fault_spec` reads the `--faults` syntax (see docs/simulator.md).
It must never perform I/O; randomness comes from a seeded `random.Random` passed in.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class OfflineSchedule:
    """The pack is silent for `offline_s` at the start of every `period_s` window (after `start_s`)."""

    period_s: float
    offline_s: float
    start_s: float = 0.0

    def offline_at(self, t_s: float) -> bool:
        if t_s < self.start_s or self.period_s <= 0:
            return False
        return (t_s - self.start_s) % self.period_s < self.offline_s


@dataclass(frozen=True, slots=True)
class FaultSpec:
    corrupt_byte_prob: float = 0.0  # each byte of a response (between start and end markers)
    drop_prob: float = 0.0  # the response is not sent at all
    truncate_prob: float = 0.0  # only a prefix of the response is sent
    extra_delay_s: float = 0.0  # added to the turnaround of every response
    jitter_s: float = 0.0  # uniform 0..jitter_s added on top
    garbage_prob: float = 0.0  # random bytes before the response
    echo: bool = False  # the master's request is sent back first (transceiver echo)
    offline: Mapping[int, OfflineSchedule] = field(default_factory=lambda: MappingProxyType({}))
    slow: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))  # address -> extra s
    sleeping: frozenset[int] = frozenset()  # addresses put to sleep when the spec is applied
    # address -> status flag names of kind "fault" the pack reports (the family codec's names)
    hardware: Mapping[int, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in ("corrupt_byte_prob", "drop_prob", "truncate_prob", "garbage_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {v}")
        for name in ("extra_delay_s", "jitter_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if any(v < 0 for v in self.slow.values()):
            raise ValueError("slow pack delays must not be negative")
        for address, s in self.offline.items():
            if s.period_s <= 0 or s.offline_s < 0 or s.offline_s > s.period_s:
                raise ValueError(
                    f"offline pack {address}: the time off ({s.offline_s:g} s) must be within 0 and the "
                    f"period ({s.period_s:g} s); `sleep={address}` keeps a pack silent"
                )


COUNTER_NAMES = (
    "responses",  # responses produced by the packs (before faults)
    "corrupted_responses",
    "corrupted_bytes",
    "dropped",
    "truncated",
    "delayed",
    "garbage_inserted",
    "echoed",
    "offline_ignored",  # requests a scheduled/forced offline pack did not answer
    "slow_responses",
    "sleep_ignored",  # requests a sleeping pack did not answer
    "hardware_fault_responses",  # status answers carrying an injected hardware fault flag
)

_PROB_KEYS = {
    "corrupt": "corrupt_byte_prob",
    "drop": "drop_prob",
    "truncate": "truncate_prob",
    "garbage": "garbage_prob",
}


def parse_fault_spec(text: str) -> FaultSpec:
    """Parse `--faults`: comma-separated items, e.g.
    `corrupt=0.01,drop=0.05,truncate=0.02,garbage=0.1,delay=0.05,jitter=0.02,echo,
    offline=2:60/10+3:30/5,slow=4:0.5,sleep=5+6,hw=3:NTC_Disconnected+CHG_MOS_Fault`
    (`hw` may repeat; flag names are the family codec's, checked by the simulator).
    Raises ValueError naming the bad item."""
    kw: dict[str, object] = {}
    offline: dict[int, OfflineSchedule] = {}
    slow: dict[int, float] = {}
    sleeping: set[int] = set()
    hardware: dict[int, set[str]] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            if key == "echo" and not sep:
                kw["echo"] = True
            elif key in _PROB_KEYS and sep:
                kw[_PROB_KEYS[key]] = float(value)
            elif key == "delay" and sep:
                kw["extra_delay_s"] = float(value)
            elif key == "jitter" and sep:
                kw["jitter_s"] = float(value)
            elif key == "offline" and sep:
                for part in value.split("+"):
                    addr, _, sched = part.partition(":")
                    period, _, off = sched.partition("/")
                    offline[_address(addr)] = OfflineSchedule(float(period), float(off))
            elif key == "slow" and sep:
                for part in value.split("+"):
                    addr, _, secs = part.partition(":")
                    slow[_address(addr)] = float(secs)
            elif key == "sleep" and sep:
                sleeping.update(_address(a) for a in value.split("+"))
            elif key == "hw" and sep:
                addr, colon, names = value.partition(":")
                flags = {n.strip() for n in names.split("+") if n.strip()}
                if not colon or not flags:
                    raise ValueError("expected hw=ADDRESS:FLAG[+FLAG...]")
                hardware.setdefault(_address(addr), set()).update(flags)
            else:
                raise ValueError("unknown item")
        except ValueError as err:
            raise ValueError(f"--faults: cannot use {item!r} ({err}); see docs/simulator.md") from None
    try:
        return FaultSpec(
            offline=MappingProxyType(offline),
            slow=MappingProxyType(slow),
            sleeping=frozenset(sleeping),
            hardware=MappingProxyType({a: frozenset(n) for a, n in hardware.items()}),
            **kw,  # type: ignore[arg-type]
        )
    except ValueError as err:
        raise ValueError(f"--faults: {err}; see docs/simulator.md") from None


def _address(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise ValueError(f"address {value} out of range")
    return value


@dataclass(frozen=True, slots=True)
class Delivery:
    """What goes on the wire for one request: the echo (at once), then after the turnaround and
    `extra_delay_s` the garbage and the (possibly damaged) response. Any part may be empty."""

    echo: bytes
    garbage: bytes
    response: bytes
    extra_delay_s: float

    @property
    def data(self) -> bytes:
        return self.echo + self.garbage + self.response


@dataclass(slots=True)
class FaultInjector:
    rng: random.Random
    spec: FaultSpec = field(default_factory=FaultSpec)
    counters: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> Mapping[str, int]:
        return MappingProxyType({name: self.counters[name] for name in COUNTER_NAMES})

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def apply(
        self,
        request: bytes,
        response: bytes,
        address: int | None,
        is_invalid: Callable[[bytes], bool],
        protected: Callable[[int, int], bool],
    ) -> Delivery:
        """Apply the spec to one response. `is_invalid(frame)` says whether the family's codec would
        reject the bytes; `protected(index, length)` marks bytes that must not be corrupted (framing
        bytes whose damage would merge frames instead of failing a checksum)."""
        spec = self.spec
        echo = b""
        if spec.echo:
            echo = request
            self.count("echoed")
        delay = spec.extra_delay_s + (self.rng.uniform(0.0, spec.jitter_s) if spec.jitter_s else 0.0)
        if address is not None and spec.slow.get(address):
            delay += spec.slow[address]
            self.count("slow_responses")
        if delay > 0:
            self.count("delayed")
        if not response:
            return Delivery(echo, b"", b"", delay)
        self.count("responses")
        if spec.drop_prob and self.rng.random() < spec.drop_prob:
            self.count("dropped")
            return Delivery(echo, b"", b"", delay)
        garbage = b""
        if spec.garbage_prob and self.rng.random() < spec.garbage_prob:
            garbage = self._garbage()
            self.count("garbage_inserted")
        out = response
        # Each damaged response is counted once, as dropped, truncated or corrupted: a truncated
        # response is not corrupted as well (the damage could be cut off, and the counters would no
        # longer add up to the answers a master lost).
        if spec.truncate_prob and self.rng.random() < spec.truncate_prob and len(out) > 1:
            out = out[: self.rng.randrange(1, len(out))]
            self.count("truncated")
        elif spec.corrupt_byte_prob:
            out = self._corrupt(response, is_invalid, protected)
        return Delivery(echo, garbage, out, delay)

    def _garbage(self) -> bytes:
        # Bytes that are not a frame start of either family (0x7E, 0x7C, '~') so they cannot be
        # mistaken for the beginning of a frame: a decoder must skip them.
        allowed = [b for b in range(256) if b not in (0x7E, 0x7C, 0x0D)]
        return bytes(self.rng.choice(allowed) for _ in range(self.rng.randint(1, 8)))

    def _corrupt(
        self, frame: bytes, is_invalid: Callable[[bytes], bool], protected: Callable[[int, int], bool]
    ) -> bytes:
        p = self.spec.corrupt_byte_prob
        candidates = [i for i in range(len(frame)) if not protected(i, len(frame))]
        hit = [i for i in candidates if self.rng.random() < p]
        if not hit:
            return frame
        data = bytearray(frame)
        for i in hit:
            data[i] = self._other_byte(frame, i)
        # Several changes can cancel out in a weak checksum: keep changing until the codec would
        # reject the frame, so "corrupted" always means "fails its check".
        attempts = 0
        while not is_invalid(bytes(data)):
            i = self.rng.choice(candidates)
            data[i] = self._other_byte(bytes(data), i)
            hit.append(i)
            attempts += 1
            if attempts > 64:
                break
        self.count("corrupted_responses")
        self.count("corrupted_bytes", len(set(hit)))
        return bytes(data)

    def _other_byte(self, frame: bytes, i: int) -> int:
        old = frame[i]
        if 0x30 <= old <= 0x39 or 0x41 <= old <= 0x46:  # ASCII hex stays ASCII hex (PACE)
            choices = [c for c in b"0123456789ABCDEF" if c != old]
            return self.rng.choice(choices)
        value = old
        while value == old or value in (0x7E, 0x7C, 0x0D):
            value = self.rng.randrange(256)
        return value
