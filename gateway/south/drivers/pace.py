"""PACE driver: which PACE requests to send for each read/write and how to turn the answers into model
objects. Handles VER 0x25 (PbmsTools packs) and VER 0x20 (incl. EG4's CID1 0x4A).

The driver never touches a transport: it builds request bytes with `protocol.bms.pace`, hands them to
the bus owner (`BusClient.transact`) and converts validated frames. An RTN other than 0 becomes
`DeviceError`; an answer whose INFO does not decode raises `RemoteProtocolError`.

Inferred behaviour (behind `allow_inferred=True`): the MOSFET on/off payload convention (see
`protocol.bms.pace.commands.MOS_ON`).

The bank read through the master (*inferred*, see docs/protocols.md): the answer carries no
addresses, and the reference does not say how a master reports a slave that is silent. Blocks are in
address order and the first is the master's own. With as many blocks as configured packs, block i is
the i-th configured address. With fewer (a pack missing somewhere), every order-preserving placement
of the blocks on the configured addresses is tried against each pack's fingerprint from its last
read (cell count, temperature count, design capacity, full capacity within 1 %, cycles unchanged or
one more); a block is attributed only when every consistent placement puts it on the same address,
the others are left out (those packs go stale rather than show another pack's values).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from gateway.core.model import (
    ClockReading,
    PackIdentity,
    ParameterReading,
    ParameterSet,
    Telemetry,
    Temperature,
    TempRole,
)
from gateway.south.drivers.base import (
    BusClient,
    Control,
    DeviceError,
    Driver,
    HistoryRecord,
    NoResponse,
    ParameterWrite,
    Priority,
    Unsupported,
)
from mappings.bms.params import ParameterTable, ParamSpec, load_table
from protocol.bms.base import Frame, FrameDecoder
from protocol.bms.pace import commands as c
from protocol.bms.pace import values as v
from protocol.bms.pace.frame import CID1_LFP, VER_20, VER_25, PaceDecoder, PaceFrame, rtn_text
from protocol.errors import LocalProtocolError, RemoteProtocolError

Status = v.StatusBlock | v.StatusV20 | v.StatusEg4


def temperatures(temps_c: tuple[float, ...]) -> tuple[Temperature, ...]:
    """Sensor roles: with 6 or more sensors the last two are MOSFET and environment (PbmsTools' order),
    the rest are cell sensors; with fewer, all are cell sensors."""
    n = len(temps_c)
    cells = n - 2 if n >= 6 else n
    out = [Temperature(TempRole.CELL, i + 1, t) for i, t in enumerate(temps_c[:cells])]
    if n >= 6:
        out.append(Temperature(TempRole.MOS, 1, temps_c[cells]))
        out.append(Temperature(TempRole.AMBIENT, 1, temps_c[cells + 1]))
    return tuple(out)


def telemetry_of(block: v.AnalogBlock, status: Status, now: float) -> Telemetry:
    """One pack's Telemetry from its analog block and status (SOC = remaining / full capacity, or
    remaining / design capacity when the pack sends no full capacity)."""
    flags = status.flags()
    soc = block.soc_pct
    if soc is None and block.design_capacity_ah:
        soc = round(min(100.0, block.remaining_ah / block.design_capacity_ah * 100.0), 2)
    if soc is None:
        raise RemoteProtocolError("pace analog answer carries no full or design capacity: SOC unknown")
    heater = status.heater_on if isinstance(status, v.StatusV20 | v.StatusEg4) else None
    return Telemetry.build(
        measured_at=now,
        cell_voltages_v=block.cell_voltages_v,
        temperatures=temperatures(block.temperatures_c),
        voltage_v=block.voltage_v,
        current_a=block.current_a,
        soc_pct=soc,
        soh_pct=block.soh_pct,
        full_capacity_ah=block.full_capacity_ah,
        remaining_capacity_ah=block.remaining_ah,
        nominal_capacity_ah=block.design_capacity_ah,
        cycles=block.cycles,
        charge_mos_on=status.charge_mos_on,
        discharge_mos_on=status.discharge_mos_on,
        heater_on=heater,
        balancing_cells=status.balancing_cells,
        flags=flags.items,
    )


@dataclass(frozen=True, slots=True)
class BlockFingerprint:
    """What identifies a pack's block in a whole-bank answer (the wire carries no address)."""

    cells: int
    temperatures: int
    design_capacity_ah: float | None
    full_capacity_ah: float | None
    cycles: int | None

    @classmethod
    def of(cls, block: v.AnalogBlock) -> BlockFingerprint:
        return cls(
            len(block.cell_voltages_v),
            len(block.temperatures_c),
            block.design_capacity_ah,
            block.full_capacity_ah,
            block.cycles,
        )

    def could_become(self, later: BlockFingerprint) -> bool:
        """True when `later` may be the same pack read again some seconds after this one."""
        if (self.cells, self.temperatures, self.design_capacity_ah) != (
            later.cells,
            later.temperatures,
            later.design_capacity_ah,
        ):
            return False
        full, later_full = self.full_capacity_ah, later.full_capacity_ah
        if full is not None and later_full is not None and abs(later_full - full) > 0.01 * max(full, 1.0):
            return False
        if self.cycles is not None and later.cycles is not None:
            return 0 <= later.cycles - self.cycles <= 1
        return True


