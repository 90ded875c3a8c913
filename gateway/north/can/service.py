"""The inverter CAN service: sends the selected protocol's frames from the latest charge decision.

python-can owns the bus (`[can] interface/channel/bitrate`, any python-can interface: socketcan,
slcan including `socket://` URLs, socketcand, virtual, vendor adapters). Every blocking python-can
call (open, send, shutdown) runs in one dedicated worker thread, receiving runs in python-can's
Notifier thread; the event loop never blocks. Bus errors (send failures, error frames in a row, a
dead receive thread) close the bus and reopen it with backoff.

Rules kept here: nothing is sent before the first decision with real data exists; from then on
frames never stop (silence is never a stop signal): stale data (the policy's decision, or a decision
older than `stale_after_s`) switches to the protocol's stop encoding with alarm bits. The inverter's
keepalive is supervised per protocol (`[can] keepalive_timeout_s`, or not at all) and exported in
`stats`. The protocol can be switched at run time with `set_protocol()`. `[can] log` writes every
frame sent and received in candump log format.

This module must never decide a limit (the policy does) nor encode a frame itself (protocol/ does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import can

from gateway.app.config import CanConfig, ConfigError
from gateway.app.supervisor import ReadyCallback, Service
from gateway.core.policy.decisions import DecisionStore
from gateway.core.policy.engine import ChargeDecision
from mappings.flags import load_outputs
from protocol.inverter.can import registry
from protocol.inverter.can.base import CanFrame, InverterProtocol, OptionValue

if TYPE_CHECKING:
    from gateway.app.context import AppContext

log = logging.getLogger(__name__)

NO_DECISION_POLL_S = 0.1  # how often the send loop looks for the first decision
MAX_IDLE_S = 0.5  # the send loop wakes at least this often (stale checks, keepalive supervision)
ERROR_FRAMES_BEFORE_RECONNECT = 50
SEND_TIMEOUT_S = 0.2
MAX_RECONNECT_DELAY_S = 30.0


class KeepaliveState(enum.StrEnum):
    WAITING = "waiting"  # nothing received from the inverter yet (within the timeout)
    OK = "ok"
    LOST = "lost"  # no keepalive for longer than the timeout
    NOT_EXPECTED = "not_expected"  # `keepalive_expected = false`


@dataclass(slots=True)
class CanStats:
    """Live counters and states, read by metrics and the admin API."""

    protocol: str
    connected: bool = False
    frames_sent: int = 0
    frames_received: int = 0
    send_errors: int = 0
    error_frames: int = 0
    rx_dropped: int = 0  # received frames dropped because the event loop fell behind
    reconnects: int = 0
    keepalive: KeepaliveState = KeepaliveState.WAITING
    last_keepalive_at: float | None = None
    sending_stop: bool = False  # the last frames carried the stop encoding (blocked or stale)
    stale: bool = False
    inverter_commands: int = 0
    last_command: str | None = None
    last_error: str | None = None
    sent_by_id: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "protocol": self.protocol,
            "connected": self.connected,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "send_errors": self.send_errors,
            "error_frames": self.error_frames,
            "rx_dropped": self.rx_dropped,
            "reconnects": self.reconnects,
            "keepalive": self.keepalive.value,
            "last_keepalive_at": self.last_keepalive_at,
            "sending_stop": self.sending_stop,
            "stale": self.stale,
            "inverter_commands": self.inverter_commands,
            "last_command": self.last_command,
            "last_error": self.last_error,
        }


class _Reconnect(Exception):
    """The bus must be closed and reopened."""


RX_QUEUE_SIZE = 1000


class _Forward(can.Listener):
    """Hands frames from python-can's receive thread to the event loop through a bounded queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[can.Message] = asyncio.Queue(size)
        self.dropped = 0
        self.error: BaseException | None = None

    def on_message_received(self, msg: can.Message) -> None:  # receive thread
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._put, msg)

    def _put(self, msg: can.Message) -> None:  # event loop
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped += 1

    def on_error(self, exc: Exception) -> None:  # receive thread
        self.error = exc


