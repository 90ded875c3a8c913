"""`pylon-hv`: Pylontech high-voltage CAN (Force-H; Sungrow / Solis / Deye-HV "Pylon" mode).

Poll/response on 29-bit ids: the inverter sends 0x4200; byte 0 = 0 is answered with 0x4210 0x4220
0x4230 0x4240 0x4250 0x4280 (system data), byte 0 = 2 with 0x7310 0x7320 0x7330 0x7340 (identity).
The low nibble of every answer id is the battery address (option `address`, 0 or 1). Public
emulators disagree on byte order and on the 30000 (3000 A) current offset, so both are options:
`byte_order` = "big" (default, pylon_hv.dbc) or "little" (pylon_hv_le.dbc), `current_offset` =
true (default) or false (currents as plain two's-complement 0.1 A). Temperatures carry +100 degC.
Stop: 0x4280 charge/discharge forbidden bytes 0xAA, limits 0 A, fault/protection words set.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter import bank
from protocol.inverter.can.base import (
    BatteryState,
    CanFrame,
    InverterProtocol,
    OptionValue,
    Reaction,
    ascii_signals,
    charge_current,
    charge_voltage,
    discharge_current,
)

POLL_ID = 0x4200
SYSTEM_ANSWER = ("SystemData", "Limits", "CellVoltages", "CellTemperatures", "Status", "Forbid")
IDENTITY_ANSWER = ("Versions", "Composition", "Manufacturer1", "Manufacturer2")
FORBIDDEN = 0xAA
CURRENT_OFFSET_A = 3000.0
CURRENT_SIGNALS = frozenset({"Current", "MaxChargeCurrent", "MaxDischargeCurrent"})
IDLE_CURRENT_A = 0.5


class PylonHv(InverterProtocol):
    name = "pylon-hv"
    title = "Pylontech HV CAN (29-bit, 0x4200 polling)"
    dbc_file = "pylon_hv.dbc"
    groups = ()
    answer_messages = SYSTEM_ANSWER + IDENTITY_ANSWER
    keepalive_ids = frozenset({POLL_ID})
    keepalive_extended = True
    option_defaults: ClassVar[dict[str, OptionValue]] = {
        "byte_order": "big",
        "current_offset": True,
        "address": 0,
        "manufacturer": "PYLON",
    }

    def validate_options(self) -> None:
        if self.option("byte_order") not in ("big", "little"):
            raise ValueError("pylon-hv option byte_order must be 'big' or 'little'")
        if not 0 <= int(self.option("address")) <= 15:
            raise ValueError("pylon-hv option address must be 0..15")
        if self.option("byte_order") == "little":
            from protocol.inverter.can import dbc

            self.db = dbc.load("pylon_hv_le.dbc")

    def dbc_id(self, frame: CanFrame) -> int:
        if frame.arbitration_id == POLL_ID:
            return POLL_ID
        return frame.arbitration_id & ~0xF

    def encode(self, message: str, state: BatteryState, now: float) -> CanFrame:
        frame = super().encode(message, state, now)
        address = int(self.option("address"))
        return CanFrame(frame.arbitration_id + address, frame.data, frame.is_extended)

    def _current(self, value_a: float) -> float:
        if self.option("current_offset"):
            return value_a
        raw = round(value_a * 10) & 0xFFFF  # plain two's complement 0.1 A
        return raw * 0.1 - CURRENT_OFFSET_A

    def react(self, frame: CanFrame, state: BatteryState | None, now: float) -> Reaction:
        if frame.arbitration_id != POLL_ID or not frame.is_extended:
            return Reaction()
        self.inverter_seen = True
        if state is None or not frame.data:
            return Reaction(keepalive=True)
        if frame.data[0] == 0x00:
            return Reaction(tuple(self.encode_all(SYSTEM_ANSWER, state, now)), keepalive=True)
        if frame.data[0] == 0x02:
            return Reaction(tuple(self.encode_all(IDENTITY_ANSWER, state, now)), keepalive=True)
        return Reaction(keepalive=True)

    def values(self, message: str, state: BatteryState, now: float) -> dict[str, float]:
        if message == "SystemData":
            return {
                "Voltage": bank.voltage(state.bank),
                "Current": self._current(bank.current(state.bank)),
                "BmsTemperature": bank.temperature(state.bank),
                "SOC": round(bank.soc(state.bank)),
                "SOH": round(bank.soh(state.bank)),
            }
        if message == "Limits":
            return {
                "ChargeCutoffVoltage": charge_voltage(state),
                "DischargeCutoffVoltage": state.discharge_voltage_v,
                "MaxChargeCurrent": self._current(charge_current(state)),
                "MaxDischargeCurrent": self._current(-discharge_current(state)),
            }
        if message == "CellVoltages":
            return {
                "MaxCellVoltage": bank.value(state.bank.cell_max),
                "MinCellVoltage": bank.value(state.bank.cell_min),
                "MaxCellNumber": bank.index(state.bank.cell_max),
                "MinCellNumber": bank.index(state.bank.cell_min),
            }
        if message == "CellTemperatures":
            return {
                "MaxCellTemperature": bank.temp_max(state.bank),
                "MinCellTemperature": bank.temp_min(state.bank),
                "MaxTemperatureNumber": bank.index(state.bank.temp_max),
                "MinTemperatureNumber": bank.index(state.bank.temp_min),
            }
        if message == "Status":
            if bank.current(state.bank) > IDLE_CURRENT_A:
                basic = 1
            elif bank.current(state.bank) < -IDLE_CURRENT_A:
                basic = 2
            else:
                basic = 3
            blocked = state.packs_blocking_charge or state.packs_blocking_discharge or state.stale
            return {
                "BasicStatus": basic,
                "ForceChargeRequest": float(
                    (state.force_charge_1 or state.force_charge_2) and not state.stale
                ),
                "BalanceChargeRequest": float(state.full_charge_request and not state.stale),
                "FaultWord": float(bool(state.alarms)),
                "AlarmWord": float(bool(state.warnings)),
                "ProtectionWord": float(bool(blocked)),
            }
        if message == "Forbid":
            return {
                "ChargeForbidden": 0 if state.charge_enabled else FORBIDDEN,
                "DischargeForbidden": 0 if state.discharge_enabled else FORBIDDEN,
            }
        if message == "Versions":
            return {"HardwareVersion": 1, "SoftwareVersion": 1}
        if message == "Composition":
            cells = bank.cells(state.bank)
            return {
                "TotalCells": cells,
                "ModulesInSeries": 1,
                "CellsPerModule": cells,
                "VoltageLevel": round(cells * 3.2),
                "CapacityAh": state.bank.full_capacity_ah or 0.0,
            }
        name = str(self.option("manufacturer"))
        if message == "Manufacturer1":
            return ascii_signals("Name", name[:8])
        if message == "Manufacturer2":
            return ascii_signals("Name", name[8:16])
        raise KeyError(message)


PROTOCOL = PylonHv
