"""Firmware upgrade jobs over the bms-gateway bootloader protocol (docs/firmware.md)."""
