"""The bus owner against an in-test TCP peer speaking a tiny checksummed frame format.

Frame: AA ADR CMD LEN DATA... SUM (SUM = sum of ADR..DATA & 0xFF); requests have CMD < 0x80,
answers CMD | 0x80. The format is deliberately not a real family, so these tests pin the owner's
behaviour (ordering, counting, outcomes) independently of the codecs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from gateway.south.bus import BusOwner
from gateway.south.drivers.base import NoResponse, NotSent, Priority
from gateway.south.transport import Backoff, Connection, SerialSettings, TransportError, open_connection
from protocol.bms.base import Frame, FrameDecoder
from protocol.errors import RemoteProtocolError


def build(addr: int, cmd: int, data: bytes = b"") -> bytes:
    body = bytes([addr, cmd, len(data)]) + data
    return b"\xaa" + body + bytes([sum(body) & 0xFF])


class FakeDecoder(FrameDecoder):
    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = buf.find(b"\xaa")
        if start < 0:
            self.discarded_bytes += len(buf)
            buf.clear()
            return None
        if start:
            self.discarded_bytes += start
            del buf[:start]
        if len(buf) < 5:
            return None
        total = 5 + buf[3]
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        if sum(raw[1:-1]) & 0xFF != raw[-1]:
            del buf[:1]
            raise RemoteProtocolError("bad checksum")
        del buf[:total]
        return Frame(raw=raw, address=raw[1], command=raw[2], is_request=raw[2] < 0x80)


Handler = Callable[[bytes], list[bytes] | None]


@dataclass
class Peer:
    """TCP peer: answers each request with what `handler` returns (list of chunks, or None = silent)."""

    handler: Handler
    port: int = 0
    seen: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    greeting: bytes = b""  # sent on connect (a converter's buffered junk)
    delay_s: float = 0.0

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.writers.append(w)
        if self.greeting:
            w.write(self.greeting)
        dec = FakeDecoder()
        try:
            while data := await r.read(1024):
                dec.feed(data)
                for item in dec.frames():
                    if isinstance(item, Frame):
                        self.seen.append(item.raw)
                        out = self.handler(item.raw)
                        if self.delay_s:
                            await asyncio.sleep(self.delay_s)
                        for chunk in out or []:
                            w.write(chunk)
                        await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    def drop_clients(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()


def answer(req: bytes, data: bytes = b"\x01\x02") -> bytes:
    return build(req[1], req[2] | 0x80, data)


@contextlib.asynccontextmanager
async def serving(peer: Peer) -> AsyncIterator[Peer]:
    server = await asyncio.start_server(peer._client, "127.0.0.1", peer.port)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        peer.drop_clients()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def owner_for(port: int, **kw: float | int) -> AsyncIterator[BusOwner]:
    async def opener() -> Connection:
        return await open_connection(f"socket://127.0.0.1:{port}", SerialSettings())

    params: dict[str, float | int] = {"gap_s": 0.0, "response_timeout_s": 0.3, "retries": 1}
    params.update(kw)
    owner = BusOwner(
        "b1",
        opener,
        FakeDecoder,
        backoff=Backoff(initial_s=0.05, max_s=0.1),
        **params,  # type: ignore[arg-type]
    )
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(owner.run(ready.set))
        await ready.wait()
        try:
            yield owner
        finally:
            task.cancel()


def is_answer(cmd: int) -> Callable[[Frame], bool]:
    return lambda f: f.command == cmd | 0x80


async def test_roundtrip_and_counters() -> None:
    async with serving(Peer(lambda req: [answer(req)])) as peer, owner_for(peer.port) as owner:
        frame = await owner.transact(build(3, 0x01), is_answer(0x01), address=3)
        assert frame is not None and frame.raw == build(3, 0x81, b"\x01\x02")
        c = owner.counters
        assert (c.requests, c.frames_sent, c.responses, c.frames_received) == (1, 1, 1, 1)
        pc = owner.pack_counters(3)
        assert pc.responses == 1 and pc.last_success_at is not None
        assert c.connected and c.connects == 1


async def test_echo_garbage_checksum_and_unexpected_address_are_counted_and_skipped() -> None:
    def handler(req: bytes) -> list[bytes]:
        bad = bytearray(answer(req, b"\x09\x09"))
        bad[-1] ^= 0xFF  # corrupted checksum
        return [req, b"\x00\x13garbage", bytes(bad), build(9, 0x81, b"\x05"), answer(req)]

    async with serving(Peer(handler)) as peer, owner_for(peer.port) as owner:
        frame = await owner.transact(build(2, 0x01), is_answer(0x01), address=2)
        assert frame is not None and frame.address == 2 and frame.raw.endswith(answer(build(2, 1))[-3:])
        pc = owner.pack_counters(2)
        assert pc.echoes == 1
        assert pc.checksum_errors >= 1
        assert pc.unexpected_address == 1
        assert pc.responses == 1 and pc.retries == 0


async def test_timeout_retries_then_no_response() -> None:
    async with serving(Peer(lambda req: None)) as peer, owner_for(peer.port, retries=2) as owner:
        with pytest.raises(NoResponse, match="address 4"):
            await owner.transact(build(4, 0x01), is_answer(0x01), address=4)
        pc = owner.pack_counters(4)
        assert (pc.frames_sent, pc.timeouts, pc.retries, pc.no_response) == (3, 3, 2, 1)
        assert len(peer.seen) == 3


async def test_corrupted_answer_is_retried_and_never_returned() -> None:
    calls = {"n": 0}

    def handler(req: bytes) -> list[bytes]:
        calls["n"] += 1
        good = answer(req, b"\x10\x20")
        if calls["n"] == 1:
            bad = bytearray(good)
            bad[4] ^= 0x01  # payload bit flip: checksum fails
            return [bytes(bad)]
        return [good]

    async with serving(Peer(handler)) as peer, owner_for(peer.port, retries=1) as owner:
        frame = await owner.transact(build(1, 0x01), is_answer(0x01), address=1)
        assert frame is not None and frame.raw[4:6] == b"\x10\x20"
        pc = owner.pack_counters(1)
        assert pc.checksum_errors == 1 and pc.timeouts == 1 and pc.retries == 1


async def test_priority_order_and_single_request_in_flight() -> None:
    peer = Peer(lambda req: [answer(req)], delay_s=0.05)
    async with serving(peer), owner_for(peer.port) as owner:
        first = asyncio.ensure_future(owner.transact(build(1, 0x01), is_answer(0x01), address=1))
        await asyncio.sleep(0.01)  # first is in flight now
        tasks = [
            asyncio.ensure_future(owner.transact(build(2, 0x01), is_answer(0x01), address=2)),
            asyncio.ensure_future(
                owner.transact(build(3, 0x02), is_answer(0x02), priority=Priority.BACKGROUND, address=3)
            ),
            asyncio.ensure_future(
                owner.transact(build(4, 0x05), is_answer(0x05), priority=Priority.ADMIN, address=4)
            ),
            asyncio.ensure_future(
                owner.transact(build(5, 0x06), is_answer(0x06), priority=Priority.FIRMWARE, address=5)
            ),
        ]
        await asyncio.gather(first, *tasks)
        assert [raw[1] for raw in peer.seen] == [1, 5, 4, 2, 3]
        for t, addr in zip(tasks, (2, 3, 4, 5), strict=True):
            frame = t.result()
            assert frame is not None and frame.address == addr


async def test_queue_full_is_not_sent() -> None:
    peer = Peer(lambda req: [answer(req)], delay_s=0.05)
    async with serving(peer), owner_for(peer.port, queue_size=2) as owner:
        tasks = [
            asyncio.ensure_future(owner.transact(build(1, 0x01), is_answer(0x01), address=1))
            for _ in range(5)
        ]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        refused = [r for r in results if isinstance(r, NotSent)]
        assert refused and all("queue full" in str(r) for r in refused)
        assert owner.counters.queue_full == len(refused)
        assert sum(isinstance(r, Frame) for r in results) == 5 - len(refused)


async def test_late_answer_never_satisfies_the_next_request() -> None:
    calls = {"n": 0}

    def handler(req: bytes) -> list[bytes] | None:
        calls["n"] += 1
        return None if calls["n"] == 1 else [answer(req, bytes([req[1]]))]

    peer = Peer(handler)
    async with serving(peer), owner_for(peer.port, retries=0, gap_s=0.15, response_timeout_s=0.2) as owner:
        with pytest.raises(NoResponse):
            await owner.transact(build(1, 0x01), is_answer(0x01), address=1)
        # a late answer for address 1 lands during the gap before the next request
        peer.writers[0].write(build(1, 0x81, b"\x01"))
        frame = await owner.transact(build(2, 0x01), is_answer(0x01), address=2)
        assert frame is not None and frame.raw == build(2, 0x81, b"\x02")
        assert owner.counters.late_frames == 1


async def test_peer_closing_the_socket_reconnects_and_flushes_stale_input() -> None:
    peer = Peer(lambda req: [answer(req)], greeting=b"\x55" * 7)
    async with serving(peer), owner_for(peer.port) as owner:
        assert await owner.transact(build(1, 0x01), is_answer(0x01), address=1) is not None
        peer.drop_clients()
        results: list[object] = []
        for _ in range(40):  # bounded: the owner notices the close, reconnects, serves again
            try:
                results.append(await owner.transact(build(1, 0x01), is_answer(0x01), address=1))
            except (NotSent, NoResponse) as err:
                results.append(err)
                await asyncio.sleep(0.05)
                continue
            break
        assert isinstance(results[-1], Frame)
        c = owner.counters
        assert c.connects == 2 and c.disconnects == 1
        assert c.flushed_bytes == 14  # the greeting of both connections, never decoded as data


async def test_link_down_fails_fast_with_not_sent() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with owner_for(port) as owner:
        with pytest.raises(NotSent, match=r"link down|not connected"):
            for _ in range(3):
                await owner.transact(build(1, 0x01), is_answer(0x01), address=1)
        assert owner.counters.connect_failures >= 1
        assert not owner.connected
        assert owner.pack_counters(1).not_sent >= 1


async def test_expect_no_response_and_missing_decoder() -> None:
    peer = Peer(lambda req: None)
    async with serving(peer), owner_for(peer.port) as owner:
        assert await owner.transact(build(7, 0x30), is_answer(0x30), expect_response=False, address=7) is None
        assert owner.pack_counters(7).frames_sent == 1

    async def opener() -> Connection:
        raise TransportError("never")

    bare = BusOwner("b2", opener, None)
    bare._accepting = True
    with pytest.raises(NotSent, match="protocol not known"):
        await bare.transact(b"x", lambda f: True)


async def test_adaptive_gap_backs_off_for_the_pack_that_needs_it_and_recovers() -> None:
    """Issue 17 defect 6: the configured gap is what the wire needs; a pack that misses an answer
    gets a longer gap before its own requests only, and returns to the bus's gap once it answers."""
    from gateway.south.bus import ADAPTIVE_GAP_DECAY_AFTER, ADAPTIVE_GAP_STEP_S

    ignored: list[bytes] = []

    def handler(req: bytes) -> list[bytes] | None:
        if req[1] == 5 and not ignored:  # address 5 misses its first request (busy)
            ignored.append(req)
            return None
        return [answer(req)]

    async with serving(Peer(handler)) as peer, owner_for(peer.port, gap_s=0.004) as owner:
        assert await owner.transact(build(5, 0x01), is_answer(0x01), address=5) is not None  # by the retry
        assert owner.pack_counters(5).gap_increases == 1
        assert owner.gap_for(5) == ADAPTIVE_GAP_STEP_S
        assert await owner.transact(build(6, 0x01), is_answer(0x01), address=6) is not None
        assert owner.gap_for(6) == 0.004 and owner.pack_counters(6).gap_s is None  # others unaffected
        for _ in range(ADAPTIVE_GAP_DECAY_AFTER):
            await owner.transact(build(5, 0x01), is_answer(0x01), address=5)
        assert owner.gap_for(5) == ADAPTIVE_GAP_STEP_S / 2
        for _ in range(2 * ADAPTIVE_GAP_DECAY_AFTER):
            await owner.transact(build(5, 0x01), is_answer(0x01), address=5)
        assert owner.gap_for(5) == 0.004 and owner.pack_counters(5).gap_s is None


