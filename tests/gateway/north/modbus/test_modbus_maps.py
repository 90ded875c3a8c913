"""The register maps: tables equal the SunSpec definitions, and clients nobody here wrote read them."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pyModbusTCP.client import ModbusClient
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from gateway.core.controls import Controls, Source
from gateway.core.model import ModelStore
from mappings.flags import load_outputs
from mappings.modbus import load_native_map, load_sunspec_map, load_sunspec_models
from protocol.modbus.image import PointType
from tests.support.flags import named
from tests.support.modbus_support import NOW, make_store, running, snapshot

# ------------------------------------------------------------------ tables


def _sunspec_json(model_id: int) -> dict[str, Any]:
    text = resources.files("sunspec2").joinpath(f"models/json/model_{model_id}.json").read_text()
    group: dict[str, Any] = json.loads(text)["group"]
    return group


@pytest.mark.parametrize("model_id", [1, 802, 803, 804, 805, 124])
def test_point_tables_equal_the_sunspec_definitions(model_id: int) -> None:
    model = load_sunspec_models()[model_id]
    ref = _sunspec_json(model_id)
    assert model.name == ref["name"]
    offset = 0
    for ours, theirs in zip(model.fixed.points, ref["points"], strict=True):
        assert (ours.name, ours.offset, ours.type.value, ours.size) == (
            theirs["name"],
            offset,
            theirs["type"],
            theirs["size"],
        )
        assert (ours.sf or None) == theirs.get("sf")
        assert ours.writable == (theirs.get("access") == "RW")
        assert ours.mandatory == (theirs.get("mandatory") == "M")
        offset += theirs["size"]
    if model.group is None:
        assert not ref.get("groups")
    else:
        gref = ref["groups"][0]
        assert model.group.name == gref["name"] and model.group.count == gref["count"]
        assert [p.name for p in model.group.block.points] == [p["name"] for p in gref["points"]]
        assert model.group.block.length == sum(p["size"] for p in gref["points"])


def test_sunspec_map_and_native_map_load() -> None:
    smap = load_sunspec_map()
    assert smap.base_address == 40000
    assert set(smap.writable[802]) == {"SocRsvMax", "SoCRsvMin", "CtrlHb", "AlmRst", "SetOp"}
    nmap = load_native_map()
    assert nmap.pack_start(1) == 1000 and nmap.pack_start(2) == 1128
    cells = [p for p in nmap.pack.block.points if p.name.startswith("cell_voltage_v_")]
    assert len(cells) == 32 and cells[0].offset == 36 and cells[-1].offset == 67
    assert all(p.writable for p in nmap.control.block.points)
    assert nmap.bank.block.point("voltage_v").sf == -2
    assert nmap.pack.block.point("serial").type is PointType.STRING


# ------------------------------------------------------------------ pysunspec2


def _scan(port: int, unit: int = 1) -> SunSpecModbusClientDeviceTCP:
    device = SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5)
    device.scan()
    return device


async def test_pysunspec2_scans_the_bank_and_reads_the_truth() -> None:
    store = make_store((1, 2, 3))
    async with running(store) as server:
        device = await asyncio.to_thread(_scan, server.port or 0)
        try:
            ids = [m.model_id for m in device.model_list]
            errors = [m.error_info for m in device.model_list]
            bank = device.models[802][0]
            bank803 = device.models[803][0]
            strings = device.models[804]
            modules = device.models[805]
            view = store.view
            assert ids == [1, 802, 803, 804, 804, 804, 805, 805, 805, 124]
            assert errors == [""] * len(ids)
            assert device.models[1][0].Mn.value == "bms-gateway"
            assert bank.SoC.cvalue == pytest.approx(view.bank.soc_pct, abs=0.05)
            assert bank.V.cvalue == pytest.approx(view.bank.voltage_v, abs=0.005)
            assert bank.A.cvalue == pytest.approx(view.bank.current_a, abs=0.05)
            assert bank.W.cvalue == pytest.approx(view.bank.power_w, abs=5)
            assert bank.CellVMax.cvalue == pytest.approx(view.bank.cell_max.value, abs=0.0005)  # type: ignore[union-attr]
            assert bank.Typ.value == 4 and bank.State.value == 3 and bank.ChaSt.value == 4
            assert bank803.NStr.value == 3 and bank803.NStrCon.value == 3
            assert len(bank803.string) == 3
            for i, pack in enumerate(view.ordered()):
                t = pack.telemetry
                assert t is not None
                assert strings[i].Idx.value == i + 1
                assert strings[i].SoC.cvalue == pytest.approx(t.soc_pct, abs=0.05)
                assert strings[i].A.cvalue == pytest.approx(t.current_a, abs=0.005)
                assert bank803.string[i].StrSoC.cvalue == pytest.approx(t.soc_pct, abs=0.05)
                cells = modules[i].groups["lithium-ion-module-cell"]
                assert modules[i].StrIdx.value == i + 1 and modules[i].NCell.value == 16
                assert [c.CellV.cvalue for c in cells] == pytest.approx(list(t.cell_voltages_v), abs=0.0005)
                assert [bool(c.CellSt.value & 1) for c in cells] == [
                    n + 1 in t.balancing_cells for n in range(16)
                ]
                assert modules[i].SN.value == f"SN{pack.address:04d}"
            storage = device.models[124][0]
            assert storage.ChaState.cvalue == pytest.approx(view.bank.soc_pct, abs=0.05)
        finally:
            device.disconnect()


async def test_pysunspec2_offline_pack_shows_sentinels_and_is_counted_out() -> None:
    store = make_store((1, 2), offline=(2,))
    async with running(store) as server:
        device = await asyncio.to_thread(_scan, server.port or 0)
        try:
            assert [m.error_info for m in device.model_list] == [""] * len(device.model_list)
            bank = device.models[802][0]
            pack1 = store.view.pack("bus1", 1)
            assert pack1 is not None and pack1.telemetry is not None
            assert bank.SoC.cvalue == pytest.approx(pack1.telemetry.soc_pct, abs=0.05)  # only pack 1
            assert bank.Evt1.value & 1  # COMMUNICATION_ERROR: a configured pack is not online
            assert device.models[803][0].NStrCon.value == 1
            offline_string, offline_module = device.models[804][1], device.models[805][1]
            assert offline_string.Idx.value == 2
            assert offline_string.SoC.value is None and offline_string.A.value is None
            assert offline_module.V.value is None
            cells = offline_module.groups["lithium-ion-module-cell"]
            assert len(cells) == 16 and all(c.CellV.value is None for c in cells)
        finally:
            device.disconnect()


async def test_pysunspec2_per_pack_unit() -> None:
    store = make_store((1, 2))
    async with running(store, per_pack_unit_base=100) as server:
        device = await asyncio.to_thread(_scan, server.port or 0, 102)
        try:
            assert [m.model_id for m in device.model_list] == [1, 802, 804, 805]
            assert [m.error_info for m in device.model_list] == [""] * 4
            t = store.view.pack("bus1", 2).telemetry  # type: ignore[union-attr]
            assert t is not None
            assert device.models[1][0].SN.value == "SN0002"
            assert device.models[802][0].SoC.cvalue == pytest.approx(t.soc_pct, abs=0.05)
            assert device.models[805][0].CellVMin.cvalue == pytest.approx(t.cell_min_v, abs=0.0005)
        finally:
            device.disconnect()


async def test_pysunspec2_writes_reserve_through_fc6_and_fc16() -> None:
    controls = Controls()
    async with running(make_store(), controls, writes=True) as server:

        def write() -> None:
            device = _scan(server.port or 0)
            try:
                battery = device.models[802][0]
                battery.SoCRsvMin.cvalue = 15.5
                battery.write()  # one register: FC6
                battery.CtrlHb.value = 9
                battery.AlmRst.value = 1
                battery.write()  # two adjacent registers: FC16
                battery.read()
                assert battery.SoCRsvMin.cvalue == pytest.approx(15.5)
                assert battery.CtrlHb.value == 9
            finally:
                device.disconnect()

        await asyncio.to_thread(write)
        assert server.stats.requests_by_function[6] >= 1 and server.stats.requests_by_function[16] >= 1
    assert controls.state().value("soc_reserve_min_pct") == pytest.approx(15.5)
    assert ("soc_reserve_min_pct", Source.EMS) in controls.raw()
    assert controls.state().alarm_reset_requested_at is not None


async def test_cell_count_above_the_default_grows_the_805_model() -> None:
    store = ModelStore([("bus1", 1)])
    store.publish(snapshot(1, cells=20), now=NOW)
    async with running(store) as server:
        device = await asyncio.to_thread(_scan, server.port or 0)
        try:
            module = device.models[805][0]
            assert module.error_info == "" and module.NCell.value == 20
            assert len(module.groups["lithium-ion-module-cell"]) == 20
        finally:
            device.disconnect()


# ------------------------------------------------------------------ native map


async def test_pymodbus_client_reads_the_native_map() -> None:
    store = make_store((1, 2))
    async with running(store) as server:
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port or 0, timeout=5, retries=0)
        await client.connect()
        try:
            bank = await client.read_holding_registers(0, count=41, device_id=2)
            pack2 = await client.read_input_registers(1128, count=124, device_id=2)
            missing = await client.read_holding_registers(1256, count=1, device_id=2)
        finally:
            client.close()
    assert not bank.isError() and not pack2.isError()
    regs = bank.registers
    view = store.view
    assert regs[0:4] == [1, 2, 1000, 128]  # version, pack count, base, stride
    assert regs[4] == 2 and regs[7] & 1  # two online, data_valid
    assert regs[10] == round(view.bank.voltage_v * 100)  # type: ignore[operator]
    assert regs[11] == round(view.bank.current_a * 10)  # type: ignore[operator]
    power = AsyncModbusTcpClient.convert_from_registers(regs[12:14], AsyncModbusTcpClient.DATATYPE.INT32)
    assert power == round(view.bank.power_w)  # type: ignore[arg-type]
    assert regs[14] == round(view.bank.soc_pct * 10)  # type: ignore[operator]
    t = view.pack("bus1", 2).telemetry  # type: ignore[union-attr]
    assert t is not None
    p = pack2.registers
    assert p[0] == 2 and p[1] == 1 and p[3] == 16
    assert p[6] == round(t.current_a * 100)
    assert p[36:52] == [round(v * 1000) for v in t.cell_voltages_v]
    assert p[52] == 0xFFFF  # cell 17 does not exist: not implemented
    assert p[68] == round(t.temperatures[0].value_c * 10) and p[76] == 1 and p[80] == 2  # cell, then mos
    serial = AsyncModbusTcpClient.convert_from_registers(p[84:100], AsyncModbusTcpClient.DATATYPE.STRING)
    assert serial == "SN0002"
    assert missing.isError() and missing.exception_code == 2


async def test_pymodbustcp_reads_the_native_map_and_sees_offline_packs() -> None:
    store = make_store((1, 2), offline=(2,))
    async with running(store) as server:

        def read() -> tuple[list[int] | None, list[int] | None, list[int] | None]:
            client = ModbusClient(
                host="127.0.0.1", port=server.port or 0, unit_id=2, timeout=5.0, auto_open=True
            )
            try:
                return (
                    client.read_holding_registers(0, 41),
                    client.read_input_registers(1000, 36),
                    client.read_holding_registers(1128, 36),
                )
            finally:
                client.close()

        bank, pack1, pack2 = await asyncio.to_thread(read)
    assert bank is not None and pack1 is not None and pack2 is not None
    t = store.view.pack("bus1", 1).telemetry  # type: ignore[union-attr]
    assert t is not None
    assert bank[4:7] == [1, 0, 1]  # online, stale, offline
    assert bank[7] & 0b10001 == 0b10001  # data valid, a pack not online
    assert bank[14] == round(t.soc_pct * 10)  # the bank is pack 1 alone
    assert pack1[1] == 1 and pack1[5] == round(t.voltage_v * 100) and pack1[9] == round(t.soc_pct * 10)
    assert pack2[0] == 2 and pack2[1] == 3  # address, offline
    assert pack2[2] == 0 and pack2[5] == 0xFFFF and pack2[6] == 0x8000  # no data: sentinels


@pytest.mark.parametrize(
    ("name", "bit"),
    [
        ("DISC_OT_Prot", 1),  # Tianpower vendor-tool names
        ("CHG_UT_Prot", 3),
        ("Short_Circuit_Prot", 7),
        ("Over_Voltage_Prot", 9),
        ("Under_Voltage_Prot", 11),
        ("SOC_Low_Prot", 13),
        ("Full_Cha_Prot", 15),
        ("CHG_OC_Alarm", 6),
        ("DISC_OC_Alarm", 8),
        ("CELL_OV_Alarm", 10),
        ("Vol_Diff_Alarm", 17),
        ("Temp_Diff_Alarm", 19),
        ("NTC_Short_Circuit", 26),  # a sensor fault that blocks nothing: OTHER_WARNING, no short circuit
        ("Hot_Failure", 21),  # bms_proto: fan failure -> FAN_ERROR, not a temperature
        ("CHG_MOS_Fault", 20),  # the MOS is the pack's contactor
        ("Secondary_Trip", 25),  # OTHER_ALARM
        ("COM_Timeout", 0),  # COMMUNICATION_ERROR
        ("SN_Code_Failure", 29),  # CONFIGURATION_WARNING
        ("Cell OV protection", 9),  # PACE (PbmsTools wording)
        ("Charge OC protection", 5),
        ("Discharge OC protection", 7),
        ("Environment UT protection", 3),
        ("NTC fault", 26),
    ],
)
def test_event_bits_from_flag_meanings(name: str, bit: int) -> None:
    from gateway.north.modbus.sunspec import EVENT_OUTPUT, event_bits

    out = load_outputs()[EVENT_OUTPUT]
    symbols = load_sunspec_models()[802].symbols["Evt1"]
    assert event_bits(out, symbols, named(name), False) == {bit}
    assert event_bits(out, symbols, (), True) == {0}
