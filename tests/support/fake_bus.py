"""The one fake bus of the driver tests: a `BusClient` whose line carries the request's echo and then
whatever answers it, decoded by the family's own decoder and matched as the bus owner matches.

`WireBus` takes a function from request to line bytes (None: nothing expected, `transact` returns
None); `SimulatorBus` is that bus over the in-process simulator's responder; the driver tests build
their scripted packs on `WireBus` with their own answers.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.south.drivers.base import NoResponse, Priority
from protocol.bms import registry
from protocol.bms.base import Frame, FrameDecoder
from simulator.core import Simulator


class WireBus:
    """A BusClient over `line(request, priority, expect_response)` (the bytes heard after sending)."""

    def __init__(
        self,
        new_decoder: Callable[[], FrameDecoder],
        line: Callable[[bytes, Priority, bool], bytes | None],
        *,
        silent: str = "no matching frame",
    ) -> None:
        self.new_decoder = new_decoder
        self.line = line
        self.silent = silent

    async def transact(
        self,
        request: bytes,
        match: Callable[[Frame], bool],
        *,
        priority: Priority = Priority.POLL,
        timeout_s: float | None = None,
        expect_response: bool = True,
        address: int | None = None,
    ) -> Frame | None:
        wire = self.line(request, priority, expect_response)
        if wire is None:
            return None
        dec = self.new_decoder()
        dec.feed(wire)
        for item in dec.frames():
            if isinstance(item, Frame) and match(item):
                return item
        raise NoResponse(self.silent)


class SimulatorBus(WireBus):
    """The bus over the simulator's responder: the echo first, then the answer (if any)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        super().__init__(
            registry.get(sim.options.protocol).new_decoder, self._line, silent="simulator stayed silent"
        )

    def _line(self, request: bytes, _priority: Priority, _expect: bool) -> bytes:
        _addr, answer = self.sim.responder.respond(self.sim, request)
        return request + answer


SimulatorBusFactory = Callable[..., SimulatorBus]  # the `simulator_bus` fixture (tests/conftest.py)
