"""Which Tianpower frames have the shape of a master's request (to recognise echoes and captures).

One table, command -> predicate on the DATA bytes. A pack's answers to these commands have other
shapes (ACK = one return-code byte, reads = their payload), with one unavoidable ambiguity: an ACK
whose return code equals a valid one-byte argument (e.g. `D3 01 02`) is byte-for-byte the request;
the driver therefore also compares a received frame with the exact bytes it sent.

The firmware-upgrade commands 0xA0-0xA4 are bms-gateway's own bootloader protocol
(`protocol.bms.bootloader`, docs/bootloader.md), not the vendor's: a request is a valid message body
(ENTER: the image header; BLOCK: number, length, data and a matching CRC-16; the others: empty),
while every reply is at least six bytes starting with a status code 0..7. A BLOCK reply can only
pass for a request if its bytes happen to form a block with a correct CRC-16 (about 1 in 65536, and
only for images of several hundred kilobytes); the exact-echo comparison covers our own requests.

Sans-I/O, no state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from protocol.bms import bootloader as bl
from protocol.errors import RemoteProtocolError

# Inferred (not publicly documented): the parameter-table write, mirror of the 0x43 read.
CMD_WRITE_PARAMS_INFERRED = 0x44

STORAGE_READ_SUBS = frozenset((0x07, 0x08, 0x09, 0x10, 0x19, 0x1A, 0xE0))


def _empty(d: bytes) -> bool:
    return not d


def _two(d: bytes) -> bool:
    return len(d) == 2


def _storage(d: bytes) -> bool:
    if len(d) == 1:
        return d[0] in STORAGE_READ_SUBS
    if len(d) == 7:
        return d[0] in (0x04, 0x05)
    return len(d) == 3 and d[0] in (0x11, 0xE1)


def _board_or_sn(d: bytes) -> bool:
    if d in (b"\x06", b"\x06\x00\x00"):
        return True
    return len(d) >= 2 and d[0] == 0x01 and d[-1] == 0x5E


def _param_write(d: bytes) -> bool:
    return (
        len(d) >= 5
        and (len(d) - 1) % 4 == 0
        and d[0] in (0xE0, 0x00)
        and all(d[i] == 0x02 for i in range(2, len(d), 4))
    )


def _boot_shape(op: bl.Op) -> Callable[[bytes], bool]:
    def shape(d: bytes) -> bool:
        try:
            return bl.decode_request(op, d).crc_ok
        except RemoteProtocolError:
            return False

    return shape


# bms-gateway's own firmware-upgrade protocol (docs/bootloader.md) on CMD 0xA0-0xA4.
BOOT_CODES = bl.CommandCodes(first=0xA0)
BOOTLOADER_COMMANDS: Mapping[int, bl.Op] = {BOOT_CODES.code(op): op for op in bl.Op}

REQUEST_SHAPES: Mapping[int, Callable[[bytes], bool]] = {
    0x01: _empty,
    0x06: _empty,
    0x33: _empty,
    0x42: _empty,
    0x45: _empty,
    0xF1: _empty,
    0xF3: _empty,
    0x43: _empty,  # LEN position holds 0x00 (alarm table); the 0xE0 form is handled by the framing
    0xCF: lambda d: len(d) == 6,
    0xD3: lambda d: len(d) == 1 and 1 <= d[0] <= 4,
    0xE3: lambda d: len(d) == 1 and d[0] in (1, 2),
    0xE2: lambda d: len(d) == 1 and d[0] in (1, 2),
    0xCD: lambda d: d == b"\x00\x01",
    0xD1: lambda d: len(d) == 2 and d[0] == 0x01 and d[1] in (0, 1),
    0x63: lambda d: len(d) == 2 and d[0] == 0x00 and d[1] in (0, 1),
    0xF2: _two,
    0xF4: _two,
    0xDC: _board_or_sn,
    0xFC: lambda d: len(d) == 2 and d[0] == 0x00,
    0xFB: lambda d: d == b"\xff\xff",
    0xD0: _storage,
    **{c: (lambda d: d == b"\x00\x00") for c in range(0x39, 0x3E)},
    **{c: _two for c in (0x93, 0x95, 0x96, 0x97, 0x98, 0x99)},
    0xC9: _two,
    0xCA: _two,
    0xDB: lambda d: len(d) == 3 and d[0] == 0x13,
    **{c: _two for c in range(0x84, 0x88)},
    0x92: lambda d: len(d) == 2 and d[0] == 0x02,
    CMD_WRITE_PARAMS_INFERRED: _param_write,
    **{code: _boot_shape(op) for code, op in BOOTLOADER_COMMANDS.items()},
}


def looks_like_request(command: int, data: bytes) -> bool:
    shape = REQUEST_SHAPES.get(command)
    return shape is not None and shape(data)
