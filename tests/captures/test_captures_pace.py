"""Real PACE bank answers (INFO FF through the master): decoded by the counts they declare including
the byte real masters send after each pack's block, or refused (never guessed); the driver refuses an
answer whose analog and status blocks disagree; the simulator's master answers in the real layout."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.south.drivers.base import NoResponse, Priority
from gateway.south.drivers.pace import PaceDriver
from protocol.bms.base import Frame
from protocol.bms.pace import commands as c
from protocol.bms.pace import values as v
from protocol.bms.pace.frame import PaceDecoder, PaceFrame, parse_frame
from protocol.errors import RemoteProtocolError
from simulator import Simulator, SimulatorOptions
from tests.support.captures import by_name

BMSPACE = by_name("pace_bmspace_bank_status.toml", "0x44 bank status, two packs")
SPDG = by_name("pace_spdg_bank_analog.toml", "0x42 bank analog, two packs")


def test_real_two_pack_status_answer_decodes_to_two_16_cell_packs() -> None:
    """Failing before: the per-pack byte after pack 1 (0x11) was read as pack 2's cell count (17)."""
    status = v.decode_status(BMSPACE.hex_bytes, bank=True)
    assert status.command_value == BMSPACE.stated["packs"] == len(status.packs)
    assert [len(p.cell_warnings) for p in status.packs] == BMSPACE.stated["cells"]
    assert [len(p.temp_warnings) for p in status.packs] == BMSPACE.stated["temperatures"]
    assert status.pack_flags == (0x11, 0x00)
    assert all(p.system == 0x0E for p in status.packs)  # MOSFETs on, as bmspace's parser shows


def test_an_answer_no_layout_fits_is_refused_never_guessed() -> None:
    """SPDG's two-pack answer has a tail no documented layout describes: refused with the reason."""
    f = parse_frame(SPDG.ascii_frame)
    assert f.info[:2] == b"\x00\x02"
    with pytest.raises(RemoteProtocolError, match="fit neither exactly one layout"):
        v.decode_analog(f.info, bank=True)


async def test_a_layout_that_fits_by_accident_is_caught_by_the_cross_check() -> None:
    """Without its last byte the real answer fits the layout without per-pack bytes exactly, with 17
    "cells" in pack 2 (the old misreading): the analog answer's 16 cells refuse it in the driver."""
    truncated = BMSPACE.hex_bytes[:-1]
    misread = v.decode_status(truncated, bank=True)
    assert [len(p.cell_warnings) for p in misread.packs] == [16, 17] and misread.pack_flags == ()
    analog = v.encode_analog(v.bank_analog([_analog(16, 6), _analog(16, 6)], pack_flags=(0x11, 0x00)))
    with pytest.raises(RemoteProtocolError, match=r"block 2 declares 16 cells .* but 17"):
        await PaceDriver().read_bank_realtime(MasterBus(analog, truncated), 1, now=0.0)


def test_the_layout_without_per_pack_bytes_is_still_read() -> None:
    blocks = tuple(v.decode_status(BMSPACE.hex_bytes, bank=True).packs)
    plain = v.encode_status(v.StatusResponse(0, 2, blocks))
    assert v.decode_status(plain, bank=True).packs == blocks
    flagged = v.encode_status(v.StatusResponse(0, 2, blocks, b"", (0x11, 0x00)))
    assert flagged == BMSPACE.hex_bytes  # our encoder rebuilds the real answer byte for byte


def _analog(cells: int, temps: int) -> v.AnalogBlock:
    return v.AnalogBlock((3.3,) * cells, (25.0,) * temps, -1.0, 3.3 * cells, 90.0, (10000, 12, 10000))


class MasterBus:
    """A BusClient whose master answers the bank reads with the given INFO fields."""

    def __init__(self, analog_info: bytes, status_info: bytes) -> None:
        self.infos = {c.Cmd.ANALOG: analog_info, c.Cmd.STATUS: status_info}

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
        if req.cid2 == c.Cmd.PACK_COUNT:
            info = c.encode_pack_count(2)
        else:
            info = self.infos[c.Cmd(req.cid2)]
        dec = PaceDecoder()
        dec.feed(c.response(req.address, 0, info))
        for item in dec.frames():
            if isinstance(item, PaceFrame) and match(item):
                return item
        raise NoResponse("no answer")


async def test_driver_reads_the_real_status_answer_with_a_matching_analog_answer() -> None:
    analog = v.encode_analog(v.bank_analog([_analog(16, 6), _analog(16, 6)], pack_flags=(0x11, 0x00)))
    bank = await PaceDriver().read_bank_realtime(MasterBus(analog, BMSPACE.hex_bytes), 1, now=0.0)
    assert sorted(bank) == [1, 2]
    assert [len(t.cell_voltages_v) for t in bank.values()] == [16, 16]


async def test_driver_refuses_analog_and_status_blocks_that_disagree() -> None:
    analog = v.encode_analog(v.bank_analog([_analog(16, 6), _analog(15, 6)]))
    with pytest.raises(RemoteProtocolError, match="block 2 declares 15 cells"):
        await PaceDriver().read_bank_realtime(MasterBus(analog, BMSPACE.hex_bytes), 1, now=0.0)


