"""The Modbus/TCP adapter: SunSpec and native register maps served from the pack model.

`ModbusServer` (in `gateway.modbus.server`) is the service; the maps are built by
`gateway.modbus.sunspec` and `gateway.modbus.native` from the tables in `mappings/modbus/`, writes
become caps through `gateway.modbus.writes`. See docs/modbus.md.
"""

from gateway.modbus.server import ModbusServer
from gateway.modbus.stats import ModbusStats

__all__ = ["ModbusServer", "ModbusStats"]
