"""North side: one adapter per outside world (Modbus, CAN, RS485, MQTT, metrics, HTTP), each a view
over core/ plus its own I/O."""
