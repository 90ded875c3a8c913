"""The configuration: one TOML file validated at start-up into typed, frozen objects.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key stops the start with a
message naming it. Secrets may come from the environment (`BMS_GATEWAY_MQTT_PASSWORD`, ...).
Nothing here reads a file at import time; `load_config(path)` is the only entry point.

Each adapter owns its section below. Every key has a docstring right under it (pydantic's
attribute docstrings: the field's `description`): it is the key's meaning in the tables of
docs/configuration.md, which `bms-gateway config docs --write docs/configuration.md` regenerates
from this schema (a test fails when the committed tables differ).
"""

from __future__ import annotations

import itertools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from protocol.bms import registry as bms_registry
from protocol.inverter.can import registry as can_registry
from protocol.inverter.rs485 import registry as rs485_registry
from protocol.registry import Registry


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and what is allowed."""


def listen_error(key: str, listen: str, err: OSError) -> ConfigError:
    """The one-line start-up error of a listener that cannot bind (`run` exits 2 with it)."""
    import errno

    hint = " (address already in use)" if err.errno == errno.EADDRINUSE else ""
    return ConfigError(f"{key}: cannot listen on {listen!r}{hint}: {err.strerror or err}")


class Section(BaseModel):
    # The keys' attribute docstrings are their documentation: `gateway.app.config_docs` reads them
    # from the source for docs/configuration.md. Not `use_attribute_docstrings`: that re-reads and
    # parses this file on every start (about 17 ms of the start-up) for text nothing at run time shows.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), got {value!r}")
    return value


ListenAddr = Annotated[str, AfterValidator(_check_listen)]


@dataclass(frozen=True, slots=True)
class OneOf:
    """A name that `registry` knows (or one of `extra`): the allowed values come from the registry
    (`gateway.app.config_docs` lists them as the key's allowed values)."""

    registry: Registry[Any]
    extra: tuple[str, ...] = ()

    @property
    def allowed(self) -> tuple[str, ...]:
        return (*self.registry.names(), *self.extra)

    def __call__(self, value: str) -> str:
        if value not in self.allowed:
            allowed = ", ".join(repr(n) for n in self.allowed)
            raise ValueError(f"unknown {self.registry.kind} {value!r} (allowed: {allowed})")
        return value


def _registered(registry: Registry[Any], *extra: str) -> AfterValidator:
    return AfterValidator(OneOf(registry, extra))


AUTO = "auto"  # `[[bus]] protocol`: detect the family on the bus
BmsFamilyName = Annotated[str, _registered(bms_registry.FAMILIES)]
BusProtocol = Annotated[str, _registered(bms_registry.FAMILIES, AUTO)]
CanProtocolName = Annotated[str, _registered(can_registry.PROTOCOLS)]
Rs485ProtocolName = Annotated[str, _registered(rs485_registry.PROTOCOLS)]


class BusConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    """used in URLs, metrics labels, topics"""
    url: str
    """/dev/ttyUSB0, /dev/serial/by-id/..., socket://host:port, rfc2217://host:port"""
    protocol: BusProtocol = bms_registry.DEFAULT
    """BMS wire protocol family; `auto` probes every family at start-up"""
    addresses: list[Annotated[int, Field(ge=0, le=15)]] = Field(default_factory=lambda: [1], min_length=1)
    """pack addresses (DIP switch values) polled on this bus, unique, 0..15"""
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    """serial device paths and rfc2217:// only (a socket:// converter has its own setting)"""
    parity: Literal["N", "E", "O"] = "N"
    """N, E or O (serial device paths and rfc2217://)"""
    stopbits: Literal[1, 2] = 1
    """1 or 2 (serial device paths and rfc2217://)"""
    bytesize: Literal[5, 6, 7, 8] = 8
    """data bits per character (both families use 8)"""
    pace_master_only: bool = False
    """PACE: read the whole bank through the master pack (INFO 0xFF)"""
    request_gap_s: float = Field(default=0.004, ge=0.0, le=10.0)
    """idle time between frames on the bus (3.5 characters at 9600 baud); a pack that misses answers
    gets a longer gap of its own, see runtime.md"""
    response_timeout_s: float = Field(default=1.0, gt=0.0, le=30.0)
    """wait this long for a valid answer before the attempt counts as a timeout"""
    retries: int = Field(default=1, ge=0, le=5)
    """extra attempts after a timeout before the request ends in NoResponse"""
    realtime_interval_s: float = Field(default=5.0, gt=0.0, le=3600.0)
    """realtime data (cells, temperatures, current, SOC, flags) of each pack"""
    identity_interval_s: float = Field(default=3600.0, gt=0.0)
    """version, barcode, SN: at start and then this often"""
    parameters_interval_s: float = Field(default=3600.0, gt=0.0)
    """protection/alarm tables: at start, after every write, and this often"""
    clock_interval_s: float = Field(default=600.0, gt=0.0)
    """each pack's clock (drift) this often"""
    stale_after_s: float = Field(default=15.0, gt=0.0)
    """no success for this long -> stale"""
    offline_after_s: float = Field(default=60.0, gt=0.0)
    """no success for this long -> offline"""
    names: dict[str, str] = Field(default_factory=dict)
    """optional display names by address ("1" = "left")"""

    @field_validator("addresses")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("addresses must be unique")
        return v

    @model_validator(mode="after")
    def _limits(self) -> BusConfig:
        if self.offline_after_s <= self.stale_after_s:
            raise ValueError("offline_after_s must be greater than stale_after_s")
        return self


class HttpConfig(Section):
    listen: ListenAddr = "127.0.0.1:8080"
    """HOST:PORT of the HTTP API (port 0 = any free port; printed at start)"""
    ui: bool = True
    """serve the web UI at `/` ([ui.md](ui.md)); `false`: the API only, the UI is never imported"""


class ModbusConfig(Section):
    enabled: bool = True
    """serve Modbus/TCP (docs/modbus.md)"""
    listen: ListenAddr = "127.0.0.1:5020"
    """HOST:PORT (502 needs CAP_NET_BIND_SERVICE, see the deployment docs)"""
    writes: bool = False
    """writes are refused (0x01 illegal function) unless enabled"""
    write_allowlist: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    """client IPs allowed to write"""
    sunspec_unit: int = Field(default=1, ge=1, le=247)
    """unit id of the SunSpec bank device"""
    per_pack_unit_base: int | None = Field(default=None, ge=1, le=232)
    """pack unit = base + address"""
    native_unit: int = Field(default=2, ge=1, le=247)
    """unit id of the native register map"""
    max_connections: int = Field(default=16, ge=1, le=1024)
    """simultaneous client connections"""
    idle_timeout_s: float = Field(default=300.0, gt=0)
    """a client silent this long is disconnected"""
    max_connections_per_client: int = Field(default=8, ge=1, le=1024)
    """simultaneous connections from one client IP"""
    frame_timeout_s: float = Field(default=2.0, gt=0, le=60)
    """a request must be complete this long after its first byte, else the connection is closed"""
    yield_after_idle_s: float = Field(default=10.0, gt=0)
    """when the server is full, a connection without a request for this long (or with an incomplete
    one) yields its slot to a new client"""
    request_rate_per_s: float = Field(default=500.0, gt=0)
    """per client IP; beyond it requests are delayed"""
    request_burst: int = Field(default=200, ge=1)
    """requests a client may send at once before the rate applies"""
    cap_timeout_s: float = Field(default=300.0, gt=0, le=86400)
    """written caps revert unless refreshed"""
    manufacturer: str = Field(default="bms-gateway", max_length=32)
    """SunSpec model 1 Mn (bank unit)"""
    model_name: str = Field(default="BMS bank", max_length=32)
    """SunSpec model 1 Md (bank unit)"""
    serial: str | None = Field(default=None, max_length=32)
    """model 1 SN; default: first pack's serial"""
    rated_current_a: float = Field(default=100.0, gt=0)
    """per pack; nameplate for 802 WChaRteMax/124"""
    nominal_cell_voltage_v: float = Field(default=3.2, gt=0, le=5)
    """nameplate energy/power (LFP 3.2)"""
    cells_per_pack: int = Field(default=16, ge=1, le=64)
    """SunSpec 805 cell slots until a pack has more"""
    cell_temperature_from_sensors: bool = False
    """*inferred* 805 per-cell temps from the nearest sensor"""

    @model_validator(mode="after")
    def _distinct_units(self) -> ModbusConfig:
        if self.native_unit == self.sunspec_unit:
            raise ValueError("native_unit and sunspec_unit must differ")
        return self


class CanConfig(Section):
    enabled: bool = False
    """send inverter CAN frames (docs/can.md)"""
    interface: str = "virtual"
    """any python-can interface: socketcan, slcan, socketcand, virtual, ..."""
    channel: str = "vcan0"
    """for slcan also socket://host:port"""
    bitrate: int = Field(default=500000, gt=0)
    """CAN bit rate (500 kbit/s for the Pylontech-style protocols)"""
    protocol: CanProtocolName = can_registry.DEFAULT
    """a name of protocol.inverter.can.registry (docs/can.md: pylon, pylon-v2, deye, sma, victron, ...)"""
    log: str | None = None
    """candump-format log of every frame sent and received"""
    keepalive_timeout_s: float = Field(default=10.0, ge=5.0, le=3600.0)
    """inverter silent this long -> lost"""
    keepalive_expected: bool = True
    """false for inverters that never send a keepalive"""
    reconnect_delay_s: float = Field(default=2.0, gt=0.0, le=300.0)
    """first retry after a bus error"""
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """protocol options"""
    interface_options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """extra can.Bus args"""


DeratingTable = Annotated[list[tuple[float, float]], Field(min_length=1)]
# Documented defaults (dbus-serialbattery's, see docs/policy.md): (input, factor of the rated current).
CELL_V_CHARGE_TABLE = ((3.375, 1.0), (3.40, 0.25), (3.425, 0.05), (3.45, 0.005), (3.50, 0.0))
CELL_V_DISCHARGE_TABLE = ((2.80, 0.0), (2.90, 0.005), (3.00, 0.05), (3.10, 0.25), (3.19, 1.0))
TEMP_CHARGE_TABLE = (
    (0.0, 0.0),
    (2.0, 0.25),
    (5.0, 0.5),
    (10.0, 1.0),
    (40.0, 1.0),
    (45.0, 0.5),
    (50.0, 0.25),
    (55.0, 0.0),
)
TEMP_DISCHARGE_TABLE = (
    (-10.0, 0.0),
    (0.0, 0.25),
    (5.0, 0.5),
    (10.0, 1.0),
    (40.0, 1.0),
    (45.0, 0.5),
    (50.0, 0.25),
    (55.0, 0.0),
)
MOS_TEMP_TABLE = ((70.0, 1.0), (80.0, 0.25), (90.0, 0.0))


def _check_table(table: list[tuple[float, float]]) -> list[tuple[float, float]]:
    xs = [x for x, _ in table]
    if any(b <= a for a, b in itertools.pairwise(xs)):
        raise ValueError("derating table points must be in strictly increasing order")
    if any(not 0.0 <= f <= 1.0 for _, f in table):
        raise ValueError("derating factors must be between 0 and 1")
    return table


class PolicyConfig(Section):
    """The charge policy (docs/policy.md); derating tables are [[input, factor], ...], linear in between."""

    charge_cell_voltage_v: float = Field(default=3.45, gt=2.0, le=4.3)
    """CVL = cells x this"""
    discharge_cell_voltage_v: float = Field(default=2.90, gt=1.5, le=4.0)
    """DVL = cells x this"""
    cell_limit_margin_v: float = Field(default=0.05, ge=0.0, le=0.5)
    """kept from CELL_OV/UV_Start"""
    pack_charge_current_a: float = Field(default=100.0, ge=0.0, le=2000.0)
    """per pack rating"""
    pack_discharge_current_a: float = Field(default=100.0, ge=0.0, le=2000.0)
    """per pack rating (discharge)"""
    parameter_current_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    """of CHG/DISC_OC1_Start"""
    lc_style_inferred: bool = False
    """opt-in: halve a pack's charge limit for LC_Style 3/5 (inferred)"""
    parallel_scale: float = Field(default=0.9, gt=0.0, le=1.0)
    """sum of online packs x this"""
    cell_voltage_charge_derating: DeratingTable = Field(default_factory=lambda: list(CELL_V_CHARGE_TABLE))
    """[[cell V, factor], ...] on the highest cell"""
    cell_voltage_discharge_derating: DeratingTable = Field(
        default_factory=lambda: list(CELL_V_DISCHARGE_TABLE)
    )
    """[[cell V, factor], ...] on the lowest cell"""
    temperature_charge_derating: DeratingTable = Field(default_factory=lambda: list(TEMP_CHARGE_TABLE))
    """[[°C, factor], ...] on the cell temperatures"""
    temperature_discharge_derating: DeratingTable = Field(default_factory=lambda: list(TEMP_DISCHARGE_TABLE))
    """[[°C, factor], ...] on the cell temperatures"""
    mos_temperature_derating: DeratingTable = Field(default_factory=lambda: list(MOS_TEMP_TABLE))
    """[[°C, factor], ...] on the MOS temperature"""
    soc_charge_derating: list[tuple[float, float]] = Field(default_factory=list)
    """e.g. [[95, 1], [100, 0.2]]"""
    soc_discharge_derating: list[tuple[float, float]] = Field(default_factory=list)
    """e.g. [[0, 0], [10, 1]]"""
    current_rise_time_constant_s: float = Field(default=10.0, ge=0.0, le=600.0)
    """low-pass on increases"""
    cvl_step_v: float = Field(default=0.1, gt=0.0, le=5.0)
    """CVL goes down at most this much per step"""
    cvl_step_interval_s: float = Field(default=180.0, ge=0.0, le=3600.0)
    """minimum time between two CVL decrease steps"""
    force_charge_1_start_soc_pct: float = Field(default=5.0, ge=0.0, le=100.0)
    """request force charge (level 1) below this SOC"""
    force_charge_1_stop_soc_pct: float = Field(default=10.0, ge=0.0, le=100.0)
    """…until this SOC (must be above the start)"""
    force_charge_2_start_soc_pct: float = Field(default=9.0, ge=0.0, le=100.0)
    """request force charge (level 2) below this SOC"""
    force_charge_2_stop_soc_pct: float = Field(default=13.0, ge=0.0, le=100.0)
    """…until this SOC (must be above the start)"""
    full_charge_soc_pct: float = Field(default=97.0, gt=0.0, le=100.0)
    """SOC counted as a full charge"""
    full_charge_days: float = Field(default=30.0, gt=0.0, le=365.0)
    """request a full charge after this"""
    stale_after_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """newest pack data older -> stop"""
    max_charge_current_a: float | None = Field(default=None, ge=0.0)
    """user caps (never expire)"""
    max_discharge_current_a: float | None = Field(default=None, ge=0.0)
    """user cap (never expires)"""
    max_charge_voltage_v: float | None = Field(default=None, gt=0.0)
    """user cap (never expires)"""
    min_discharge_voltage_v: float | None = Field(default=None, gt=0.0)
    """user cap (never expires)"""
    evaluate_interval_s: float = Field(default=1.0, gt=0.0, le=60.0)
    """re-evaluation without new data"""
    state_file: str | None = "policy-state.json"
    """time of the last full charge (under state_dir; only with a config file)"""

    @field_validator(
        "cell_voltage_charge_derating",
        "cell_voltage_discharge_derating",
        "temperature_charge_derating",
        "temperature_discharge_derating",
        "mos_temperature_derating",
        "soc_charge_derating",
        "soc_discharge_derating",
    )
    @classmethod
    def _tables(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return _check_table(v)

    @model_validator(mode="after")
    def _hysteresis(self) -> PolicyConfig:
        if self.force_charge_1_stop_soc_pct <= self.force_charge_1_start_soc_pct:
            raise ValueError("force_charge_1_stop_soc_pct must be above force_charge_1_start_soc_pct")
        if self.force_charge_2_stop_soc_pct <= self.force_charge_2_start_soc_pct:
            raise ValueError("force_charge_2_stop_soc_pct must be above force_charge_2_start_soc_pct")
        if self.discharge_cell_voltage_v >= self.charge_cell_voltage_v:
            raise ValueError("discharge_cell_voltage_v must be below charge_cell_voltage_v")
        return self


class InverterRs485Config(Section):
    """The inverter-facing RS485 port: the gateway answers polls as a battery (docs/inverter-rs485.md)."""

    enabled: bool = False
    """answer an inverter's RS485 battery polls (docs/inverter-rs485.md)"""
    url: str = "socket://127.0.0.1:4200"
    """serial device (8N1) or socket://host:port of a converter"""
    protocol: Rs485ProtocolName = rs485_registry.DEFAULT
    """battery protocol emulated towards the inverter"""
    baudrate: Literal[9600, 19200, 115200] = 9600
    """serial device paths only"""
    presence_timeout_s: float = Field(default=60.0, gt=0.0)
    """no valid poll this long -> inverter missing"""
    idle_gap_s: float = Field(default=0.5, gt=0.0, le=10.0)
    """quiet this long drops a partial request"""
    pylon_group: int = Field(default=0, ge=0, le=15)
    """ADR = position + 1 + 0x10 * group"""
    pylon_share_module_limits: bool = True
    """0x92 per module: bank limits split over the fresh modules"""
    # *inferred* Pylon layouts (docs/inverter-rs485.md), off: the protocol's error answer
    pylon_inferred_stack_replies: bool = False
    """*inferred*: answer 0x44 with INFO FF (off: RTN 90; 0x42 FF: always)"""
    pylon_inferred_system_basic: bool = False
    """*inferred*: answer 0x60 with a 2-byte version (off: RTN 04)"""
    pylon_inferred_set_management: bool = False
    """*inferred*: accept 0x94 in the 0x92 field order (off: RTN 04)"""
    pylon_inferred_system_analog: bool = False
    """*inferred*: answer 0x61, locations numbered from 1 (off: RTN 04)"""
    battery_name: str = Field(default="US5000", pattern=r"^[ -~]{1,10}$")
    """Pylon 0x51/0x60 battery name"""
    manufacturer: str = Field(default="PYLON", pattern=r"^[ -~]{1,20}$")
    """Pylon 0x51/0x60 manufacturer"""
    byd_unit_id: int = Field(default=21, ge=1, le=247)
    """Modbus RTU unit id for byd-modbus"""
    byd_serial: str = Field(default="P030T020Z0000000001", pattern=r"^[ -~]{1,32}$")
    """serial string reported in the BYD identity registers"""
    byd_heartbeat_timeout_s: float = Field(default=300.0, gt=0.0)
    """register 401 unchanged this long -> lost"""


class MqttConfig(Section):
    """MQTT state, events and Home Assistant discovery (see docs/mqtt.md)."""

    enabled: bool = False
    """publish to MQTT (docs/mqtt.md)"""
    # mqtt://host[:port] or mqtts://host[:port] (TLS, default port 8883)
    url: str = Field(default="mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/\s:]+(:\d{1,5})?/?$")
    """mqtts = TLS"""
    username: str | None = None
    """or BMS_GATEWAY_MQTT_USERNAME"""
    password: str | None = None
    """or BMS_GATEWAY_MQTT_PASSWORD"""
    ca_file: str | None = None
    """mqtts: CA bundle for the broker's certificate (system store when unset)"""
    cert_file: str | None = None
    """mqtts: client certificate (PEM), e.g. a per-site certificate"""
    key_file: str | None = None
    """private key of cert_file"""
    client_id: str = Field(default="bms-gateway", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """also names HA ids"""
    base_topic: str = Field(default="bms-gateway", pattern=r"^[^#+\s]+[^#+/\s]$")
    """first level of every topic: state, events, availability and commands (no wildcards, no trailing /)"""
    qos: Literal[0, 1, 2] = 1
    """QoS of state and event messages"""
    retain_state: bool = True
    """retain state documents (availability, birth and discovery are always retained)"""
    persistent_session: bool = False
    """clean_session = false: the broker keeps our QoS 1/2 session"""
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    """MQTT keepalive"""
    discovery: bool = True
    """Home Assistant MQTT discovery"""
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[^#+\s]+[^#+/\s]$")
    """Home Assistant's MQTT discovery prefix (no wildcards, no trailing /)"""
    expire_after_s: int = Field(default=600, ge=0)
    """HA marks pack values unavailable after this (0 = never)"""
    min_interval_s: float = Field(default=5.0, ge=0.0, le=3600.0)
    """at most one state document per topic"""
    buffer_size: int = Field(default=1000, ge=10, le=1_000_000)
    """messages kept while the broker is away"""
    reconnect_min_s: float = Field(default=1.0, gt=0.0)
    """first reconnect delay (doubles up to reconnect_max_s, with jitter)"""
    reconnect_max_s: float = Field(default=60.0, gt=0.0)
    """longest reconnect delay"""
    commands: bool = False
    """admin commands on `<base_topic>/cmd/<action>`, authenticated with admin API tokens
    (docs/mqtt.md#commands-over-mqtt)"""

    @model_validator(mode="after")
    def _pairs(self) -> MqttConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        if (self.ca_file or self.cert_file) and not self.url.startswith("mqtts://"):
            raise ValueError("ca_file/cert_file need an mqtts:// url")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self


class SimulatorConfig(Section):
    """The built-in simulator used when no bus is configured (or when enabled explicitly)."""

    enabled: bool = False
    """also run the built-in simulator as bus `sim` (always used when no [[bus]] is configured)"""
    protocol: BmsFamilyName = bms_registry.DEFAULT
    """family the simulated packs speak"""
    packs: int = Field(default=3, ge=1, le=15)
    """number of simulated packs (addresses first_address..first_address + packs - 1)"""
    seed: int = 1
    """makes every pack's values reproducible"""
    profile: Literal["idle", "charge", "discharge", "cycle"] = "cycle"
    """idle (nothing moves), charge, discharge, cycle (demo)"""
    listen: ListenAddr | None = None
    """also expose the simulated bus on HOST:PORT"""
    first_address: int = Field(default=1, ge=0, le=15)
    """address of the first pack; the others follow (first_address + packs - 1 at most 15)"""
    baud: int = Field(default=9600, ge=1200, le=1_000_000)
    """wire pacing: every byte takes 10 bits at this rate (the gateway's response timeout for the `sim` bus
    grows with it)"""
    pacing: bool = True
    """false: answers leave at once, without wire time"""
    faults: str = ""
    """fault injection, e.g. `"corrupt=0.01,drop=0.05,offline=2:60/10,hw=1:NTC_Disconnected"` (see
    [simulator.md](simulator.md)); a bad item, or an `hw=` flag the family does not report as a fault, is
    refused by `bms-gateway config check` and stops the start"""
    state_file: str | None = None
    """persist parameters, SN, clock offset and history across restarts; relative paths are under state_dir"""
    history_records: int = Field(default=0, ge=0, le=100_000)
    """timing records each pack holds at start"""

    @field_validator("faults")
    @classmethod
    def _faults_parse(cls, value: str, info: ValidationInfo) -> str:
        # The syntax, the packs named (simulated ones only) and each `hw=ADDRESS:FLAG` against the
        # status flags the family's codec calls faults: `bms-gateway config check` names a misspelt
        # flag (with the valid ones) instead of the start failing on it. Checked whether or not the
        # simulator runs, as the syntax is.
        from simulator.faults import parse_fault_spec

        try:
            spec = parse_fault_spec(value)
        except ValueError as err:
            raise ValueError(str(err).removeprefix("--faults: ")) from None
        protocol, packs, first = (info.data.get(k) for k in ("protocol", "packs", "first_address"))
        if not (isinstance(protocol, str) and isinstance(packs, int) and isinstance(first, int)):
            return value  # one of those keys was refused already
        if first + packs <= 16:  # (else `_addresses_fit` refuses the range)
            from simulator.core import SimulatorOptions, check_faults

            check_faults(spec, SimulatorOptions(protocol=protocol, packs=packs, first_address=first))
        return value

    @model_validator(mode="after")
    def _addresses_fit(self) -> SimulatorConfig:
        last = self.first_address + self.packs - 1
        if last > 15:
            raise ValueError(f"first_address + packs - 1 must be at most 15, got addresses up to {last}")
        return self


class AdminConfig(Section):
    """The authenticated admin channel (HTTP API, CLI, MQTT commands)."""

    tokens_file: str = "tokens.json"
    """hashed tokens; relative paths are under state_dir"""
    audit_db: str = "audit.sqlite"
    """append-only audit log (SQLite); relative to state_dir"""
    allow_inferred_writes: bool = False
    """also needs "allow_inferred": true in each request"""
    rate_limit_per_minute: int = Field(default=120, ge=1, le=100000)
    """per token"""
    tls_cert: str | None = None
    """PEM certificate; with tls_key the HTTP service speaks HTTPS"""
    tls_key: str | None = None
    """PEM private key of tls_cert"""
    clock_auto_sync: bool = False
    """write the gateway's time to packs whose drift exceeds the limit"""
    clock_max_drift_s: float = Field(default=60.0, gt=0)
    """drift limit for clock_auto_sync"""
    data_needs_token: bool = False
    """`GET /api/system`, `/api/packs` and `/api/packs/{bus}/{address}` need a bearer token (any role,
    `viewer` or higher); `/healthz`, `/readyz` and `/metrics` stay open"""
    auth_failures_free: int = Field(default=20, ge=0, le=1_000_000)
    """failed authentications per client address before the backoff starts"""
    auth_backoff_max_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    """the longest backoff (1 s, 2 s, 4 s, ... up to this)"""
    max_body_kib: int = Field(default=64, ge=1, le=16384)
    """the cap of a request body; the parameter import (1 MB) and the firmware upload
    (`[firmware] max_image_kib` + 1 KiB) keep their own"""

    @model_validator(mode="after")
    def _tls_pair(self) -> AdminConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        return self


class HistoryConfig(Section):
    """History records downloaded from the packs (docs/history.md)."""

    db: str = "history.sqlite"
    """SQLite (WAL) of downloaded records and download jobs; under state_dir"""
    record_timeout_s: float = Field(default=2.0, gt=0.0, le=30.0)
    """no record this long -> retry/stop"""
    record_retries: int = Field(default=3, ge=0, le=20)
    """per record before the job stops (resumable)"""


class RecordingConfig(Section):
    """Real-time recording of every pack's snapshots (the vendor tool's "Record" page)."""

    enabled: bool = True
    """record every pack's snapshots at `interval_s`"""
    interval_s: float = Field(default=1.0, ge=0.1, le=3600.0)
    """one sample per pack per interval"""
    db: str = "recording.sqlite"
    """SQLite (WAL); under state_dir"""
    max_age_days: float = Field(default=30.0, gt=0.0)
    """older samples are deleted"""
    max_size_mb: float = Field(default=500.0, gt=0.0)
    """oldest samples are deleted beyond this"""


class FirmwareConfig(Section):
    """Firmware upgrade jobs (docs/firmware.md)."""

    dir: str = "firmware"
    """uploaded images and job state; under state_dir"""
    min_soc_pct: float = Field(default=30.0, ge=0.0, le=100.0)
    """pre-flight: SOC at least this"""
    max_current_a: float = Field(default=2.0, ge=0.0, le=50.0)
    """pre-flight: the magnitude of the pack's current at most this"""
    bootloader_buses: list[str] = Field(default_factory=list)
    """buses whose packs speak OUR bootloader"""
    block_retries: int = Field(default=3, ge=0, le=20)
    """per block (no answer or bad CRC)"""
    max_image_kib: int = Field(default=1024, ge=1, le=1024)
    """uploads above this are refused"""


class Config(Section):
    bus: list[BusConfig] = Field(default_factory=list)
    http: HttpConfig = Field(default_factory=HttpConfig)
    modbus: ModbusConfig = Field(default_factory=ModbusConfig)
    can: CanConfig = Field(default_factory=CanConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    inverter_rs485: InverterRs485Config = Field(default_factory=InverterRs485Config)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    firmware: FirmwareConfig = Field(default_factory=FirmwareConfig)
    state_dir: str = "var"
    """tokens, audit log, history database; relative to the config file's folder"""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """debug, info, warning or error (`-v`/`-vv` on the command line can only raise it)"""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """the asyncio event loop: `auto` uses [uvloop](https://github.com/MagicStack/uvloop) when it is
    installed (`pip install 'bms-gateway[fast]'`, Linux/macOS) and the standard library's loop
    otherwise; `uvloop` without it installed is a configuration error (exit 2). See
    docs/performance.md"""

    @model_validator(mode="after")
    def _unique_bus_names(self) -> Config:
        names = [b.name for b in self.bus]
        if len(set(names)) != len(names):
            raise ValueError("bus names must be unique")
        return self


SECRET_KEYS = ("password", "token", "secret")
ENV_OVERRIDES = {
    ("mqtt", "password"): "BMS_GATEWAY_MQTT_PASSWORD",
    ("mqtt", "username"): "BMS_GATEWAY_MQTT_USERNAME",
}


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        ctx = e.get("ctx") or {}
        if "expected" in ctx:
            msg += f" (allowed: {ctx['expected']})"
        lines.append(f"{loc}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_config(data: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for (section, key), var in ENV_OVERRIDES.items():
        if var in env:
            data.setdefault(section, {})[key] = env[var]
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {p}") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a configuration file") from None
    except PermissionError:
        raise ConfigError(f"{p}: cannot read the configuration file: permission denied") from None
    except OSError as err:
        raise ConfigError(f"{p}: cannot read the configuration file: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text (byte {err.start}): save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    return parse_config(data, env)


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data with secrets replaced by '***'."""

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: ("***" if v and any(s in k for s in SECRET_KEYS) else walk(v)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    result: dict[str, Any] = walk(config.model_dump(mode="json"))
    return result


def state_path(config: Config, config_path: str | Path | None, name: str) -> Path:
    """Resolve a file name from the config: absolute as given, else under `state_dir`, which is
    itself relative to the config file's folder (or the working directory without a config file)."""
    p = Path(name)
    if p.is_absolute():
        return p
    base = Path(config_path).resolve().parent if config_path is not None else Path.cwd()
    state = Path(config.state_dir)
    return (state if state.is_absolute() else base / state) / p
