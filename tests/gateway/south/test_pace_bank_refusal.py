"""A PACE bank answer that does not add up is refused in the poller: the decode error is counted,
nothing is published, and the packs never show the misread values (they go stale)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gateway.core.model import Telemetry
from gateway.south.drivers.base import BusClient, Priority
from gateway.south.drivers.pace import PaceDriver
from protocol.bms.base import Frame
from protocol.bms.pace import commands as c
from protocol.bms.pace import values as v
from protocol.bms.pace.frame import PaceDecoder, PaceFrame, parse_frame
from tests.support.captures import by_name
from tests.support.poller_support import cfg, make, run_until

# the real two-pack status answer of a PACE master (bmspace), one byte short: read without the
# per-pack bytes it "fits" with 17 cells in pack 2; the analog answer says 16
STATUS = by_name("pace_bmspace_bank_status.toml", "0x44 bank status, two packs").hex_bytes[:-1]
BLOCK = v.AnalogBlock((3.3,) * 16, (25.0,) * 6, -1.0, 52.8, 90.0, (10000, 12, 10000))
ANALOG = v.encode_analog(v.bank_analog([BLOCK, BLOCK], pack_flags=(0x11, 0x00)))


class MasterOnly:
    """The master's answers to the bank reads (pack count 2, the analog and status INFO above)."""

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
        req = c.parse_request(parse_frame(request))
        info = {c.Cmd.PACK_COUNT: c.encode_pack_count(2), c.Cmd.ANALOG: ANALOG, c.Cmd.STATUS: STATUS}
        dec = PaceDecoder()
        dec.feed(c.response(req.address, 0, info[c.Cmd(req.cid2)]))
        return next(f for f in dec.frames() if isinstance(f, PaceFrame) and match(f))


class BankDriver(PaceDriver):
    async def read_bank_realtime(
        self, bus: BusClient, master: int, now: float, *, addresses: Sequence[int] | None = None
    ) -> Mapping[int, Telemetry]:
        return await super().read_bank_realtime(MasterOnly(), master, now, addresses=addresses)


async def test_inconsistent_bank_answer_is_counted_and_never_published() -> None:
    poller, store, owner = make(
        cfg(addresses=[1, 2], pace_master_only=True, realtime_interval_s=0.02), BankDriver()
    )
    await run_until(poller, lambda: owner.pack_counters(1).decode_errors >= 2)
    for address in (1, 2):
        snap = store.view.pack("b1", address)
        assert snap is not None and snap.telemetry is None and not snap.online
