"""Opening a bus from a URL, and the backoff used to reopen it.

Three kinds of URL (see docs/runtime.md):
- a serial device path (`/dev/ttyUSB0`, `/dev/serial/by-id/...`): opened with pyserial-asyncio-fast,
  baud rate, parity and stop bits from the bus configuration;
- `socket://host:port`: a transparent RS485-to-Ethernet converter, native asyncio streams (serial
  settings live in the converter's own web page);
- `rfc2217://host:port` (and pyserial's other URL handlers such as `loop://`): a blocking pyserial
  object driven from one dedicated worker thread, since those handlers have no pollable fd.

Every connection offers the same four operations (write, read with a timeout, flush stale input,
close) and turns a peer that closed or broke the link into `ConnectionClosed`.

This module never decodes frames and never retries a request: that is the bus owner's job.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
import termios
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import serial
import serial_asyncio_fast


class TransportError(Exception):
    """The bus could not be opened, or the link broke."""


class PortInUse(TransportError):
    """A serial port is locked by another process (another gateway, `scan`, a vendor tool): serial
    devices are opened exclusively, so two programs never interleave frames on one bus."""


class ConnectionClosed(TransportError):
    """The peer closed the connection (converter reboot, single-client kick-off, cable)."""


@dataclass(frozen=True, slots=True)
class SerialSettings:
    baudrate: int = 9600
    parity: str = "N"  # N, E, O
    stopbits: int = 1
    bytesize: int = 8

    def bits_per_byte(self) -> int:
        """Start bit + data bits + parity bit + stop bits: the wire cost of one byte."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


@dataclass(frozen=True, slots=True)
class BusUrl:
    kind: str  # "serial" | "socket" | "threaded"
    url: str
    host: str | None = None
    port: int | None = None


def parse_url(url: str) -> BusUrl:
    """Classify a bus URL; ValueError with a clear message when it cannot be used."""
    url = url.strip()
    if not url:
        raise ValueError("empty bus URL")
    if "://" not in url:
        return BusUrl("serial", url)
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "socket":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise ValueError(f"expected socket://HOST:PORT, got {url!r}")
        return BusUrl("socket", url, parsed.hostname, port)
    if scheme in ("rfc2217", "loop", "spy", "hwgrep", "alt", "cp2110"):
        return BusUrl("threaded", url, parsed.hostname, None)
    raise ValueError(
        f"unsupported bus URL scheme {scheme!r} in {url!r}; use a device path, socket://, or rfc2217://"
    )


class Connection(abc.ABC):
    """An open bus link. Not safe for concurrent use: the bus owner is its only user."""

    description: str = ""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Put `data` on the wire (ConnectionClosed when the link is gone)."""

    @abc.abstractmethod
    async def read(self, timeout_s: float) -> bytes:
        """The bytes that arrived within `timeout_s` (b"" if none); ConnectionClosed on EOF."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def flush_input(self, quiet_s: float = 0.02, max_s: float = 0.5) -> int:
        """Discard stale input (e.g. a converter's "buffer data before connected"); returns the count.

        Reads until the line has been quiet for `quiet_s` or `max_s` has passed.
        """
        dropped = 0
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            chunk = await self.read(quiet_s)
            if not chunk:
                break
            dropped += len(chunk)
        return dropped


