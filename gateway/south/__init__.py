"""South side: the RS485 transports, the bus owner (one request in flight per port), the poller and
the per-family drivers. Never imports north/, ops/ or cli/."""
