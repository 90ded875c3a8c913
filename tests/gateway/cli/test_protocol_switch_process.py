"""End to end, with real processes: `bms-gateway run` speaks an inverter CAN protocol (slcan over TCP,
read here) and an RS485 inverter protocol (over TCP, polled here); `bms-gateway admin protocol`
switches both at run time; the frames and answers on the wire change at once, the configuration
file differs in exactly the two `protocol` lines (comments kept), and a restarted gateway speaks
the new protocols."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from protocol.inverter.rs485.pylon_peer import build_request
from tests.support import REPO
from tests.support.pylon_rs485_helpers import read_req, ref_crc, ref_decode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = REPO
VICTRON_ONLY = {0x370, 0x371, 0x372, 0x373, 0x374, 0x375, 0x376, 0x377, 0x382}  # never sent by pylon

CONFIG = """\
# bms-gateway: protocol switch test
state_dir = "state"

[http]
listen = "127.0.0.1:0"

[modbus]
enabled = false

[simulator]
enabled = true
packs = 2
profile = "idle"

# the inverter's CAN port
[can]
enabled = true
interface = "slcan"
channel = "socket://127.0.0.1:{can_port}"
protocol = "pylon"  # what the inverter menu says
interface_options = {{ sleep_after_open = 0 }}

[inverter_rs485]
enabled = true
url = "socket://127.0.0.1:{rs485_port}"
protocol = "pylon-rs485"   # the RS485 battery protocol
"""


class Line:
    """One TCP peer the gateway connects to (a converter): the latest connection's streams."""

    def __init__(self) -> None:
        self.conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await self.conns.put((reader, writer))

    async def accept(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(30):
            return await self.conns.get()


@contextlib.asynccontextmanager
async def line() -> AsyncIterator[Line]:
    peer = Line()
    server = await asyncio.start_server(peer.on_conn, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        for w in peer.writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        server.close()
        await server.wait_closed()


async def can_ids(
    reader: asyncio.StreamReader, *, until: set[int] | None = None, frames: int = 40
) -> set[int]:
    """CAN ids of the next `frames` slcan frames, or of the frames up to one of `until`."""
    seen: set[int] = set()
    count = 0
    async with asyncio.timeout(30):
        while True:
            raw = (await reader.readuntil(b"\r")).strip(b"\r\x07")
            if raw[:1] == b"t":
                seen.add(int(raw[1:4], 16))
            elif raw[:1] == b"T":
                seen.add(int(raw[1:9], 16))
            else:
                continue  # slcan commands (bitrate, open)
            count += 1
            if (until is not None and seen & until) or (until is None and count >= frames):
                return seen


async def drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.2):
            while await reader.read(4096):
                pass


async def pylon_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Poll module 1 (ADR 2) with Pylon 0x42 and return the ADR of the (checked) answer."""
    await drain(reader)
    writer.write(build_request(0x20, 2, 0x42, bytes([2])))
    await writer.drain()
    async with asyncio.timeout(10):
        raw = await reader.readuntil(b"\r")
    return ref_decode(raw[raw.index(b"~") :]).adr


async def byd_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """A BYD Modbus read of the identity registers (unit 21): the checked RTU answer."""
    await drain(reader)
    writer.write(read_req(0x64, 2))
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readexactly(3)
        rest = await reader.readexactly(head[2] + 2)
    answer = head + rest
    assert answer[-2:] == ref_crc(answer[:-2]) and answer[:2] == bytes([21, 3]), answer.hex()
    return answer


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def gateway(cfg: Path) -> AsyncIterator[str]:
    """`bms-gateway run --config cfg` until the block ends; yields its HTTP URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "run", "--config", str(cfg), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        url = ""
        async with asyncio.timeout(30):
            while not url:
                text = (await proc.stdout.readline()).decode()
                assert text, "the gateway exited early"
                if text.startswith("http:"):
                    url = text.removeprefix("http:").strip()
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]


async def test_protocol_switch_at_run_time_persisted_with_comments(tmp_path: Path) -> None:
    async with line() as can_line, line() as rs485_line:
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(CONFIG.format(can_port=can_line.port, rs485_port=rs485_line.port))
        before_text = cfg.read_text()
        code, out, err = await cli("token", "create", "--role", "admin", "--config", str(cfg))
        assert code == 0, err
        token = out.strip().splitlines()[-1]

        async with gateway(cfg) as url:
            env = {"BMS_GATEWAY_URL": url, "BMS_GATEWAY_TOKEN": token}
            can_r, _ = await can_line.accept()
            rs_r, rs_w = await rs485_line.accept()
            ids = await can_ids(can_r, frames=30)
            assert 0x351 in ids and not ids & VICTRON_ONLY, sorted(ids)  # pylon
            assert await pylon_answer(rs_r, rs_w) == 2

            code, out, err = await cli(
                "admin", "protocol", "--can", "victron", "--rs485", "byd-modbus", env=env
            )
            assert code == 0, (out, err)

            # the running services switched: victron frames on CAN, BYD Modbus answers on RS485
            assert await can_ids(can_r, until=VICTRON_ONLY) & VICTRON_ONLY
            await byd_answer(rs_r, rs_w)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                doc = (
                    await client.get("/api/gateway/protocols", headers={"Authorization": f"Bearer {token}"})
                ).json()
            assert (doc["can"]["protocol"], doc["rs485"]["protocol"]) == ("victron", "byd-modbus")

        # the file differs in exactly the two protocol lines; every comment is still there
        after_text = cfg.read_text()
        changed = difflib.unified_diff(before_text.splitlines(), after_text.splitlines(), lineterm="", n=0)
        diff = [d for d in changed if d[:1] in "+-" and not d.startswith(("+++", "---"))]
        assert sorted(diff) == sorted(
            [
                '-protocol = "pylon"  # what the inverter menu says',
                '+protocol = "victron"  # what the inverter menu says',
                '-protocol = "pylon-rs485"   # the RS485 battery protocol',
                '+protocol = "byd-modbus"   # the RS485 battery protocol',
            ]
        ), diff
        code, _, err = await cli("config", "check", str(cfg))
        assert code == 0, err

        # a restarted gateway speaks the persisted protocols from its first frame
        async with gateway(cfg):
            can_r, _ = await can_line.accept()
            rs_r, rs_w = await rs485_line.accept()
            ids = await can_ids(can_r, until=VICTRON_ONLY)
            assert ids & VICTRON_ONLY
            await byd_answer(rs_r, rs_w)
