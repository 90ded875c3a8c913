"""BYD Battery-Box Modbus RTU responder: register blocks, heartbeat, exceptions and ignored frames."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.inverter.rs485.base import BankView, Limits
from protocol.inverter.rs485.byd_modbus import (
    POINTS,
    BydModbusResponder,
    build_image,
)
from tests.support.pylon_rs485_helpers import bank, bank_view, module, read_req, ref_crc, rtu

NOW = 500.0


def exchange(view: BankView, request: bytes, r: BydModbusResponder | None = None, now: float = NOW) -> bytes:
    r = r or BydModbusResponder()
    r.feed(request)
    (ex,) = r.process(view, now)
    assert ex.response is not None, ex
    assert ex.response[-2:] == ref_crc(ex.response[:-2])
    return ex.response


def registers(response: bytes) -> list[int]:
    assert response[0] == 21 and response[1] in (3, 4)
    n = response[2]
    assert len(response) == 3 + n + 2
    return list(struct.unpack(f">{n // 2}H", response[3 : 3 + n]))


def text(regs: list[int]) -> str:
    return b"".join(r.to_bytes(2, "big") for r in regs).rstrip(b"\x00").decode()


def test_reference_crc_vector() -> None:
    assert rtu(1, bytes.fromhex("030000000A")).hex() == "01030000000ac5cd"


def test_golden_request_response_identity_marker() -> None:
    response = exchange(bank(), bytes.fromhex("15 03 0064 0002") + ref_crc(bytes.fromhex("150300640002")))
    assert response == rtu(21, bytes.fromhex("030453490001"))


def test_identity_block() -> None:
    regs = registers(exchange(bank(), read_req(100, 68)))
    assert text(regs[0:1]) == "SI" and regs[1] == 1
    assert text(regs[2:18]) == "BYD"
    assert text(regs[18:34]) == "BYD Battery-Box Premium HV"
    assert text(regs[34:42]) == "5.0" and text(regs[42:50]) == "3.26"
    assert text(regs[50:66]) == "P030T020Z0000000001"
    assert regs[66:68] == [1, 0]


def test_rating_block() -> None:
    view = bank(3)
    regs = registers(exchange(view, read_req(200, 13)))
    system = view.system
    assert system is not None and system.full_capacity_ah is not None
    assert regs[2] == min(57960, round(system.full_capacity_ah * system.voltage_v))
    assert regs[3:5] == [40960, 40960]
    assert regs[5] == 552 and regs[6] == 480
    assert regs[7:11] == [53248, 10, 53248, 10]


def test_live_block_values() -> None:
    mods = (module(1, current=-20.0, soc=55.0), module(2, current=-10.0, soc=45.0))
    view = bank_view(
        mods,
        energy_charged_wh=123456.0,
        energy_discharged_wh=7.0,
    )
    regs = registers(exchange(view, read_req(300, 24)))
    system = view.system
    assert system is not None
    v = system.voltage_v
    assert regs[0] == 3  # active
    assert regs[2] == 130  # discharging
    assert regs[3] == 5000  # 50.00 %
    assert regs[5] == round(system.remaining_capacity_ah * v)  # type: ignore[operator]
    assert regs[6] == round(200.0 * v)  # discharge power limit
    assert regs[7] == round(150.0 * v)
    assert regs[8] == round(v * 10) and regs[10] == round(v * 10)
    assert struct.unpack(">h", regs[9].to_bytes(2, "big"))[0] == round(30.0 * v)  # discharging positive
    assert regs[12] == 190 and regs[13] == 225  # min / max cell temperature in 0.1 °C
    assert regs[14:18] == [0, 0, 1, 123456 - 65536]
    assert regs[18:22] == [0, 0, 0, 7]
    assert regs[22] == 320  # hottest MOS/board sensor
    assert regs[23] == round(system.soh_pct * 100)  # type: ignore[operator]


def test_soc_floor_and_charging_status() -> None:
    view = bank_view((module(1, soc=0.2, current=40.0),))
    regs = registers(exchange(view, read_req(302, 2)))
    assert regs == [129, 100]


def test_stale_gives_fault_state_and_zero_power() -> None:
    stale_limits = Limits(55.2, 48.0, 150.0, 200.0, True, True, stale=True)
    for view in (
        bank(2, limits=stale_limits),
        bank_view((module(1, fresh=False),)),
    ):
        regs = registers(exchange(view, read_req(300, 9)))
        assert regs[0] == 4
        assert regs[6] == 0 and regs[7] == 0 and regs[8] == 0


def test_disabled_direction_has_zero_power() -> None:
    view = bank(1, limits=Limits(55.2, 48.0, 150.0, 200.0, charge_enabled=False, discharge_enabled=True))
    regs = registers(exchange(view, read_req(306, 2)))
    assert regs[0] > 0 and regs[1] == 0


def test_fc4_reads_the_same_image() -> None:
    view = bank()
    assert registers(exchange(view, read_req(300, 24, fc=4))) == registers(exchange(view, read_req(300, 24)))


def test_heartbeat_supervised() -> None:
    r = BydModbusResponder(heartbeat_timeout_s=300.0)
    view = bank()
    assert r.heartbeat(0.0).ok is None
    assert exchange(view, rtu(21, struct.pack(">BHH", 6, 401, 0x00FF)), r, now=10.0) == rtu(
        21, struct.pack(">BHH", 6, 401, 0x00FF)
    )
    assert r.heartbeat(100.0).ok is True
    exchange(view, rtu(21, struct.pack(">BHH", 6, 401, 0x00FF)), r, now=200.0)  # unchanged value
    assert r.heartbeat(311.0).ok is False
    exchange(view, rtu(21, struct.pack(">BHHB2H", 16, 400, 2, 4, 0, 0xFF00)), r, now=320.0)
    hb = r.heartbeat(321.0)
    assert hb.ok is True and hb.last_value == 0xFF00
    assert registers(exchange(view, read_req(400, 2), r)) == [0, 0xFF00]


def test_exceptions() -> None:
    view = bank()
    assert exchange(view, read_req(29999, 2)) == rtu(21, bytes([0x83, 0x02]))
    assert exchange(view, read_req(100, 126)) == rtu(21, bytes([0x83, 0x03]))
    assert exchange(view, rtu(21, struct.pack(">BHH", 6, 300, 1))) == rtu(21, bytes([0x86, 0x02]))
    assert exchange(view, rtu(21, bytes([0x2B, 0x0E, 0x01, 0x00]))) == rtu(21, bytes([0xAB, 0x01]))


def test_not_answered_other_unit_bad_crc_truncated() -> None:
    r = BydModbusResponder()
    view = bank()
    good = read_req(300, 2)
    bad = bytearray(read_req(300, 2))
    bad[-1] ^= 0xFF
    r.feed(read_req(300, 2, unit=1) + bytes(bad))
    exchanges = r.process(view, NOW)
    assert all(e.response is None for e in exchanges)
    assert r.crc_errors >= 1
    r.feed(good[:5])
    assert r.process(view, NOW) == []
    r.line_idle()  # the truncated request is dropped after the line went quiet
    r.feed(good)
    (ex,) = r.process(view, NOW)
    assert ex.valid_poll and ex.response is not None


def test_broadcast_write_applied_without_answer() -> None:
    r = BydModbusResponder()
    r.feed(rtu(0, struct.pack(">BHH", 6, 401, 0xFF00)))
    (ex,) = r.process(bank(), NOW)
    assert ex.response is None and ex.outcome == "broadcast"
    assert r.written(401) == 0xFF00


def test_points_do_not_overlap() -> None:
    seen: set[int] = set()
    for p in POINTS:
        span = set(range(p.address, p.address + p.size))
        assert not span & seen, p
        seen |= span
    assert len(build_image(bank())) == len(seen)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_never_raises_and_recovers(junk: bytes) -> None:
    r = BydModbusResponder()
    view = bank()
    r.feed(junk)
    r.process(view, NOW)
    r.line_idle()
    r.feed(read_req(303, 1))
    exchanges = r.process(view, NOW)
    assert exchanges[-1].response == rtu(21, bytes([3, 2]) + (8000).to_bytes(2, "big"))


@pytest.mark.parametrize("address", [p.address for p in POINTS])
def test_every_point_readable(address: int) -> None:
    assert registers(exchange(bank(), read_req(address, 1)))