def attribute_bank_blocks(
    fingerprints: Sequence[BlockFingerprint],
    addresses: Sequence[int],
    known: Mapping[int, BlockFingerprint],
) -> dict[int, int]:
    """Block index -> address for a whole-bank answer (*inferred*, see the module docstring).

    `addresses` are the bank's configured addresses, master first, in order; `known` the fingerprint
    of each pack's last attributed block. Raises RemoteProtocolError when no placement fits."""
    n, m = len(fingerprints), len(addresses)
    if n > m:
        raise RemoteProtocolError(f"pace bank read: {n} blocks for {m} configured packs")
    if n == m:
        return {i: addresses[i] for i in range(n)}
    placements: list[tuple[int, ...]] = []
    for rest in itertools.combinations(range(1, m), n - 1):
        slots = (0, *rest)  # the master answers, so block 0 is always its own
        if all(
            addresses[slot] not in known or known[addresses[slot]].could_become(fingerprints[i])
            for i, slot in enumerate(slots)
        ):
            placements.append(slots)
    if not placements:
        raise RemoteProtocolError(
            f"pace bank read: {n} blocks for {m} configured packs match none of the packs last seen"
        )
    return {
        i: addresses[placements[0][i]] for i in range(n) if all(p[i] == placements[0][i] for p in placements)
    }


def _answer_from(address: int) -> Callable[[Frame], bool]:
    """Matches the answer of the pack at `address` (a response: never our own request's echo)."""

    def match(frame: Frame) -> bool:
        return isinstance(frame, PaceFrame) and frame.address == address and not frame.is_request

    return match


# Controls that are v25 switch commands: (code to switch on, code to switch off, configuration bit
# the acknowledgement must show set when on).
_SWITCHES: dict[Control, tuple[c.SwitchCode, c.SwitchCode, int]] = {
    Control.BUZZER: (c.SwitchCode.BUZZER_ON, c.SwitchCode.BUZZER_OFF, 0x01),
    Control.SOUND_LIGHT_ALARM: (c.SwitchCode.LED_ALARM_ON, c.SwitchCode.LED_ALARM_OFF, 0x20),
    Control.CURRENT_LIMITER: (c.SwitchCode.LIMITER_ON, c.SwitchCode.LIMITER_OFF, 0x10),
}