async def test_driver_refuses_a_pack_whose_counts_changed() -> None:
    driver = PaceDriver()
    analog = v.encode_analog(v.bank_analog([_analog(16, 6), _analog(16, 6)]))
    await driver.read_bank_realtime(MasterBus(analog, BMSPACE.hex_bytes), 1, now=0.0)
    fewer_temps = v.StatusBlock((0,) * 16, (0,) * 5)
    status = v.encode_status(v.StatusResponse(0, 2, (fewer_temps, fewer_temps)))
    analog5 = v.encode_analog(v.bank_analog([_analog(16, 5), _analog(16, 5)]))
    with pytest.raises(RemoteProtocolError, match="reported 16 cells and 6 temperatures before"):
        await driver.read_bank_realtime(MasterBus(analog5, status), 1, now=1.0)


async def test_simulator_master_answers_bank_reads_in_the_real_layout() -> None:
    sim = Simulator(SimulatorOptions(protocol="pace", packs=2, seed=3, pacing=False))
    for cmd in (c.Cmd.ANALOG, c.Cmd.STATUS):
        f = parse_frame(await sim.handle(c.request(1, cmd, b"\xff")))
        per_pack = v.decode_status if cmd == c.Cmd.STATUS else v.decode_analog
        decoded = per_pack(f.info, bank=True)
        assert decoded.pack_flags == (0x00, 0x00)  # one byte after each pack's block, like a real master
        assert len(decoded.packs) == 2


# --------------------------------------------------------------------------------------------
# Single-pack answers recorded from PbmsTools (nkinnan/esphome-pace-bms), incl. the C2 serial forms

PBMS = "pace_nkinnan_pbmstools_v25.toml"


def test_pbmstools_answers_decode_with_their_requests() -> None:
    from protocol.bms.registry import get

    family = get("pace")
    assert family.describe_answer is not None
    for request, answer in (("analog request", "analog answer"), ("status request", "status answer")):
        doc = family.describe_answer(by_name(PBMS, request).ascii_frame, by_name(PBMS, answer).ascii_frame)
        stated = by_name(PBMS, answer).stated
        pack = doc["value"]["packs"][0]
        cells = pack.get("cell_voltages_v", pack.get("cell_warnings"))
        temps = pack.get("temperatures_c", pack.get("temp_warnings"))
        assert (len(cells), len(temps)) == (stated["cells"], stated["temperatures"])
    hw = by_name(PBMS, "hardware version answer")
    assert c.decode_text(parse_frame(hw.ascii_frame).info) == hw.stated["text"]


def test_serial_number_answer_in_both_forms() -> None:
    """C2: this PbmsTools pack sends 40 bytes (BMS serial, then a blank pack serial), as bmspace
    expects (it reads the BMS serial from bytes 0-14 and the pack serial from bytes 20-33); the short
    20-byte form (BMS serial only) is read too."""
    real = by_name(PBMS, "serial number answer (40-byte form, pack serial blank)")
    info = parse_frame(real.ascii_frame).info
    assert len(info) == 40
    assert PaceDriver._serials(info) == (real.stated["bms_serial"], None)
    assert PaceDriver._serials(info[:20]) == (real.stated["bms_serial"], None)
    both = b"1812101380309D".ljust(20) + b"GPSR2PC200YW28".ljust(20)
    assert PaceDriver._serials(both) == ("1812101380309D", "GPSR2PC200YW28")


async def test_simulator_serial_answer_has_the_real_40_byte_form() -> None:
    sim = Simulator(SimulatorOptions(protocol="pace", packs=1, seed=3, pacing=False))
    f = parse_frame(await sim.handle(c.simple_request(1, c.Cmd.SERIAL_NUMBER)))
    assert len(f.info) == 40 and f.info[20:] == b" " * 20
    assert PaceDriver._serials(f.info)[0]


async def test_simulator_single_pack_answers_have_the_pbmstools_layouts() -> None:
    """Analog, status and hardware-version answers of the simulated pack: same INFO length and the
    same counts as the PbmsTools pack's (16 cells, 6 sensors, P = 3)."""
    sim = Simulator(SimulatorOptions(protocol="pace", packs=1, seed=3, pacing=False))
    for request, answer in (
        ("analog request", "analog answer"),
        ("status request", "status answer"),
    ):
        real = parse_frame(by_name(PBMS, answer).ascii_frame)
        ours = parse_frame(await sim.handle(by_name(PBMS, request).ascii_frame))
        assert len(ours.info) == len(real.info), answer
        assert ours.info[:3] == real.info[:3]  # DATAFLAG, address, cell count
    hw = parse_frame(by_name(PBMS, "hardware version answer").ascii_frame)
    ours_hw = parse_frame(await sim.handle(c.simple_request(1, c.Cmd.HARDWARE_VERSION)))
    assert len(ours_hw.info) == len(hw.info) == 20
    analog = v.decode_analog(parse_frame(await sim.handle(by_name(PBMS, "analog request").ascii_frame)).info)
    assert (
        len(analog.packs[0].user_defined)
        == len(
            v.decode_analog(parse_frame(by_name(PBMS, "analog answer").ascii_frame).info)
            .packs[0]
            .user_defined
        )
        == 3
    )
