"""The Modbus/TCP adapter: SunSpec and native register maps served from the pack model.

`ModbusServer` (in `gateway.north.modbus.server`) is the service; the maps are built by
`gateway.north.modbus.sunspec` and `gateway.north.modbus.native` from the tables in `mappings/modbus/`, writes
become caps through `gateway.north.modbus.writes`. See docs/modbus.md.
"""

from gateway.north.modbus.server import ModbusServer
from gateway.north.modbus.stats import ModbusStats

__all__ = ["ModbusServer", "ModbusStats"]
