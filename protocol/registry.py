"""One registry mechanism for every axis the gateway is extended along (BMS family, driver, inverter
CAN protocol, inverter RS485 protocol): a table `name -> "module:attribute"`, imported on first use,
like python-can's `BACKENDS` table.

Adding a family or a protocol is adding one entry to its table (`protocol/bms/registry.py`,
`gateway/south/drivers/registry.py`, `protocol/inverter/can/registry.py`,
`protocol/inverter/rs485/registry.py`); names anywhere else come from there. An entry is imported
only when it is asked for, and checked when it is loaded (right type, declares the name it is
registered under). Nothing registers itself by import side effect.

This module imports nothing of ours and does no I/O beyond importing the named modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """`name -> "module:attribute"`, loaded lazily and checked by `accept(name, loaded) -> T`."""

    def __init__(self, kind: str, table: Mapping[str, str], accept: Callable[[str, Any], T]) -> None:
        for name, target in table.items():
            module, sep, attribute = target.partition(":")
            if not (name and module and sep and attribute):
                raise ValueError(f"{kind} {name!r}: expected 'module:attribute', got {target!r}")
        self.kind = kind
        self.table: Mapping[str, str] = dict(table)
        self._accept = accept
        self._loaded: dict[str, T] = {}

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order (nothing is imported)."""
        return tuple(self.table)

    def __contains__(self, name: object) -> bool:
        return name in self.table

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def unknown(self, name: str) -> KeyError:
        return KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self.table))}")

    def get(self, name: str) -> T:
        """The entry `name`, imported on first use (KeyError naming the known ones when unknown)."""
        found = self._loaded.get(name)
        if found is not None:
            return found
        try:
            target = self.table[name]
        except KeyError:
            raise self.unknown(name) from None
        module, _, attribute = target.partition(":")
        loaded = getattr(importlib.import_module(module), attribute)
        accepted = self._accept(name, loaded)
        self._loaded[name] = accepted
        return accepted

    def load_all(self) -> dict[str, T]:
        """Every entry, imported (the contract tests walk this)."""
        return {name: self.get(name) for name in self.table}


def named_instance(expected: type[T]) -> Callable[[str, Any], T]:
    """An `accept` for entries that are instances of `expected` with a `name` attribute."""

    def accept(name: str, loaded: Any) -> T:
        if not isinstance(loaded, expected) or getattr(loaded, "name", None) != name:
            raise TypeError(f"{name!r} is registered as {loaded!r}, not a {expected.__name__} named {name!r}")
        return loaded

    return accept


def named_class(expected: type[Any]) -> Callable[[str, Any], Any]:
    """An `accept` for entries that are subclasses of `expected` (abstract base classes welcome) with
    a class attribute `name` (or `family`, for drivers)."""

    def accept(name: str, loaded: Any) -> Any:
        declared = getattr(loaded, "name", None) or getattr(loaded, "family", None)
        if not (isinstance(loaded, type) and issubclass(loaded, expected)) or declared != name:
            raise TypeError(f"{name!r} is registered as {loaded!r}, not a {expected.__name__} named {name!r}")
        return loaded

    return accept