class PaceDriver(Driver):
    family: ClassVar[str] = "pace"
    controls: ClassVar[Mapping[Control, str]] = {
        Control.CHARGE_MOS: "CID2 0x9A; payload convention inferred: needs both opt-ins",
        Control.DISCHARGE_MOS: "CID2 0x9B; payload convention inferred: needs both opt-ins",
        Control.BUZZER: "CID2 0x99 (alarm function switch)",
        Control.SOUND_LIGHT_ALARM: "CID2 0x99 LED alarm (alarm function switch)",
        Control.CURRENT_LIMITER: "CID2 0x99 charge-current limiter",
        Control.SHUTDOWN: "CID2 0x9C",
    }
    # PACE BMSs refuse to switch both MOSFETs off (PACE v25 command set, nkinnan/esphome-pace-bms).
    refuses_both_mos_off: ClassVar[bool] = True
    inferred_controls: ClassVar[frozenset[Control]] = frozenset({Control.CHARGE_MOS, Control.DISCHARGE_MOS})

    def __init__(self, *, version: int = VER_25, cid1: int = CID1_LFP, allow_inferred: bool = False) -> None:
        self.version = version
        self.cid1 = cid1
        self.allow_inferred = allow_inferred
        # Dialect learned per address by `probe` (answer VER / CID1); defaults above otherwise.
        self._dialects: dict[int, tuple[int, int]] = {}
        self._table: ParameterTable | None = None
        # Whole-bank reads: each pack's fingerprint from its last attributed block.
        self._bank_fingerprints: dict[int, BlockFingerprint] = {}

    # ---- plumbing ----------------------------------------------------------------------------

    def new_decoder(self) -> FrameDecoder:
        return PaceDecoder()

    @property
    def table(self) -> ParameterTable:
        if self._table is None:
            self._table = load_table("pace")
        return self._table

    def dialect(self, address: int) -> tuple[int, int]:
        return self._dialects.get(address, (self.version, self.cid1))

    def set_dialect(self, address: int, version: int, cid1: int) -> None:
        self._dialects[address] = (version, cid1)

    def variant(self, address: int) -> v.Variant:
        return c.variant_of(*self.dialect(address))

    async def _ask(
        self, bus: BusClient, address: int, request: bytes, *, priority: Priority = Priority.POLL
    ) -> PaceFrame:
        """Send, wait for this address's answer (never the echo), turn RTN != 0 into DeviceError."""
        frame = await bus.transact(request, _answer_from(address), priority=priority, address=address)
        if frame is None or not isinstance(frame, PaceFrame):
            raise NoResponse(f"pace pack {address}: no answer")
        if frame.command != 0:
            raise DeviceError(
                frame.command,
                f"pace pack {address} answered RTN 0x{frame.command:02X} ({rtn_text(frame.command)})",
            )
        return frame

    def _need_v25(self, address: int, what: str) -> None:
        if self.variant(address) is not v.Variant.V25:
            raise Unsupported(f"pace: {what} is only known for protocol version 0x25")

    # ---- reads -------------------------------------------------------------------------------

    async def _analog_status(self, bus: BusClient, address: int) -> tuple[v.AnalogBlock, Status]:
        ver, cid1 = self.dialect(address)
        variant = c.variant_of(ver, cid1)
        a = await self._ask(bus, address, c.analog_request(address, version=ver, cid1=cid1))
        analog = v.decode_analog(a.info, variant=variant)
        s = await self._ask(bus, address, c.status_request(address, version=ver, cid1=cid1))
        status: Status
        if variant is v.Variant.V25:
            status = v.decode_status(s.info).packs[0]
        elif variant is v.Variant.EG4:
            status = v.decode_status_eg4(s.info)
        else:
            status = v.decode_status_v20(s.info)
        return analog.packs[0], status

    async def read_realtime(self, bus: BusClient, address: int, now: float) -> Telemetry:
        block, status = await self._analog_status(bus, address)
        return telemetry_of(block, status, now)

    async def read_pack_count(self, bus: BusClient, master: int) -> int:
        """Packs in the bank, as the master reports them (CID2 0x90)."""
        ver, cid1 = self.dialect(master)
        f = await self._ask(bus, master, c.pack_count_request(master, version=ver, cid1=cid1))
        return c.decode_pack_count(f.info)

    async def read_bank_realtime(
        self, bus: BusClient, master: int, now: float, *, addresses: Sequence[int] | None = None
    ) -> Mapping[int, Telemetry]:
        """Every pack through the master: pack count (0x90), then analog and status with INFO 0xFF.
        Each answer is parsed by the counts it declares (with the byte real masters send after each
        pack's block, see `protocol.bms.pace.values.decode_bank_blocks`); the analog and status blocks
        must declare the same cell and temperature counts, and each pack the counts it reported
        before, or the whole answer is refused (RemoteProtocolError: nothing is published).
        `addresses` are the bank's configured packs (master first); without them the i-th block is
        pack master + i. With fewer blocks than configured packs only the blocks that can be
        attributed unambiguously are returned (see `attribute_bank_blocks`)."""
        self._need_v25(master, "the whole-bank read through the master")
        try:
            expected: int | None = await self.read_pack_count(bus, master)
        except DeviceError:
            expected = None  # firmware without 0x90: the analog answer's own count is used
        a = await self._ask(bus, master, c.analog_request(master, bank=True))
        analog = v.decode_analog(a.info, bank=True)
        s = await self._ask(bus, master, c.status_request(master, bank=True))
        status = v.decode_status(s.info, bank=True)
        if len(analog.packs) != len(status.packs):
            raise RemoteProtocolError(
                f"pace bank read: the analog answer declares {len(analog.packs)} packs, "
                f"the status answer {len(status.packs)}"
            )
        if expected is not None and expected != len(analog.packs):
            raise RemoteProtocolError(
                f"pace bank read: the master counts {expected} packs but answered {len(analog.packs)} blocks"
            )
        for i, (block, st) in enumerate(zip(analog.packs, status.packs, strict=True)):
            counts = (len(block.cell_voltages_v), len(block.temperatures_c))
            if counts != (len(st.cell_warnings), len(st.temp_warnings)):
                raise RemoteProtocolError(
                    f"pace bank read: block {i + 1} declares {counts[0]} cells and {counts[1]} temperatures "
                    f"in the analog answer but {len(st.cell_warnings)} and {len(st.temp_warnings)} in the "
                    "status answer"
                )
        if addresses is None:
            addresses = [master + i for i in range(len(analog.packs))]
        if master not in addresses:
            raise LocalProtocolError(
                f"the bank's configured addresses {list(addresses)} lack the master {master}"
            )
        addresses = [master, *sorted(a for a in addresses if a != master)]  # blocks come in address order
        fingerprints = [BlockFingerprint.of(block) for block in analog.packs]
        placed = attribute_bank_blocks(fingerprints, addresses, self._bank_fingerprints)
        for i, address in placed.items():
            before = self._bank_fingerprints.get(address)
            now_seen = fingerprints[i]
            if before is not None and (before.cells, before.temperatures) != (
                now_seen.cells,
                now_seen.temperatures,
            ):
                raise RemoteProtocolError(
                    f"pace bank read: pack {address} reported {before.cells} cells and {before.temperatures} "
                    f"temperatures before, {now_seen.cells} and {now_seen.temperatures} now"
                )
        out: dict[int, Telemetry] = {}
        for i, address in placed.items():
            self._bank_fingerprints[address] = fingerprints[i]
            out[address] = telemetry_of(analog.packs[i], status.packs[i], now)
        return out

    async def read_identity(self, bus: BusClient, address: int) -> PackIdentity:
        ver, cid1 = self.dialect(address)
        if self.variant(address) is v.Variant.V25:
            hw = await self._ask(
                bus, address, c.simple_request(address, c.Cmd.HARDWARE_VERSION), priority=Priority.BACKGROUND
            )
            try:
                sn = await self._ask(
                    bus, address, c.simple_request(address, c.Cmd.SERIAL_NUMBER), priority=Priority.BACKGROUND
                )
                bms_sn, pack_sn = self._serials(sn.info)
            except DeviceError:
                bms_sn, pack_sn = None, None  # firmware without C2
            return PackIdentity(
                version=c.decode_text(hw.info) or None,
                barcode=pack_sn,
                serial=bms_sn,
                manufacturer="PACE",
                protocol="pace",
            )
        m = await self._ask(
            bus,
            address,
            c.simple_request(address, c.Cmd.V20_MANUFACTURER, version=ver, cid1=cid1),
            priority=Priority.BACKGROUND,
        )
        man = c.decode_manufacturer_v20(m.info)
        serial: str | None = None
        try:
            s = await self._ask(
                bus,
                address,
                c.simple_request(address, c.Cmd.V20_SERIAL, version=ver, cid1=cid1),
                priority=Priority.BACKGROUND,
            )
            serial = c.decode_text(s.info) or None
        except (DeviceError, NoResponse):
            serial = None  # many v20 firmwares do not answer 0x93
        version = (
            man.text
            if man.software_version is None
            else f"{man.software_version[0]}.{man.software_version[1]}"
        )
        return PackIdentity(
            version=version or None,
            serial=serial,
            manufacturer=man.manufacturer,
            model=man.device_name,
            protocol="pace",
        )

    @staticmethod
    def _serials(info: bytes) -> tuple[str | None, str | None]:
        """C2 carries the BMS serial number (20 characters) and, on some packs, the pack serial (20)."""
        if len(info) > 20:
            return c.decode_text(info[:20]) or None, c.decode_text(info[20:]) or None
        return c.decode_text(info) or None, None

    async def read_protocol_version(self, bus: BusClient, address: int) -> int:
        """The protocol version the pack answers with (VER of its answer to CID2 0x4F)."""
        ver, cid1 = self.dialect(address)
        probe = c.request(address, c.Cmd.PROTOCOL_VERSION, b"", version=ver, cid1=cid1)
        f = await self._ask(bus, address, probe, priority=Priority.BACKGROUND)
        return f.version

    async def read_manufacturer(self, bus: BusClient, address: int) -> c.ManufacturerV20:
        """CID2 0x51: device name, software version, manufacturer (v20; some v25 firmwares)."""
        ver, cid1 = self.dialect(address)
        req = c.simple_request(address, c.Cmd.V20_MANUFACTURER, version=ver, cid1=cid1)
        f = await self._ask(bus, address, req, priority=Priority.BACKGROUND)
        return c.decode_manufacturer_v20(f.info)

    async def read_system_parameters(self, bus: BusClient, address: int) -> c.SystemParameters:
        """CID2 0x47 (Pylon-style limits); packs without it answer RTN 0x04 (DeviceError)."""
        ver, cid1 = self.dialect(address)
        info = b"" if self.variant(address) is v.Variant.EG4 else bytes([address])
        req = c.request(address, c.Cmd.SYSTEM_PARAMETERS, info, version=ver, cid1=cid1)
        f = await self._ask(bus, address, req, priority=Priority.BACKGROUND)
        return c.decode_system_parameters(f.info)

    async def read_hardware_version(self, bus: BusClient, address: int) -> str:
        self._need_v25(address, "the hardware version (C1)")
        f = await self._ask(
            bus, address, c.simple_request(address, c.Cmd.HARDWARE_VERSION), priority=Priority.BACKGROUND
        )
        return c.decode_text(f.info)

    async def read_serial_numbers(self, bus: BusClient, address: int) -> tuple[str | None, str | None]:
        """(BMS serial, pack serial) from C2."""
        self._need_v25(address, "the serial numbers (C2)")
        f = await self._ask(
            bus, address, c.simple_request(address, c.Cmd.SERIAL_NUMBER), priority=Priority.BACKGROUND
        )
        return self._serials(f.info)

    async def read_capacities(self, bus: BusClient, address: int) -> c.Capacities:
        self._need_v25(address, "the capacity read (A6)")
        f = await self._ask(
            bus, address, c.simple_request(address, c.Cmd.READ_CAPACITIES), priority=Priority.BACKGROUND
        )
        return c.decode_capacities(f.info)

    async def read_group(self, bus: BusClient, address: int, layout: c.GroupLayout) -> c.GroupValues:
        self._need_v25(address, "parameter groups")
        f = await self._ask(
            bus, address, c.simple_request(address, layout.read), priority=Priority.BACKGROUND
        )
        return c.decode_group_read(layout.read, f.info)

    def _specs_of(self, layout: c.GroupLayout) -> tuple[ParamSpec, ...]:
        return self.table.where_wire(read=layout.read)

    async def read_parameters(self, bus: BusClient, address: int, now: float) -> ParameterSet:
        """Every group of the table. A group the firmware refuses (RTN != 0) is left out."""
        self._need_v25(address, "parameter groups")
        readings: list[ParameterReading] = []
        for layout in c.PARAM_GROUPS:
            specs = self._specs_of(layout)
            if not specs:
                continue
            try:
                g = await self.read_group(bus, address, layout)
            except DeviceError:
                continue
            for spec in specs:
                raw = g.values[int(spec.wire["field"])]
                readings.append(ParameterReading(spec.name, spec.from_wire(raw), spec.unit))
        return ParameterSet.of(now, readings)

    async def read_clock(self, bus: BusClient, address: int, now: float) -> ClockReading:
        ver, cid1 = self.dialect(address)
        variant = c.variant_of(ver, cid1)
        cid2 = c.Cmd.READ_TIME if variant is v.Variant.V25 else c.Cmd.V20_READ_TIME
        f = await self._ask(
            bus,
            address,
            c.simple_request(address, cid2, version=ver, cid1=cid1),
            priority=Priority.BACKGROUND,
        )
        when = c.decode_datetime(f.info, variant)
        return ClockReading(pack_time=when.timestamp(), read_at=now)  # pack clocks are local time

    async def read_protocols(self, bus: BusClient, address: int) -> c.Protocols:
        """The pack's own inverter protocol selection (CAN code, RS485 code, auto/manual)."""
        self._need_v25(address, "inverter protocol selection")
        f = await self._ask(
            bus, address, c.simple_request(address, c.Cmd.READ_PROTOCOLS), priority=Priority.BACKGROUND
        )
        return c.decode_protocols(f.info)

    async def probe(self, bus: BusClient, address: int) -> bool:
        """Protocol-version query (VER 0x20): any PACE pack answers; its VER and CID1 are remembered."""
        try:
            frame = await bus.transact(c.version_probe(address), _answer_from(address), address=address)
        except NoResponse:
            return False
        if not isinstance(frame, PaceFrame):
            return False
        if frame.command == 0:
            self.set_dialect(address, VER_25 if frame.version >= VER_25 else VER_20, frame.cid1)
        return True

    # ---- writes and controls -----------------------------------------------------------------

    async def write_parameters(
        self, bus: BusClient, address: int, writes: list[ParameterWrite], *, allow_inferred: bool = False
    ) -> None:
        """Validate every value against the table, then per group: read it, replace the changed
        fields, write it whole (PbmsTools does the same), check RTN 0."""
        self._need_v25(address, "parameter writes")
        by_group: dict[int, dict[int, int]] = {}
        for w in writes:
            spec = self.table.get(w.name)
            if spec.inferred and not (allow_inferred or self.allow_inferred):
                raise Unsupported(f"pace: writing {spec.name} uses an inferred encoding; opt in to allow it")
            raw = spec.to_wire(w.value)
            by_group.setdefault(int(spec.wire["read"]), {})[int(spec.wire["field"])] = raw
        for read_cid2, updates in by_group.items():
            layout = c.GROUPS_BY_READ[read_cid2]
            current = await self.read_group(bus, address, layout)
            await self._ask(
                bus,
                address,
                c.group_write_request(address, current.replace(updates)),
                priority=Priority.ADMIN,
            )

    async def write_clock(self, bus: BusClient, address: int, when_epoch_s: float) -> None:
        ver, cid1 = self.dialect(address)
        when = dt.datetime.fromtimestamp(round(when_epoch_s))  # pack clocks are local time
        await self._ask(
            bus, address, c.datetime_request(address, when, version=ver, cid1=cid1), priority=Priority.ADMIN
        )

    async def write_protocols(self, bus: BusClient, address: int, protocols: c.Protocols) -> None:
        """Select the pack's inverter protocols (codes validated against the CAN/RS485 tables first)."""
        self._need_v25(address, "inverter protocol selection")
        await self._ask(bus, address, c.protocols_request(address, protocols), priority=Priority.ADMIN)

    async def set_limiter_gear(self, bus: BusClient, address: int, *, low: bool) -> None:
        code = c.SwitchCode.LIMITER_LOW_GEAR if low else c.SwitchCode.LIMITER_HIGH_GEAR
        await self._switch(bus, address, code, 0x08, low)

    async def _switch(self, bus: BusClient, address: int, code: c.SwitchCode, bit: int, on: bool) -> None:
        self._need_v25(address, "switch commands")
        f = await self._ask(bus, address, c.switch_request(address, code), priority=Priority.ADMIN)
        ack = c.decode_switch_ack(f.info)
        if bool(ack.configuration & bit) != on:
            raise DeviceError(
                0x100, f"pace pack {address}: {code.name} acknowledged but the configuration did not change"
            )

    async def control(self, bus: BusClient, address: int, action: Control, value: int = 1) -> None:
        on = bool(value)
        if action in (Control.CHARGE_MOS, Control.DISCHARGE_MOS):
            self._need_v25(address, "MOSFET control")
            if not self.allow_inferred:
                raise Unsupported(
                    "pace: the MOSFET on/off payload convention is inferred from captures; "
                    "enable allow_inferred to use it"
                )
            charge = action is Control.CHARGE_MOS
            f = await self._ask(
                bus, address, c.mos_request(address, charge=charge, on=on), priority=Priority.ADMIN
            )
            system = c.decode_mos_ack(f.info)
            if bool(system & (0x02 if charge else 0x04)) != on:
                raise DeviceError(
                    0x100, f"pace pack {address}: {action.value} is still {'off' if on else 'on'}"
                )
            return
        if action in _SWITCHES:
            on_code, off_code, bit = _SWITCHES[action]
            await self._switch(bus, address, on_code if on else off_code, bit, on)
            return
        if action is Control.SHUTDOWN:
            ver, cid1 = self.dialect(address)
            await self._ask(
                bus, address, c.shutdown_request(address, version=ver, cid1=cid1), priority=Priority.ADMIN
            )
            return
        raise Unsupported(f"pace: {action.value} is not available on PACE packs")

    # ---- history -----------------------------------------------------------------------------

    async def history_count(self, bus: BusClient, address: int) -> int:
        raise Unsupported(
            "pace: the pack reports no record count; read records from index 0 (newest) until the "
            "end-of-data answer (about 400 records)"
        )

    async def read_history(self, bus: BusClient, address: int, index: int) -> HistoryRecord | None:
        self._need_v25(address, "history records (A1)")
        f = await self._ask(bus, address, c.history_request(address, index), priority=Priority.BACKGROUND)
        rec = c.decode_history(f.info)
        if rec is None:
            return None
        soc = round(rec.remaining_ah / rec.full_ah * 100.0, 2) if rec.full_ah else None
        return HistoryRecord(
            index=index,
            recorded_at=rec.recorded_at.timestamp(),
            event="Record",
            event_code=0,
            cell_voltages_v=rec.cell_voltages_v,
            temperatures_c=rec.temperatures_c,
            current_a=rec.current_a,
            voltage_v=rec.voltage_v,
            soc_pct=soc,
            raw=f.info,
        )
