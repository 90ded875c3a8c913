"""bms-gateway runtime: everything that waits (buses, polling, servers, supervision)."""

__version__ = "0.1.0"
