"""Parameter tables of the BMS families (`<family>.toml`) and their loader (`mappings.bms.params`).

Data only; nothing is read at import time.
"""
