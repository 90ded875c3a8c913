"""CAN DBC files of the inverter protocols (one file per frame layout), loaded by
`protocol.inverter.can.dbc` through importlib.resources. Data only: nothing is read at import time."""
