"""Inverter CAN protocols (sans-I/O): one module per protocol, frames from `mappings/can` DBCs."""
