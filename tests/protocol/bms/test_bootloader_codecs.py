"""The codecs know the bootloader commands (Tianpower 0xA0-0xA4, PACE CID2 0xF0-0xF4): a request is
classified as a request (so its echo is recognised on the bus), a pack's reply as a response, and
both decode to typed messages and describe as JSON."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.south.bus import BusOwner
from gateway.south.drivers.base import Priority
from gateway.south.transport import Connection, open_connection
from protocol.bms import bootloader as bl
from protocol.bms.base import Frame
from protocol.bms.pace import commands as pc
from protocol.bms.pace import describe as pace_describe
from protocol.bms.pace.frame import PaceDecoder
from protocol.bms.pace.frame import parse_frame as pace_parse
from protocol.bms.registry import boot
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.describe import describe as tp_describe
from protocol.bms.tianpower.frame import TianpowerDecoder
from protocol.bms.tianpower.frame import parse_frame as tp_parse
from simulator import Simulator, SimulatorOptions

FAMILIES = ("tianpower", "pace")
PAYLOAD = bytes(range(256)) * 2


def _image(family: str) -> bl.FirmwareImage:
    return bl.parse_image(bl.build_image(family, "MODEL", "MODEL-2.0", PAYLOAD))


def _bodies(image: bl.FirmwareImage) -> dict[bl.Op, bytes]:
    return {
        bl.Op.ENTER: image.header.encode(),
        bl.Op.BLOCK: bl.encode_request(bl.Op.BLOCK, block_number=2, data=image.block(2)),
        bl.Op.VERIFY: b"",
        bl.Op.REBOOT: b"",
        bl.Op.STATUS: b"",
    }


def _reply_frame(family: str, address: int, op: bl.Op, reply: bl.BootReply) -> bytes:
    if family == "tianpower":
        return m.encode_response(address, m.BootloaderAnswer(boot(family).codes.code(op), reply))
    return pc.response(address, 0, reply.encode())


def test_enum_members_match_the_bootloader_tables() -> None:
    assert {c.name.lower()[5:]: int(c) for c in m.Cmd if c.name.startswith("BOOT_")} == boot(
        "tianpower"
    ).codes.by_name()
    assert {c.name.lower()[5:]: int(c) for c in pc.Cmd if c.name.startswith("BOOT_")} == boot(
        "pace"
    ).codes.by_name()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("op", list(bl.Op))
def test_requests_are_requests_and_replies_are_responses(family: str, op: bl.Op) -> None:
    body = _bodies(_image(family))[op]
    raw = boot(family).encode_frame(3, op, body)
    reply = bl.BootReply(bl.Status.OK, bl.Mode.BOOTLOADER, 3, 4, "MODEL-1.0")
    answer = _reply_frame(family, 3, op, reply)
    decoder = TianpowerDecoder() if family == "tianpower" else PaceDecoder()
    decoder.feed(raw + answer)  # as heard on the wire: the echo, then the pack's answer
    frames = [f for f in decoder.frames() if isinstance(f, Frame)]
    assert [f.is_request for f in frames] == [True, False]
    assert boot(family).decode_reply_frame(frames[1].raw, op) == reply
    if family == "tianpower":
        assert m.parse_request(tp_parse(raw)) == m.BootloaderRequest(3, bl.decode_request(op, body))
        assert m.encode_request(m.BootloaderRequest(3, bl.decode_request(op, body))) == raw
        assert m.parse_response(tp_parse(answer)) == m.BootloaderAnswer(boot(family).codes.code(op), reply)
        doc = tp_describe(raw)
        assert doc["direction"] == "request" and doc["message"]["op"] == op.name.lower()
        assert "firmware upgrade" in doc["command_name"]
        assert tp_describe(answer)["reply"]["version"] == "MODEL-1.0"
    else:
        req = pc.parse_request(pace_parse(raw))
        assert req.name == f"boot_{op.name.lower()}" and req.argument == bl.decode_request(op, body)
        doc = pace_describe(raw)
        assert doc["kind"] == "request" and doc["argument"]["op"] == op.name.lower()
        assert pace_describe(answer)["kind"] == "response"


def test_block_with_a_bad_crc_is_not_taken_for_a_request() -> None:
    good = bl.encode_request(bl.Op.BLOCK, block_number=0, data=b"abc")
    bad = good[:-1] + bytes((good[-1] ^ 1,))
    assert tp_parse(boot("tianpower").encode_frame(1, bl.Op.BLOCK, good)).is_request
    assert not tp_parse(boot("tianpower").encode_frame(1, bl.Op.BLOCK, bad)).is_request


@given(
    op=st.sampled_from(list(bl.Op)),
    status=st.sampled_from(list(bl.Status)),
    mode=st.sampled_from(list(bl.Mode)),
    next_block=st.integers(0, 255),  # see protocol/bms/tianpower/shapes.py for larger images
    total=st.integers(0, 0xFFFF),
    version=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24),
)
def test_no_reply_is_classified_as_a_request(
    op: bl.Op, status: bl.Status, mode: bl.Mode, next_block: int, total: int, version: str
) -> None:
    reply = bl.BootReply(status, mode, next_block, total, version)
    for family in FAMILIES:
        raw = _reply_frame(family, 1, op, reply)
        frame = tp_parse(raw) if family == "tianpower" else pace_parse(raw)
        assert not frame.is_request
        assert boot(family).decode_reply_frame(raw, op) == reply


@pytest.mark.parametrize("family", FAMILIES)
async def test_bus_owner_skips_another_masters_bootloader_request(family: str) -> None:
    # The answer comes 0.3 s after our request; meanwhile a second master on the same wire sends a
    # VERIFY to the same pack. Our matcher accepts any frame from address 1, so only the codec's
    # request classification keeps that foreign request from being taken for our answer.
    sim = Simulator(  # paced at a high rate: the answer leaves after the 0.3 s turnaround
        SimulatorOptions(protocol=family, packs=1, baud=1_000_000, turnaround_s=0.3)  # type: ignore[arg-type]
    )
    async with sim.serve_tcp("127.0.0.1", 0) as server:

        async def opener() -> Connection:
            return await open_connection(f"socket://127.0.0.1:{server.port}")

        decoder = TianpowerDecoder if family == "tianpower" else PaceDecoder
        owner = BusOwner(
            "b", opener, decoder, gap_s=0.0, response_timeout_s=5.0, retries=0, flush_after_connect_s=0.0
        )
        linked = asyncio.Event()
        _reader, other = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            async with asyncio.TaskGroup() as tg:
                runner = tg.create_task(owner.run(linked.set))
                await asyncio.wait_for(linked.wait(), 5.0)
                ask = tg.create_task(
                    owner.transact(
                        boot(family).encode_frame(1, bl.Op.STATUS, b""),
                        lambda f: f.address == 1,
                        priority=Priority.FIRMWARE,
                        address=1,
                    )
                )
                for _ in range(500):  # until the simulated bus has our request
                    if server.requests_served:
                        break
                    await asyncio.sleep(0.01)
                assert server.requests_served == 1
                other.write(boot(family).encode_frame(1, bl.Op.VERIFY, b""))
                await other.drain()
                frame = await ask
                runner.cancel()
        except* asyncio.CancelledError:
            pass
        finally:
            other.close()
            await other.wait_closed()
    assert frame is not None and not frame.is_request
    reply = boot(family).decode_reply_frame(frame.raw, bl.Op.STATUS)
    assert reply.mode is bl.Mode.APPLICATION and reply.status is bl.Status.OK
    assert owner.counters.echoes == 1  # the other master's request, recognised as a request
