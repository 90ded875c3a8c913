"""Pack controls (MOSFETs, heater, fan, buzzer, forced sleep, shutdown, ...): what each driver
declares it can do (`Driver.controls`), the refusals decided before a byte is sent (charging,
both MOSFETs off, inferred payloads without both opt-ins), then the shared write/read-back step."""

from __future__ import annotations

import logging
from typing import Any

from gateway.core.model import Telemetry
from gateway.ops.admin.base import (
    Action,
    AdminBase,
    AdminBus,
    Caller,
    PackAction,
    WriteStep,
    apply_step,
)
from gateway.ops.admin.packs import label
from gateway.ops.admin.reports import (
    ItemReport,
)
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import Conflict, Invalid
from gateway.south.drivers.base import (
    Control,
    DeviceError,
    InferredOptIn,
    Unsupported,
)

log = logging.getLogger(__name__)

CHARGING_CURRENT_A = 0.05  # above this the pack counts as charging (forced sleep is refused)
_CONTROL = Action("control", Role.ADMIN, "pack controls")


class ControlsMixin(AdminBase):
    # ---- controls (MOS, heater, fan, buzzer, forced sleep, ...) ------------------------------------

    def controls_of(self, caller: Caller, bus: str, address: int) -> dict[str, Any]:
        self.require(caller, Role.OPERATOR, "listing controls")
        key = self.pack(bus, address)
        driver = self.driver(key)
        return {
            "pack": label(key),
            "family": driver.family,
            "actions": [{"action": a.value, "note": n} for a, n in driver.controls.items()],
            "refuses_both_mos_off": driver.refuses_both_mos_off,
            "note": "any other action is answered 409 with the reason; nothing is sent",
        }

    async def control(
        self,
        caller: Caller,
        bus: str,
        address: int,
        action_name: str,
        on: bool,
        *,
        allow_inferred: bool = False,
    ) -> dict[str, Any]:
        async def body(act: PackAction) -> dict[str, Any]:
            key = act.key
            try:
                ctl = Control(action_name)
            except ValueError:
                raise Invalid(
                    f"unknown action {action_name!r}; allowed: {', '.join(a.value for a in Control)}"
                ) from None
            driver = self.driver(key)
            t = self.telemetry(key)
            if (
                ctl is Control.FORCED_SLEEP
                and t is not None
                and (t.current_a > CHARGING_CURRENT_A or "Charging" in t.states)
            ):
                raise Conflict(
                    f"forced sleep refused: pack {label(key)} is charging ({t.current_a:g} A); "
                    "a BMS cannot be forced to sleep while charging (manual 4.5.3)"
                )
            if ctl in (Control.CHARGE_MOS, Control.DISCHARGE_MOS) and not on and driver.refuses_both_mos_off:
                other = (
                    t.discharge_mos_on
                    if (t and ctl is Control.CHARGE_MOS)
                    else (t.charge_mos_on if t else None)
                )
                if other is False:
                    raise Conflict(
                        f"refused: the other MOSFET of {label(key)} is already off and "
                        f"{driver.family} BMSs refuse "
                        "to switch both MOSFETs off (reference 3.C.1)"
                    )
            item = ItemReport(ctl.value, on, _control_state(ctl, t))

            async def check(b: AdminBus) -> tuple[Any, bool | None]:
                after = _control_state(ctl, await self._read_realtime(driver, key, b))
                return after, None if after is None else after == on  # None: no state to compare

            step = WriteStep(
                lambda b: driver.control(b, key[1], ctl, int(on)),
                None if ctl in (Control.FORCED_SLEEP, Control.SHUTDOWN) else check,
                failure=_control_failure,
                conflicts=(Unsupported,),
            )
            abus = self.bus(key, act.intent)
            async with self.lock(key[0]):
                restore = None
                opt_in = driver if isinstance(driver, InferredOptIn) else None
                if ctl in driver.inferred_controls:
                    if not self.inferred_allowed(allow_inferred):
                        raise self._inferred_refusal(f"{driver.family.upper()} MOSFET control")
                    if opt_in is not None:
                        restore = opt_in.allow_inferred
                        opt_in.allow_inferred = True
                try:
                    await apply_step(step, item, abus)
                finally:
                    if restore is not None and opt_in is not None:
                        opt_in.allow_inferred = restore
            return await self._finish_item(act, item, abus)

        return await self._on_pack(
            _CONTROL, caller, bus, address, body, action=action_name, on=on, allow_inferred=allow_inferred
        )


def _control_failure(err: Exception) -> str:
    return f"refused by the pack: {err}" if isinstance(err, DeviceError) else str(err)


def _control_state(ctl: Control, t: Telemetry | None) -> bool | None:
    if t is None:
        return None
    return {
        Control.CHARGE_MOS: t.charge_mos_on,
        Control.DISCHARGE_MOS: t.discharge_mos_on,
        Control.HEATER: t.heater_on,
        Control.FAN: t.fan_on,
    }.get(ctl)
