"""Byte links shared by both sides: serial devices, `socket://` and `rfc2217://` (`transport.py`).

South opens its BMS buses with it, north opens the inverter RS485 port with it. It imports nothing
else of the gateway and never decodes a frame.
"""
