"""South side: the bus owner (one request in flight per port), the poller and the per-family
drivers; its byte links come from `gateway.io.transport`. Never imports north/, ops/ or cli/."""
