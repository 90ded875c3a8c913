"""Inverter RS485 adapter: answers an inverter polling us as a Pylontech/BYD battery."""