class StreamConnection(Connection):
    """asyncio streams: TCP sockets and pollable serial devices."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, description: str) -> None:
        self._reader = reader
        self._writer = writer
        self.description = description

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionClosed(f"{self.description}: connection closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError, serial.SerialException) as err:
            raise ConnectionClosed(f"{self.description}: {err}") from err

    async def read(self, timeout_s: float) -> bytes:
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                data = await self._reader.read(4096)
        except TimeoutError:
            return b""
        except (ConnectionError, OSError, serial.SerialException) as err:
            raise ConnectionClosed(f"{self.description}: {err}") from err
        if not data:
            raise ConnectionClosed(f"{self.description}: peer closed the connection")
        return data

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError, serial.SerialException, asyncio.CancelledError):
            await self._writer.wait_closed()


class ThreadedConnection(Connection):
    """A blocking pyserial object (rfc2217://, loop://, ...) driven from one worker thread."""

    _POLL_S = 0.02  # the pyserial read timeout; a read waits in slices of this length

    def __init__(self, ser: Any, executor: ThreadPoolExecutor, description: str) -> None:
        self._ser = ser
        self._executor = executor
        self.description = description
        self._closed = False

    async def _call(self, func: Any, *args: Any) -> Any:
        if self._closed:
            raise ConnectionClosed(f"{self.description}: connection closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, func, *args)
        except (OSError, serial.SerialException) as err:
            raise ConnectionClosed(f"{self.description}: {err}") from err

    def _blocking_write(self, data: bytes) -> None:
        self._ser.write(data)
        self._ser.flush()

    def _blocking_read(self, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        while True:
            first = self._ser.read(1)
            if first:
                rest = self._ser.read(self._ser.in_waiting) if self._ser.in_waiting else b""
                return bytes(first) + bytes(rest)
            if time.monotonic() >= deadline:
                return b""

    async def write(self, data: bytes) -> None:
        await self._call(self._blocking_write, data)

    async def read(self, timeout_s: float) -> bytes:
        data: bytes = await self._call(self._blocking_read, max(0.0, timeout_s))
        return data

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, serial.SerialException):
            await loop.run_in_executor(self._executor, self._blocking_close)
        self._executor.shutdown(wait=False)

    def _blocking_close(self) -> None:
        # pyserial's rfc2217 close() skips socket.close() when shutdown() fails (peer already gone):
        # close the socket ourselves so it is never leaked
        sock = getattr(self._ser, "_socket", None)
        try:
            self._ser.close()
        finally:
            if sock is not None:
                sock.close()


async def open_connection(
    url: str, settings: SerialSettings = SerialSettings(), *, connect_timeout_s: float = 5.0
) -> Connection:
    """Open a bus link; TransportError with the reason when it cannot be opened."""
    try:
        target = parse_url(url)
    except ValueError as err:
        raise TransportError(str(err)) from None
    try:
        async with asyncio.timeout(connect_timeout_s):
            if target.kind == "socket":
                assert target.host is not None and target.port is not None
                reader, writer = await asyncio.open_connection(target.host, target.port)
                return StreamConnection(reader, writer, url)
            if target.kind == "serial":
                reader, writer = await serial_asyncio_fast.open_serial_connection(
                    url=url,
                    baudrate=settings.baudrate,
                    parity=settings.parity,
                    stopbits=settings.stopbits,
                    bytesize=settings.bytesize,
                    exclusive=True,  # a second program on the same port fails instead of interleaving
                )
                return StreamConnection(reader, writer, url)
            return await _open_threaded(url, settings)
    except TimeoutError:
        raise TransportError(f"{url}: no connection within {connect_timeout_s:g} s") from None
    except (OSError, serial.SerialException, ValueError, termios.error) as err:
        if "exclusively lock" in str(err):  # pyserial's message when flock() fails
            raise PortInUse(f"{url}: the serial port is in use by another process") from err
        raise TransportError(f"{url}: {err}") from err


async def _open_threaded(url: str, settings: SerialSettings) -> Connection:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bus-io")
    loop = asyncio.get_running_loop()

    def _open() -> Any:
        return serial.serial_for_url(
            url,
            baudrate=settings.baudrate,
            parity=settings.parity,
            stopbits=settings.stopbits,
            bytesize=settings.bytesize,
            timeout=ThreadedConnection._POLL_S,
        )

    try:
        ser = await loop.run_in_executor(executor, _open)
    except (OSError, serial.SerialException, ValueError):
        executor.shutdown(wait=False)
        raise
    except Exception as err:  # a URL handler's own failure must not look like a crash of the bus owner
        executor.shutdown(wait=False)
        raise TransportError(f"{url}: {type(err).__name__}: {err}") from err
    except BaseException:
        executor.shutdown(wait=False)
        raise
    return ThreadedConnection(ser, executor, url)


class Backoff:
    """Exponential backoff with jitter for reconnecting: initial, ×factor per failure, capped.

    The jitter spreads each delay uniformly over ±`jitter` of its nominal value so that several
    gateways behind one converter do not reconnect in lockstep.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < initial_s <= max_s, factor >= 1, 0 <= jitter < 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.failures = 0

    def nominal(self) -> float:
        return min(self.max_s, self.initial_s * self.factor ** max(0, self.failures - 1))

    def next_delay(self) -> float:
        """Record one failure and return how long to wait before the next attempt."""
        self.failures += 1
        base = self.nominal()
        return base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self.failures = 0
