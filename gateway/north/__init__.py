"""North side: everything that serves the pack model to the outside (HTTP, web UI, Modbus, CAN, ...)."""
