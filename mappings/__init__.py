"""Data that drives the codecs and adapters (parameter tables, register maps, DBC files), with the
loaders that validate it. Loading is explicit; nothing is read at import time."""
