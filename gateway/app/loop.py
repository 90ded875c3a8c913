"""Which asyncio event loop runs the gateway: uvloop when installed (`event_loop = "auto"`), else stdlib.

uvloop (libuv; the optional dependency `bms-gateway[fast]`) roughly halves the per-request cost of
the Modbus/TCP server and of every socket the gateway serves (docs/performance.md). The standard
library's loop stays fully supported and tested: `event_loop = "asyncio"` forces it, and "auto"
falls back to it when uvloop is missing or the platform has none (Windows).

This module must never start a loop itself or import uvloop before a loop is asked for.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from gateway.app.config import ConfigError

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]


def uvloop_available() -> bool:
    return sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None


def resolve(choice: LoopChoice) -> Literal["uvloop", "asyncio"]:
    """The loop a configured choice means here; ConfigError for "uvloop" without uvloop."""
    if choice == "asyncio":
        return "asyncio"
    if uvloop_available():
        return "uvloop"
    if choice == "uvloop":
        raise ConfigError("event_loop: uvloop is not installed (pip install 'bms-gateway[fast]')")
    return "asyncio"


def loop_factory(choice: LoopChoice) -> Callable[[], asyncio.AbstractEventLoop]:
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: LoopChoice = "auto") -> T:
    """`asyncio.run(main)` on the chosen loop."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
