"""Admin operations on a pack's configuration: capacities, cell count (factory), SN code,
anti-theft mode and unlock. Each asks the driver for the capability (`CapacityWriter`,
`CellCountSetter`, ...), never for its family."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.core.model import Telemetry
from gateway.ops.admin.base import (
    Action,
    AdminBase,
    AdminBus,
    Caller,
    PackAction,
    WriteStep,
)
from gateway.ops.admin.packs import label
from gateway.ops.admin.reports import (
    ItemReport,
    Outcome,
    PackReport,
    problem_entry,
    refuse_all,
)
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import Conflict, Invalid
from gateway.south.drivers.base import (
    AntiTheftLock,
    BusError,
    CapacityWriter,
    CellCountSetter,
    DeviceError,
    SerialNumberAccess,
    Unlocker,
)
from protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)

CAPACITY_MAX_AH = 655.35  # 16-bit wire field at 0.01 Ah
CAPACITY_DISAGREE_RATIO = 0.01  # full vs nominal differing by more than 1 % -> warning (manual 4.5.1)
_CAPACITIES = Action("config.capacities", Role.ADMIN, "writing capacities")
_CELL_COUNT = Action("config.cell_count", Role.FACTORY, "setting the cell count")
_SERIAL = Action("config.serial", Role.ADMIN, "writing the SN code")
_ANTI_THEFT = Action("config.anti_theft", Role.ADMIN, "changing the anti-theft mode")
_UNLOCK = Action("config.unlock", Role.ADMIN, "unlocking a pack")


class ConfigurationMixin(AdminBase):
    # ---- configuration ---------------------------------------------------------------------------

    async def capacities(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading capacities")
        key = self.pack(bus, address)
        t = self.telemetry(key)
        nominal = t.nominal_capacity_ah if t is not None else None
        nominal_source = "pack" if nominal is not None else None
        if nominal is None and key in self._nominal:
            nominal, nominal_source = self._nominal[key], "last written by this gateway"
        full = None if t is None else t.full_capacity_ah
        return {
            "pack": label(key),
            "full_ah": full,
            "remaining_ah": None if t is None else t.remaining_capacity_ah,
            "nominal_ah": nominal,
            "nominal_source": nominal_source,
            "measured_at": None if t is None else t.measured_at,
            "warnings": _capacity_warnings(full, nominal),
        }

    async def write_capacities(
        self,
        caller: Caller,
        bus: str,
        address: int,
        *,
        full_ah: float | None = None,
        remaining_ah: float | None = None,
        nominal_ah: float | None = None,
        allow_inferred: bool = False,
    ) -> dict[str, Any]:
        async def body(act: PackAction) -> dict[str, Any]:
            key = act.key
            capacity_writer = self.driver(key)
            if not isinstance(capacity_writer, CapacityWriter):
                raise self.unavailable(capacity_writer, "capacity writes")
            write = capacity_writer.write_capacity
            given = {"full": full_ah, "remaining": remaining_ah, "nominal": nominal_ah}
            asked: dict[str, float] = {k: v for k, v in given.items() if v is not None}
            if not asked:
                raise Invalid("name at least one of full_ah, remaining_ah, nominal_ah")
            allowed = f"0..{CAPACITY_MAX_AH} Ah"
            refuse_all(
                [
                    problem_entry(f"{k}_ah", v, allowed, f"{k}_ah: {v:g} Ah is outside {allowed}")
                    for k, v in asked.items()
                    if not (math.isfinite(v) and 0.0 <= v <= CAPACITY_MAX_AH)
                ]
            )
            t = self.telemetry(key)
            target_full = full_ah if full_ah is not None else (t.full_capacity_ah if t else None)
            if remaining_ah is not None and target_full is not None and remaining_ah > target_full:
                raise Invalid(
                    f"remaining_ah: {remaining_ah:g} Ah is above the full capacity {target_full:g} Ah",
                    [
                        problem_entry(
                            "remaining_ah",
                            remaining_ah,
                            f"0..{target_full:g} Ah",
                            "remaining capacity above full capacity",
                        )
                    ],
                )
            if not self.inferred_allowed(allow_inferred):
                raise self._inferred_refusal("the capacity write (0.01 Ah wire unit)")
            from protocol.bms.tianpower.messages import Capacity

            before = {
                "full": t.full_capacity_ah if t else None,
                "remaining": t.remaining_capacity_ah if t else None,
                "nominal": self._nominal.get(key),
            }
            rep = PackReport(label(key))
            nominal_target = nominal_ah if nominal_ah is not None else self._nominal.get(key)
            rep.warnings = _capacity_warnings(target_full, nominal_target)
            if full_ah is not None and nominal_ah is None and key not in self._nominal:
                rep.warnings.append(
                    "the full capacity changes but the nominal capacity is not known to match: manual 4.5.1 "
                    "advises setting the nominal capacity to the same value"
                )
            abus = self.bus(key, act.intent)
            async with self.lock(key[0]):
                errors_by: dict[str, str] = {}
                for name in ("full", "nominal", "remaining"):  # remaining last: it is capped by full
                    if name not in asked:
                        continue
                    try:
                        await write(abus, key[1], Capacity(name), asked[name], allow_inferred=True)
                        if name == "nominal":
                            self._nominal[key] = asked[name]
                    except (BusError, ValueError) as err:
                        errors_by[name] = str(err)
                after_t: Telemetry | None = None
                try:
                    after_t = await self._read_realtime(self.driver(key), key, abus)
                except BusError as err:
                    rep.warnings.append(f"read-back failed: {err}")
            readback = {
                "full": None if after_t is None else after_t.full_capacity_ah,
                "remaining": None if after_t is None else after_t.remaining_capacity_ah,
                "nominal": None if after_t is None else after_t.nominal_capacity_ah,
            }
            for name, value in asked.items():
                item = ItemReport(f"{name}_ah", value, before.get(name), readback[name])
                got = readback[name]
                if name in errors_by:
                    item.outcome, item.detail = Outcome.FAILED, errors_by[name]
                elif got is None:
                    item.outcome, item.detail = Outcome.WRITTEN, "acknowledged; the pack reports no read-back"
                elif abs(got - value) <= 0.0051:
                    item.outcome = Outcome.VERIFIED
                else:
                    item.outcome, item.detail = Outcome.MISMATCH, f"read back {got:g} Ah"
                rep.items.append(item)
            after = {k: v for k, v in readback.items() if v is not None}
            return await self._finish_pack(act, rep, abus, before=before, after=after, detail=rep.detail)

        return await self._on_pack(
            _CAPACITIES,
            caller,
            bus,
            address,
            body,
            full_ah=full_ah,
            remaining_ah=remaining_ah,
            nominal_ah=nominal_ah,
            allow_inferred=allow_inferred,
        )

    async def set_cell_count(
        self, caller: Caller, bus: str, address: int, cells: int, *, confirm: bool
    ) -> dict[str, Any]:
        async def body(act: PackAction) -> dict[str, Any]:
            key = act.key
            cell_count_setter = self.driver(key)
            if not isinstance(cell_count_setter, CellCountSetter):
                raise self.unavailable(cell_count_setter, "setting the cell count")
            fn = cell_count_setter.set_cell_count
            if not 1 <= cells <= 32:
                raise Invalid(
                    f"cells: {cells} is outside 1..32",
                    [problem_entry("cells", cells, "1..32", "out of range")],
                )
            if not confirm:
                raise Invalid(
                    "setting the cell count is a factory operation (manual 4.5.2: not recommended, "
                    "the wiring must "
                    'match); repeat the request with "confirm": true'
                )
            t = self.telemetry(key)
            item = ItemReport("cells", cells, None if t is None else len(t.cell_voltages_v))
            driver = self.driver(key)

            async def write(b: AdminBus) -> None:
                await fn(b, key[1], cells, confirm_dangerous=True)
                # no read-back of the setting; the model shows what the pack reports right after
                with contextlib.suppress(BusError, DeviceError, LocalProtocolError):
                    await self._read_realtime(driver, key, b)

            step = WriteStep(
                write,
                errors=(BusError, LocalProtocolError),
                acknowledged="sent; the pack does not acknowledge and applies it after a reset",
            )
            # audited with the count asked for (the report's "after" stays unknown: no read-back)
            return await self._single_pack_write(act, item, step, audit_after=lambda _: cells)

        return await self._on_pack(_CELL_COUNT, caller, bus, address, body, cells=cells, confirm=confirm)

    async def write_serial(self, caller: Caller, bus: str, address: int, serial: str) -> dict[str, Any]:
        async def body(act: PackAction) -> dict[str, Any]:
            key = act.key
            serial_number_access = self.driver(key)
            if not isinstance(serial_number_access, SerialNumberAccess):
                raise self.unavailable(serial_number_access, "writing the SN code")
            write = serial_number_access.write_serial
            serial_number_access = self.driver(key)
            if not isinstance(serial_number_access, SerialNumberAccess):
                raise self.unavailable(serial_number_access, "reading the SN code")
            read = serial_number_access.read_serial
            from protocol.bms.tianpower.messages import encode_serial

            try:
                encode_serial(serial)
            except LocalProtocolError as err:
                raise Invalid(
                    str(err), [{"parameter": "serial", "value": serial, "message": str(err)}]
                ) from None
            snap = self.ctx.store.view.pack(*key)
            item = ItemReport("serial", serial, None if snap is None else snap.identity.serial)

            async def check(b: AdminBus) -> tuple[Any, bool]:
                got = await read(b, key[1])
                if isinstance(got, str):
                    self._publish(key, serial=got)  # the read-back, shown at once (not in an hour)
                return got, got == serial

            step = WriteStep(lambda b: write(b, key[1], serial), check)
            return await self._single_pack_write(act, item, step)

        return await self._on_pack(_SERIAL, caller, bus, address, body, serial=serial)

    # ---- anti-theft ------------------------------------------------------------------------------

    async def anti_theft(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "reading the anti-theft mode")
        key = self.pack(bus, address)
        anti_theft_lock = self.driver(key)
        if not isinstance(anti_theft_lock, AntiTheftLock):
            raise self.unavailable(anti_theft_lock, "anti-theft")
        t = self.telemetry(key)
        written = self._anti_theft.get(key)
        mode = None
        if written is not None:
            mode = {name: bool(written[0] & bit) for name, bit in ANTI_THEFT_BITS.items()}
        return {
            "pack": label(key),
            "locked": None if t is None else "Battery_Locked" in t.states,
            "mode": mode,
            "mode_source": (
                "unknown: the protocol has no documented read of the anti-theft mode"
                if written is None
                else "last written by this gateway at "
                + datetime.fromtimestamp(written[1]).isoformat(timespec="seconds")
            ),
            "comm_timeout_h": None,
            "comm_timeout_note": "no documented command reads or writes Comm_Time (48 h default, 4.5.6)",
        }

    async def write_anti_theft(
        self,
        caller: Caller,
        bus: str,
        address: int,
        mode: Mapping[str, bool],
        comm_timeout_h: float | None = None,
    ) -> dict[str, Any]:
        async def body(act: PackAction) -> dict[str, Any]:
            key = act.key
            anti_theft_lock = self.driver(key)
            if not isinstance(anti_theft_lock, AntiTheftLock):
                raise self.unavailable(anti_theft_lock, "anti-theft")
            fn = anti_theft_lock.anti_theft_lock
            unknown = sorted(set(mode) - set(ANTI_THEFT_BITS))
            if unknown:
                raise Invalid(
                    f"unknown anti-theft lock(s) {', '.join(unknown)}; allowed: {', '.join(ANTI_THEFT_BITS)}"
                )
            if comm_timeout_h is not None:
                raise Conflict(
                    "the communication anti-theft timeout (Comm_Time) has no publicly documented "
                    "command; the BMS keeps its own value (48 h by default, manual 4.5.6)"
                )
            from protocol.bms.tianpower.messages import AntiTheft

            current = self._anti_theft.get(key, (0, 0.0))[0]
            mask = current
            for name, on in mode.items():
                bit = ANTI_THEFT_BITS[name]
                mask = (mask | bit) if on else (mask & ~bit)
            item = ItemReport(
                "mode",
                {n: bool(mask & b) for n, b in ANTI_THEFT_BITS.items()},
                {n: bool(current & b) for n, b in ANTI_THEFT_BITS.items()}
                if key in self._anti_theft
                else None,
            )

            async def write(b: AdminBus) -> None:
                await fn(b, key[1], AntiTheft(mask))
                self._anti_theft[key] = (mask, self._wall())
                item.after = item.requested  # no read of the mode: what was acknowledged is what we know

            step = WriteStep(write, acknowledged="acknowledged; the protocol has no read of the mode")
            return await self._single_pack_write(act, item, step)

        return await self._on_pack(
            _ANTI_THEFT, caller, bus, address, body, mode=dict(mode), comm_timeout_h=comm_timeout_h
        )

    async def unlock(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        async def body(act: PackAction) -> dict[str, Any]:
            key = act.key
            unlocker = self.driver(key)
            if not isinstance(unlocker, Unlocker):
                raise self.unavailable(unlocker, "unlocking")
            fn = unlocker.unlock
            t = self.telemetry(key)
            item = ItemReport("locked", False, None if t is None else "Battery_Locked" in t.states)

            async def check(b: AdminBus) -> tuple[Any, bool]:
                locked = "Battery_Locked" in (await self._read_realtime(self.driver(key), key, b)).states
                return locked, not locked

            step = WriteStep(lambda b: fn(b, key[1]), check)
            return await self._single_pack_write(act, item, step)

        return await self._on_pack(_UNLOCK, caller, bus, address, body)


ANTI_THEFT_BITS = {"communication": 0x01, "physical": 0x02, "charge_activation": 0x04, "sleep_voltage": 0x08}


def _capacity_warnings(full: float | None, nominal: float | None) -> list[str]:
    if full is None or nominal is None or nominal <= 0:
        return []
    if abs(full - nominal) / nominal > CAPACITY_DISAGREE_RATIO:
        return [
            f"full capacity {full:g} Ah and nominal capacity {nominal:g} Ah disagree: when the actual "
            "capacity "
            "differs from the factory value, change the nominal capacity too (manual 4.5.1)"
        ]
    return []
