"""Inverter CAN adapter: encodes the policy decision with the selected protocol on python-can."""
