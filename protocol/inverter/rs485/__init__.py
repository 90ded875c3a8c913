"""Inverter-side RS485 codecs (sans-I/O): the Pylontech ASCII protocol and BYD Modbus."""
