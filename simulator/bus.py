"""The simulated RS485 bus over TCP (and optionally a pseudo-terminal), with wire pacing.

What it is for: behave like a transparent RS485-to-Ethernet converter with the packs behind it.
Every connected client (and the pty) is a master on the same half-duplex bus:
- a client's bytes are split into request frames by the family decoder; each complete request is
  also seen by the other clients (it is on the shared wire) and queued for the packs;
- one request is served at a time: the request's own wire time, then the turnaround delay (plus
  any injected delay), then the answer, all paced at 10 bits per byte at the configured baud rate;
  an echo fault sends the request back at once, as a transceiver would;
- the answer goes to every client, like the converter forwards everything it hears.
A physics ticker advances the simulation with the wall clock while serving; the state file (if
any) is saved when something persistent changed and on close.

It must never let one client's failure (disconnect, garbage) stop the bus, and never block the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from protocol.bms.base import FrameDecoder
from protocol.errors import RemoteProtocolError
from simulator.faults import Delivery
from simulator.pack import SimPack

log = logging.getLogger(__name__)


class _ServingOptions(Protocol):
    @property
    def baud(self) -> int: ...
    @property
    def pacing(self) -> bool: ...
    @property
    def turnaround_s(self) -> float: ...
    @property
    def tick_s(self) -> float: ...
    @property
    def time_scale(self) -> float: ...
    @property
    def state_file(self) -> str | Path | None: ...


class _Decoding(Protocol):
    def new_decoder(self) -> FrameDecoder: ...


class ServedSimulator(Protocol):
    """What the bus server needs of the simulator it serves (`simulator.core.Simulator` is one); a
    structural type, so this module does not import the simulator that starts it."""

    @property
    def options(self) -> _ServingOptions: ...
    @property
    def responder(self) -> _Decoding: ...
    @property
    def packs(self) -> Mapping[int, SimPack]: ...
    @property
    def epoch_s(self) -> float: ...
    @property
    def dirty(self) -> bool: ...

    def deliver(self, raw: bytes) -> Delivery: ...

    def advance(self, seconds: float, *, max_step_s: float | None = None) -> None: ...

    def save_state(self, path: str | Path | None = None) -> None: ...


QUEUE_LIMIT = 256  # pending requests on the bus; beyond it requests are dropped (a jammed bus)
SAVE_EVERY_S = 2.0
DRAIN_TIMEOUT_S = 2.0
CLIENT_CLOSE_TIMEOUT_S = 1.0  # how long close() lets its tasks and connection handlers finish


@dataclass(eq=False, slots=True)
class _Peer:
    name: str
    decoder: FrameDecoder
    writer: asyncio.StreamWriter | None = None  # TCP client
    fd: int | None = None  # pty master
    closed: bool = False
    pending: bytearray = field(default_factory=bytearray)  # pty output not yet written

    def send(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self.writer is not None:
            if self.writer.is_closing():
                self.closed = True
                return
            self.writer.write(data)
        elif self.fd is not None:
            self.pending += data
            self.flush_pty()

    def flush_pty(self) -> None:
        if self.fd is None or not self.pending:
            return
        try:
            n = os.write(self.fd, self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.pending.clear()  # nobody has the pty open: the bytes are lost on the wire
            return
        del self.pending[:n]


class BusServer:
    def __init__(self, sim: ServedSimulator, host: str, port: int, *, pty: bool = False) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.pty_path: str | None = None
        self._want_pty = pty
        self._server: asyncio.Server | None = None
        self._peers: set[_Peer] = set()
        self._queue: asyncio.Queue[tuple[_Peer, bytes, float]] = asyncio.Queue(QUEUE_LIMIT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client_tasks: set[asyncio.Task[None]] = set()
        self._pty_master: int | None = None
        self._pty_slave: int | None = None
        self.requests_served = 0

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self._want_pty:
            self._open_pty()
        loop = asyncio.get_running_loop()
        for coro in (self._bus_worker(), self._ticker()):
            task = loop.create_task(coro)
            self._tasks.add(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            done, stuck = await asyncio.wait(self._tasks, timeout=CLIENT_CLOSE_TIMEOUT_S)
            for task in stuck:  # never expected; a bound so that shutdown cannot hang on it
                log.error("simulated bus: %s did not stop", task.get_name())
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("simulated bus task failed", exc_info=task.exception())
        # Connection handlers are not cancelled: asyncio's stream protocol reports a cancelled
        # handler task as an error ("Exception in callback StreamReaderProtocol..."). Closing the
        # transport makes each handler read EOF and return by itself; one that does not within the
        # bound is cancelled, and `_client` ends quietly on that cancellation too.
        for peer in list(self._peers):
            peer.closed = True
            if peer.writer is not None:
                peer.writer.close()
        clients = list(self._client_tasks)
        if clients:
            _done, late = await asyncio.wait(clients, timeout=CLIENT_CLOSE_TIMEOUT_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=CLIENT_CLOSE_TIMEOUT_S)
        if self._server is not None:
            await self._server.wait_closed()
        for peer in list(self._peers):
            if peer.writer is not None:
                # A peer that stopped reading keeps unsent bytes in the transport, and a graceful
                # close waits for them forever: after the bound the connection is aborted.
                try:
                    async with asyncio.timeout(CLIENT_CLOSE_TIMEOUT_S):
                        await peer.writer.wait_closed()
                except TimeoutError:
                    peer.writer.transport.abort()
                except Exception:  # the peer reset the connection: it is closed either way
                    log.debug("simulated bus: peer closed with an error", exc_info=True)
        self._close_pty()
        for pack in self.sim.packs.values():
            pack.record("exit_system", self.sim.epoch_s)
        if self.sim.options.state_file is not None:
            try:
                self.sim.save_state()
            except OSError as err:
                log.error("cannot save simulator state to %s: %s", self.sim.options.state_file, err)

    # --- clients --------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._client_tasks.add(task)
        peer = _Peer(
            f"tcp:{writer.get_extra_info('peername')}", self.sim.responder.new_decoder(), writer=writer
        )
        self._peers.add(peer)
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                self._received(peer, data)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only close() (or the loop shutting down) cancels a handler; the connection is over
            # either way, and a cancelled handler task would be logged as an error by asyncio.
            pass
        finally:
            peer.closed = True
            self._peers.discard(peer)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._client_tasks.discard(task)

    def _received(self, peer: _Peer, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        peer.decoder.feed(data)
        for item in peer.decoder.frames():
            if isinstance(item, RemoteProtocolError):
                continue  # line noise from a master: no pack answers it
            for other in self._peers:
                if other is not peer:
                    other.send(item.raw)  # the other masters hear it on the shared wire
            try:
                self._queue.put_nowait((peer, item.raw, now))
            except asyncio.QueueFull:
                log.warning("simulated bus jammed: request dropped")

    # --- pty ------------------------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty_master, self._pty_slave = master, slave
        self.pty_path = os.ttyname(slave)
        peer = _Peer("pty", self.sim.responder.new_decoder(), fd=master)
        self._peers.add(peer)
        asyncio.get_running_loop().add_reader(master, self._pty_readable, peer)

    def _pty_readable(self, peer: _Peer) -> None:
        assert self._pty_master is not None
        try:
            data = os.read(self._pty_master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if data:
            self._received(peer, data)

    def _close_pty(self) -> None:
        if self._pty_master is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pty_master)
            os.close(self._pty_master)
            self._pty_master = None
        if self._pty_slave is not None:
            os.close(self._pty_slave)
            self._pty_slave = None

    # --- the wire -------------------------------------------------------------------------------

    def _broadcast(self, data: bytes) -> None:
        for peer in list(self._peers):
            peer.send(data)

    async def _paced(self, data: bytes, start_at: float) -> float:
        """Put `data` on the wire starting at loop time `start_at`; each byte leaves no earlier
        than its 10 bit times. Returns the loop time when the last byte went out."""
        loop = asyncio.get_running_loop()
        opts = self.sim.options
        if not data:
            return start_at
        if not opts.pacing:  # no byte pacing: everything at `start_at` (the caller leaves out the turnaround)
            delay = start_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._broadcast(data)
            return loop.time()
        byte_s = 10.0 / opts.baud
        chunk = max(1, int(0.005 / byte_s))  # about 5 ms of wire per write
        sent = 0
        while sent < len(data):
            n = min(chunk, len(data) - sent)
            due = start_at + (sent + n) * byte_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._broadcast(data[sent : sent + n])
            sent += n
        return loop.time()

    async def _bus_worker(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.sim.options
        while True:
            _peer, raw, received_at = await self._queue.get()
            try:
                delivery = self.sim.deliver(raw)
            except Exception:  # a responder bug must never stop the bus
                log.exception("simulated pack failed on request %s", raw.hex())
                continue
            self.requests_served += 1
            # The request itself needed its wire time before the packs had it all.
            heard_at = received_at + (len(raw) * 10.0 / opts.baud if opts.pacing else 0.0)
            if delivery.echo:
                await self._paced(delivery.echo, received_at)
            answer = delivery.garbage + delivery.response
            if answer:
                if opts.pacing:
                    start = max(loop.time(), heard_at + opts.turnaround_s) + delivery.extra_delay_s
                else:  # no wire time, but an injected delay (delay, jitter, slow pack) still holds
                    start = loop.time() + delivery.extra_delay_s
                await self._paced(answer, start)
            await self._drain()

    async def _drain(self) -> None:
        """Wait until every client took the answer; a client that stops reading is dropped rather
        than allowed to stall the bus for everyone."""
        for peer in list(self._peers):
            if peer.writer is not None and not peer.closed:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
                    # arrives as the drain completes, and close() would then wait for this worker
                    # forever.
                    async with asyncio.timeout(DRAIN_TIMEOUT_S):
                        await peer.writer.drain()
                except (ConnectionError, RuntimeError, TimeoutError):
                    log.warning("simulated bus: dropping %s (not reading)", peer.name)
                    peer.closed = True
                    peer.writer.close()

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.sim.options
        last = loop.time()
        last_save = last
        while True:
            await asyncio.sleep(opts.tick_s)
            now = loop.time()
            elapsed = (now - last) * opts.time_scale
            # Fast-forwarded runs (--time-scale) take coarser steps; protection delays still get
            # 0.1 s steps while they run (see Simulator.advance).
            self.sim.advance(elapsed, max_step_s=max(1.0, elapsed / 4))
            last = now
            if self.sim.options.state_file is not None and now - last_save >= SAVE_EVERY_S:
                last_save = now
                if self.sim.dirty:
                    try:
                        self.sim.save_state()
                    except OSError as err:
                        log.warning("cannot save simulator state: %s", err)
