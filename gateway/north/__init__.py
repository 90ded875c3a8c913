"""North side: one adapter per outside world (Modbus, CAN, RS485, MQTT, metrics, HTTP), each a view
over core/ plus its own I/O. `documents` (shared by all of them) makes the one JSON document of each
snapshot."""