def candump_line(timestamp: float, channel: str, frame: CanFrame) -> str:
    """One line of `candump -l` format: `(1700000000.000000) can0 351#1402740E740ECC01`."""
    ident = f"{frame.arbitration_id:08X}" if frame.is_extended else f"{frame.arbitration_id:03X}"
    return f"({timestamp:.6f}) {channel} {ident}#{frame.data.hex().upper()}\n"


def _channel_label(channel: str) -> str:
    return channel if re.fullmatch(r"[A-Za-z0-9_.-]{1,16}", channel) else "can0"


def default_bus_factory(config: CanConfig) -> Callable[[], can.BusABC]:
    def open_bus() -> can.BusABC:
        kwargs: dict[str, Any] = dict(config.interface_options)
        return can.Bus(interface=config.interface, channel=config.channel, bitrate=config.bitrate, **kwargs)

    return open_bus


class CanService:
    """Runs one inverter CAN protocol on one bus."""

    name = "can"

    def __init__(
        self,
        config: CanConfig,
        decisions: DecisionStore,
        *,
        stale_after_s: float = 10.0,
        bus_factory: Callable[[], can.BusABC] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.decisions = decisions
        self.stale_after_s = stale_after_s
        self._bus_factory = bus_factory or default_bus_factory(config)
        self._clock = clock
        self.protocol: InverterProtocol = registry.create(
            config.protocol, config.options, flag_outputs=load_outputs()
        )
        self.stats = CanStats(config.protocol)
        self.stats.keepalive = (
            KeepaliveState.WAITING if config.keepalive_expected else KeepaliveState.NOT_EXPECTED
        )
        self._started_at = clock()
        self._bus: can.BusABC | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._wake = asyncio.Event()
        self._log_lines: list[str] = []
        self._log_file: IO[str] | None = None
        self._channel_label = _channel_label(config.channel)
        self._last_sent: dict[tuple[int, bool], float] = {}
        for note in self.protocol.notes():
            log.warning("%s", note)

    # -- public API ----------------------------------------------------------------------------------
    def set_protocol(self, name: str, options: Mapping[str, OptionValue] | None = None) -> None:
        """Switch the protocol at run time (KeyError: unknown name, ValueError: bad option).

        Without `options`, the `[can] options` apply when `name` is the configured protocol, and
        the protocol's defaults otherwise.
        """
        if options is None:
            options = self.config.options if name == self.config.protocol else {}
        protocol = registry.create(name, options, flag_outputs=load_outputs())
        old = self.protocol.name
        self.protocol = protocol
        self.stats.protocol = name
        self.stats.keepalive = (
            KeepaliveState.WAITING if self.config.keepalive_expected else KeepaliveState.NOT_EXPECTED
        )
        self.stats.last_keepalive_at = None
        self._started_at = self._clock()
        self._last_sent.clear()
        for note in protocol.notes():
            log.warning("%s", note)
        log.info("inverter CAN protocol switched from %s to %s", old, name)
        self._wake.set()

    @property
    def protocol_names(self) -> list[str]:
        return registry.names()

    def current_state(self, now: float) -> ChargeDecision | None:
        """The decision the frames are built from (stale copy when it is too old); None before data."""
        decision = self.decisions.latest
        if decision is None or not decision.has_data:
            return None
        if not decision.stale and now - decision.computed_at > self.stale_after_s:
            return decision.as_stale(now)
        return decision

    # -- service -------------------------------------------------------------------------------------
    async def run(self, ready: ReadyCallback) -> None:
        delay = self.config.reconnect_delay_s
        announced = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="can-io")
        try:
            if self.config.log:
                try:
                    self._log_file = await self._io(
                        lambda: open(self.config.log or "", "a", encoding="ascii", buffering=1)  # noqa: SIM115
                    )
                except OSError as err:
                    raise ConfigError(f"can.log {self.config.log!r}: {err.strerror or err}") from None
            while True:
                try:
                    try:
                        await self._open()
                    except can.CanInterfaceNotImplementedError as err:
                        raise ConfigError(f"can.interface {self.config.interface!r}: {err}") from None
                    if not announced:
                        ready()
                        announced = True
                    delay = self.config.reconnect_delay_s
                    await self._serve()
                except (can.CanError, OSError, ValueError, _Reconnect) as err:
                    self.stats.last_error = f"{type(err).__name__}: {err}"
                    log.warning(
                        "CAN bus %s/%s: %s; reconnecting", self.config.interface, self.config.channel, err
                    )
                    if not announced:
                        ready()  # the first connection was attempted; the service keeps retrying
                        announced = True
                finally:
                    await self._close()
                self.stats.reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY_S)
        finally:
            await self._flush_log()
            if self._log_file is not None:
                with contextlib.suppress(OSError):
                    self._log_file.close()
                self._log_file = None
            await asyncio.to_thread(self._executor.shutdown, wait=True)  # a hung driver never blocks the loop
            self._executor = None

    async def _io(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def _open(self) -> None:
        self._bus = await self._io(self._bus_factory)
        self.stats.connected = True
        self.protocol.reset()
        self._last_sent.clear()
        log.info(
            "CAN bus open: %s %s at %d bit/s, protocol %s",
            self.config.interface,
            self.config.channel,
            self.config.bitrate,
            self.protocol.name,
        )

    async def _close(self) -> None:
        bus, self._bus = self._bus, None
        self.stats.connected = False
        if bus is not None:
            with contextlib.suppress(Exception):
                await self._io(bus.shutdown)

    async def _serve(self) -> None:
        bus = self._bus
        assert bus is not None
        forward = _Forward(asyncio.get_running_loop(), RX_QUEUE_SIZE)
        # No event loop given to the Notifier: it always receives in its own thread (never a file
        # descriptor reader on our loop), so stopping it off the loop below is safe.
        notifier = can.Notifier(bus, [forward], timeout=0.1)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive_loop(forward, notifier))
                tg.create_task(self._send_loop())
        except* (can.CanError, OSError, _Reconnect) as group:
            raise _Reconnect("; ".join(str(e) for e in group.exceptions)) from None
        finally:
            await self._io(lambda: notifier.stop(timeout=2.0))
            self.stats.rx_dropped += forward.dropped

    async def _send_loop(self) -> None:
        while True:
            now = self._clock()
            state = self.current_state(now)
            self._supervise_keepalive(now)
            if state is not None:
                frames = self.protocol.due(state, now)
                if frames:
                    self.stats.stale = state.stale
                    self.stats.sending_stop = not (state.charge_enabled and state.discharge_enabled)
                    await self._send(frames, now)
            await self._flush_log()
            nxt = self.protocol.next_due(self._clock())
            wait = MAX_IDLE_S if nxt is None else min(MAX_IDLE_S, max(0.0, nxt - self._clock()))
            if state is None:
                # No decision yet (or none with data): nothing is due, whatever the schedule says
                # (a never-sent group reads as due "now", which made this loop spin at 100 % CPU
                # while no pack answered). Look again soon: start once the first decision exists.
                wait = NO_DECISION_POLL_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _receive_loop(self, forward: _Forward, notifier: can.Notifier) -> None:
        error_run = 0
        while True:
            try:
                msg = await asyncio.wait_for(forward.queue.get(), timeout=1.0)
            except TimeoutError:
                failure = forward.error or notifier.exception
                if failure is not None:
                    raise _Reconnect(f"receive thread failed: {failure}") from None
                continue
            if msg.is_error_frame:
                self.stats.error_frames += 1
                error_run += 1
                if error_run >= ERROR_FRAMES_BEFORE_RECONNECT:
                    raise _Reconnect(f"{error_run} error frames in a row (bus-off?)")
                continue
            error_run = 0
            if msg.is_remote_frame:
                continue
            now = self._clock()
            try:
                frame = CanFrame(msg.arbitration_id, bytes(msg.data), bool(msg.is_extended_id))
            except Exception:  # malformed frame from a driver: count, drop, carry on
                self.stats.error_frames += 1
                continue
            self.stats.frames_received += 1
            self._log(msg.timestamp or now, frame)
            reaction = self.protocol.on_frame(frame, self.current_state(now), now)
            if reaction.keepalive:
                self.stats.last_keepalive_at = now
                if self.stats.keepalive in (KeepaliveState.WAITING, KeepaliveState.LOST):
                    if self.stats.keepalive is KeepaliveState.LOST:
                        log.info("inverter keepalive back (%s)", self.protocol.name)
                    if self.config.keepalive_expected:
                        self.stats.keepalive = KeepaliveState.OK
                self._wake.set()  # e.g. BYD: cyclic frames start once the inverter spoke
            if reaction.command is not None:
                self.stats.inverter_commands += 1
                self.stats.last_command = reaction.command
                log.warning("inverter command on CAN (%s): %s", self.protocol.name, reaction.command)
            if reaction.frames:
                await self._send(list(reaction.frames), now)

    def _supervise_keepalive(self, now: float) -> None:
        if not self.config.keepalive_expected:
            self.stats.keepalive = KeepaliveState.NOT_EXPECTED
            return
        last = self.stats.last_keepalive_at
        since = now - (last if last is not None else self._started_at)
        if since > self.config.keepalive_timeout_s and self.stats.keepalive is not KeepaliveState.LOST:
            self.stats.keepalive = KeepaliveState.LOST
            log.warning(
                "inverter keepalive lost (%s): nothing for %.0f s; frames keep flowing",
                self.protocol.name,
                since,
            )

    async def _send(self, frames: list[CanFrame], now: float) -> None:
        bus = self._bus
        if bus is None:
            return
        messages = [
            can.Message(
                arbitration_id=f.arbitration_id,
                data=f.data,
                is_extended_id=f.is_extended,
                dlc=len(f.data),
                timestamp=now,
            )
            for f in frames
        ]

        def send_all() -> list[str]:
            errors: list[str] = []
            for m in messages:
                try:
                    bus.send(m, timeout=SEND_TIMEOUT_S)
                except can.CanError as err:
                    errors.append(str(err))
            return errors

        errors: list[str] = await self._io(send_all)
        for f in frames:
            self._log(now, f)
            key = (f.arbitration_id, f.is_extended)
            self._last_sent[key] = now
            self.stats.sent_by_id[f.arbitration_id] = self.stats.sent_by_id.get(f.arbitration_id, 0) + 1
        self.stats.frames_sent += len(frames) - len(errors)
        if errors:
            self.stats.send_errors += len(errors)
            if len(errors) == len(frames):
                raise _Reconnect(f"send failed: {errors[0]}")

    def _log(self, timestamp: float, frame: CanFrame) -> None:
        if self._log_file is not None:
            self._log_lines.append(candump_line(timestamp, self._channel_label, frame))

    async def _flush_log(self) -> None:
        if self._log_file is None or not self._log_lines:
            return
        lines, self._log_lines = self._log_lines, []
        log_file = self._log_file
        if self._executor is None:
            return
        try:
            await self._io(lambda: log_file.write("".join(lines)))
        except OSError as err:
            log.warning("CAN log %s: %s", self.config.log, err)


def install(ctx: AppContext) -> list[Service]:
    """The inverter CAN service when `[can] enabled`, fed by `ctx.decisions`; shared as `ctx.can`
    (stats, `set_protocol()`)."""
    if not ctx.config.can.enabled:
        return []
    try:
        can_service = CanService(ctx.config.can, ctx.decisions, stale_after_s=ctx.config.policy.stale_after_s)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"can: {err}") from None
    ctx.can = can_service
    return [can_service]