async def test_a_silent_pack_backs_off_to_the_ceiling_only() -> None:
    from gateway.south.bus import ADAPTIVE_GAP_MAX_S

    silent = Peer(lambda req: None)
    async with serving(silent) as peer, owner_for(peer.port, response_timeout_s=0.05) as owner:
        for _ in range(6):
            with pytest.raises(NoResponse):
                await owner.transact(build(7, 0x01), is_answer(0x01), address=7)
        assert owner.gap_for(7) == ADAPTIVE_GAP_MAX_S


def test_the_default_gap_is_the_wires_not_the_vendor_tools() -> None:
    """3.5 character times at 9600 baud (about 4 ms), not 200 ms: the history download ran at the
    vendor tool's 2.6-3.0 records/s with 0.2 s (issue 17)."""
    from gateway.app.config import BusConfig
    from gateway.south.bus import BusOwner

    assert BusConfig(name="b1", url="socket://127.0.0.1:1").request_gap_s <= 3.5 * 10 / 9600 + 0.001
    assert BusOwner("b1", lambda: None).gap_s == BusConfig.model_fields["request_gap_s"].default  # type: ignore[arg-type,return-value]


async def test_an_admin_request_preempts_a_polls_retries() -> None:
    """Issue 17 defect 7: a poll of a silent pack gives its retries up when an admin request is
    waiting; the admin request is served before the poll's next attempt (ordering, not timing)."""
    served: list[int] = []

    def handler(req: bytes) -> list[bytes] | None:
        served.append(req[1])
        return None if req[1] == 7 else [answer(req)]

    async with (
        serving(Peer(handler)) as peer,
        owner_for(peer.port, retries=3, response_timeout_s=0.3) as owner,
    ):
        poll = asyncio.ensure_future(owner.transact(build(7, 0x01), is_answer(0x01), address=7))
        for _ in range(300):  # bounded: until the poll's first attempt is on the wire
            if served:
                break
            await asyncio.sleep(0.01)
        admin = await owner.transact(build(8, 0x02), is_answer(0x02), priority=Priority.ADMIN, address=8)
        assert admin is not None
        with pytest.raises(NoResponse, match="after 1 tries"):
            await poll
        assert served == [7, 8]
        pc = owner.pack_counters(7)
        assert (pc.frames_sent, pc.retries, pc.preempted) == (1, 0, 1)


async def test_per_request_retries_override() -> None:
    async with serving(Peer(lambda req: None)) as peer, owner_for(peer.port, retries=3) as owner:
        with pytest.raises(NoResponse):
            await owner.transact(build(4, 0x01), is_answer(0x01), address=4, retries=0)
        assert owner.pack_counters(4).frames_sent == 1
