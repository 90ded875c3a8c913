"""Modbus PDU codec: function codes, exception codes, request parsing, response building.

The PDU is the part of a Modbus message that is the same over TCP (MBAP, `protocol.modbus.mbap`)
and serial lines (RTU, `protocol.modbus.rtu`): function code plus data. This module turns request
PDUs into typed requests (checking function code, quantity and byte count in the order the
specification prescribes) and builds response and exception PDUs. `handle_pdu` runs one request
against any `RegisterBank` (the Modbus/TCP server's register images, the BYD RTU responder, ...).
It also builds client requests and parses responses (tests, benchmarks, RTU clients).

Register addresses here are PDU addresses (0-based), as on the wire.
This module must never perform I/O or import asyncio, sockets, serial or pymodbus.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.errors import LocalProtocolError, RemoteProtocolError


class FunctionCode(enum.IntEnum):
    READ_HOLDING_REGISTERS = 0x03
    READ_INPUT_REGISTERS = 0x04
    WRITE_SINGLE_REGISTER = 0x06
    WRITE_MULTIPLE_REGISTERS = 0x10
    READ_WRITE_MULTIPLE_REGISTERS = 0x17


SUPPORTED_FUNCTIONS = frozenset(int(f) for f in FunctionCode)


class ExceptionCode(enum.IntEnum):
    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    SERVER_DEVICE_BUSY = 0x06
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED = 0x0B


# Quantity limits from the Modbus Application Protocol Specification V1.1b3.
MAX_READ_REGISTERS = 125  # FC3, FC4 and FC23's read part
MAX_WRITE_REGISTERS = 123  # FC16
MAX_READ_WRITE_WRITE_REGISTERS = 121  # FC23's write part
MAX_PDU_BYTES = 253
ADDRESS_SPACE = 0x10000


class ModbusError(Exception):
    """A request that must be answered with an exception response carrying `code`."""

    def __init__(self, code: ExceptionCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


@dataclass(frozen=True, slots=True)
class ReadRequest:
    function: int  # 3 or 4
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class WriteSingleRequest:
    address: int
    value: int

    @property
    def function(self) -> int:
        return FunctionCode.WRITE_SINGLE_REGISTER


@dataclass(frozen=True, slots=True)
class WriteMultipleRequest:
    address: int
    values: tuple[int, ...]

    @property
    def function(self) -> int:
        return FunctionCode.WRITE_MULTIPLE_REGISTERS


@dataclass(frozen=True, slots=True)
class ReadWriteRequest:
    read_address: int
    read_count: int
    write_address: int
    values: tuple[int, ...]

    @property
    def function(self) -> int:
        return FunctionCode.READ_WRITE_MULTIPLE_REGISTERS


Request = ReadRequest | WriteSingleRequest | WriteMultipleRequest | ReadWriteRequest


class RequestError(Exception):
    """A request PDU that must be answered with an exception (function code and code known)."""

    def __init__(self, function: int, code: ExceptionCode, message: str = "") -> None:
        super().__init__(message or f"function 0x{function:02X}: {code.name}")
        self.function = function
        self.code = code


# Fixed request layouts (after the function code byte): struct format and total PDU length.
_READ = struct.Struct(">HH")  # address, quantity
_WRITE_SINGLE = struct.Struct(">HH")  # address, value
_WRITE_MULTI_HEAD = struct.Struct(">HHB")  # address, quantity, byte count
_READ_WRITE_HEAD = struct.Struct(">HHHHB")  # read address, read qty, write address, write qty, byte count


def _check_range(function: int, address: int, count: int) -> None:
    if address + count > ADDRESS_SPACE:
        raise RequestError(function, ExceptionCode.ILLEGAL_DATA_ADDRESS, "range beyond the address space")


def parse_request(pdu: bytes) -> Request:
    """Parse a request PDU (function code first).

    Raises `RequestError` with the exception to answer: 0x01 for an unsupported function, 0x03 for
    a quantity outside the limits, a byte count that does not match or a PDU of the wrong length.
    Address validity against a register map is the bank's business (0x02), except for ranges that
    run past the 16-bit address space.
    """
    if not pdu:
        raise RemoteProtocolError("empty PDU")
    function = pdu[0]
    body = pdu[1:]
    if function not in SUPPORTED_FUNCTIONS:
        raise RequestError(function, ExceptionCode.ILLEGAL_FUNCTION)
    bad_value = ExceptionCode.ILLEGAL_DATA_VALUE
    if function in (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS):
        if len(body) != _READ.size:
            raise RequestError(function, bad_value, "read request must be 5 bytes")
        address, count = _READ.unpack(body)
        if not 1 <= count <= MAX_READ_REGISTERS:
            raise RequestError(function, bad_value, f"quantity {count} outside 1..{MAX_READ_REGISTERS}")
        _check_range(function, address, count)
        return ReadRequest(function, address, count)
    if function == FunctionCode.WRITE_SINGLE_REGISTER:
        if len(body) != _WRITE_SINGLE.size:
            raise RequestError(function, bad_value, "write single register request must be 5 bytes")
        address, value = _WRITE_SINGLE.unpack(body)
        return WriteSingleRequest(address, value)
    if function == FunctionCode.WRITE_MULTIPLE_REGISTERS:
        if len(body) < _WRITE_MULTI_HEAD.size:
            raise RequestError(function, bad_value, "write multiple registers request too short")
        address, count, byte_count = _WRITE_MULTI_HEAD.unpack_from(body)
        data = body[_WRITE_MULTI_HEAD.size :]
        if not 1 <= count <= MAX_WRITE_REGISTERS:
            raise RequestError(function, bad_value, f"quantity {count} outside 1..{MAX_WRITE_REGISTERS}")
        if byte_count != 2 * count or len(data) != byte_count:
            raise RequestError(function, bad_value, "byte count does not match the quantity")
        _check_range(function, address, count)
        return WriteMultipleRequest(address, struct.unpack(f">{count}H", data))
    # FC23 read/write multiple registers
    if len(body) < _READ_WRITE_HEAD.size:
        raise RequestError(function, bad_value, "read/write multiple registers request too short")
    r_addr, r_count, w_addr, w_count, byte_count = _READ_WRITE_HEAD.unpack_from(body)
    data = body[_READ_WRITE_HEAD.size :]
    if not 1 <= r_count <= MAX_READ_REGISTERS:
        raise RequestError(function, bad_value, f"read quantity {r_count} outside 1..{MAX_READ_REGISTERS}")
    if not 1 <= w_count <= MAX_READ_WRITE_WRITE_REGISTERS:
        raise RequestError(
            function, bad_value, f"write quantity {w_count} outside 1..{MAX_READ_WRITE_WRITE_REGISTERS}"
        )
    if byte_count != 2 * w_count or len(data) != byte_count:
        raise RequestError(function, bad_value, "byte count does not match the write quantity")
    _check_range(function, r_addr, r_count)
    _check_range(function, w_addr, w_count)
    return ReadWriteRequest(r_addr, r_count, w_addr, struct.unpack(f">{w_count}H", data))


def request_length(data: bytes | bytearray | memoryview) -> int | None:
    """Total length of the request PDU at the start of `data`, or None when more bytes are needed.

    Used by serial framing, where frames carry no length field. Returns 0 when the function code
    is not one whose request length can be known (the caller falls back to its own rule).
    """
    if not data:
        return None
    function = data[0]
    if function in (3, 4, 6):
        return 5
    if function == 0x10:
        return None if len(data) < 6 else 6 + data[5]
    if function == 0x17:
        return None if len(data) < 10 else 10 + data[9]
    return 0


def response_length(data: bytes | bytearray | memoryview) -> int | None:
    """Total length of the response PDU at the start of `data` (client side), None if unknown yet."""
    if not data:
        return None
    function = data[0]
    if function & 0x80:
        return 2
    if function in (3, 4, 0x17):
        return None if len(data) < 2 else 2 + data[1]
    if function in (6, 0x10):
        return 5
    return 0


# ---------------------------------------------------------------- responses (server side)


def _registers(values: Sequence[int]) -> bytes:
    try:
        return struct.pack(f">{len(values)}H", *values)
    except struct.error as err:
        raise LocalProtocolError(f"register value out of 0..65535: {err}") from None


def pack_registers(values: Sequence[int]) -> bytes:
    """Registers as big-endian bytes (what `RegisterBank.read` returns)."""
    return _registers(values)


def read_response(function: int, data: bytes) -> bytes:
    """A read response from packed registers (2 bytes each, big-endian)."""
    if len(data) % 2 or not 2 <= len(data) <= 2 * MAX_READ_REGISTERS:
        raise LocalProtocolError(f"cannot answer with {len(data)} bytes of registers")
    return bytes((function, len(data))) + data


def write_single_response(address: int, value: int) -> bytes:
    return bytes((FunctionCode.WRITE_SINGLE_REGISTER,)) + _WRITE_SINGLE.pack(address, value)


def write_multiple_response(address: int, count: int) -> bytes:
    return bytes((FunctionCode.WRITE_MULTIPLE_REGISTERS,)) + _READ.pack(address, count)


def exception_response(function: int, code: ExceptionCode | int) -> bytes:
    return bytes(((function | 0x80) & 0xFF, int(code)))


class RegisterBank(Protocol):
    """What `handle_pdu` serves: a register space that may refuse with a `ModbusError`.

    `read` returns `count` registers packed big-endian (`pack_registers`) or raises 0x02 for
    addresses outside the map; `write` raises 0x02 for registers that are
    not writable, 0x03 for values out of range, 0x01 when writes are not allowed at all. A write
    must be applied completely or not at all.
    """

    def read(self, address: int, count: int) -> bytes: ...

    def write(self, address: int, values: Sequence[int]) -> None: ...


@dataclass(frozen=True, slots=True)
class Handled:
    """The outcome of one request: the response PDU and, for exceptions, the code."""

    response: bytes
    function: int
    exception: ExceptionCode | None = None


def handle_pdu(pdu: bytes, bank: RegisterBank) -> Handled:
    """Answer one request PDU from `bank`. Never raises for any input."""
    function = pdu[0] if pdu else 0
    try:
        request = parse_request(pdu)
        if isinstance(request, ReadRequest):
            regs = bank.read(request.address, request.count)
            response = read_response(request.function, regs)
        elif isinstance(request, WriteSingleRequest):
            bank.write(request.address, (request.value,))
            response = write_single_response(request.address, request.value)
        elif isinstance(request, WriteMultipleRequest):
            bank.write(request.address, request.values)
            response = write_multiple_response(request.address, len(request.values))
        else:
            # FC23: the write is performed before the read (specification 6.17).
            bank.write(request.write_address, request.values)
            regs = bank.read(request.read_address, request.read_count)
            response = read_response(request.function, regs)
    except RequestError as err:
        return Handled(exception_response(err.function, err.code), err.function, err.code)
    except ModbusError as err:
        return Handled(exception_response(function, err.code), function, err.code)
    except RemoteProtocolError:
        return Handled(
            exception_response(function, ExceptionCode.ILLEGAL_FUNCTION),
            function,
            ExceptionCode.ILLEGAL_FUNCTION,
        )
    except LocalProtocolError:
        return Handled(
            exception_response(function, ExceptionCode.SERVER_DEVICE_FAILURE),
            function,
            ExceptionCode.SERVER_DEVICE_FAILURE,
        )
    return Handled(response, function)


# ---------------------------------------------------------------- client side


def build_read_request(
    address: int, count: int, function: int = FunctionCode.READ_HOLDING_REGISTERS
) -> bytes:
    if function not in (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS):
        raise LocalProtocolError(f"not a read function: {function}")
    if not 0 <= address < ADDRESS_SPACE or not 0 <= count <= 0xFFFF:
        raise LocalProtocolError("address or count out of range")
    return bytes((function,)) + _READ.pack(address, count)


def build_write_single_request(address: int, value: int) -> bytes:
    if not 0 <= address < ADDRESS_SPACE or not 0 <= value <= 0xFFFF:
        raise LocalProtocolError("address or value out of range")
    return bytes((FunctionCode.WRITE_SINGLE_REGISTER,)) + _WRITE_SINGLE.pack(address, value)


def build_write_multiple_request(address: int, values: Sequence[int]) -> bytes:
    if not 0 <= address < ADDRESS_SPACE or not values:
        raise LocalProtocolError("address out of range or no values")
    return (
        bytes((FunctionCode.WRITE_MULTIPLE_REGISTERS,))
        + _WRITE_MULTI_HEAD.pack(address, len(values), 2 * len(values))
        + _registers(values)
    )


def build_read_write_request(
    read_address: int, read_count: int, write_address: int, values: Sequence[int]
) -> bytes:
    return (
        bytes((FunctionCode.READ_WRITE_MULTIPLE_REGISTERS,))
        + _READ_WRITE_HEAD.pack(read_address, read_count, write_address, len(values), 2 * len(values))
        + _registers(values)
    )


@dataclass(frozen=True, slots=True)
class Response:
    """A parsed response PDU: registers for reads, (address, value/count) for writes, or an exception."""

    function: int
    registers: tuple[int, ...] = ()
    address: int | None = None
    value: int | None = None  # FC6 value or FC16 quantity
    exception: int | None = None

    @property
    def is_exception(self) -> bool:
        return self.exception is not None


def parse_response(pdu: bytes) -> Response:
    """Parse a response PDU; raises `RemoteProtocolError` when it is malformed."""
    if len(pdu) < 2:
        raise RemoteProtocolError("response PDU too short")
    function = pdu[0]
    if function & 0x80:
        if len(pdu) != 2:
            raise RemoteProtocolError("exception response must be 2 bytes")
        return Response(function & 0x7F, exception=pdu[1])
    if function in (3, 4, 0x17):
        count = pdu[1]
        if count % 2 or len(pdu) != 2 + count:
            raise RemoteProtocolError("read response byte count does not match")
        return Response(function, registers=struct.unpack(f">{count // 2}H", pdu[2:]))
    if function in (6, 0x10):
        if len(pdu) != 5:
            raise RemoteProtocolError("write response must be 5 bytes")
        address, value = _READ.unpack(pdu[1:])
        return Response(function, address=address, value=value)
    raise RemoteProtocolError(f"unsupported function in response: 0x{function:02X}")
