"""Our own firmware-upgrade protocol for BMS packs (the vendors' is unpublished), sans-I/O.

What it is for: a gateway (the upgrade job) and a pack (the simulator's bootloader) agree on how an
image reaches a pack: enter the bootloader with the image header, send numbered blocks each with its
own CRC and get every block acknowledged, ask the pack to check the whole image, then reboot it into
the new version string. An interrupted transfer leaves the pack in its bootloader; entering again
with the same image resumes at the first block the pack does not have. A corrupt image is refused at
the final check and the old firmware keeps running.

It also defines the image container (`build_image` / `parse_image`) so the gateway can check an
image (magic, header CRC, size, payload CRC32, target model, family) before it touches a pack.

Carriage: the messages travel inside each family's normal framing on command codes that the
reference does not use (see `docs/bootloader.md`): Tianpower CMD 0xA0-0xA4 (DATA = message),
PACE v25 CID2 0xF0-0xF4 (INFO = message, ASCII hex). This module only builds and parses the
message bodies and the image; each family's `boot` module (`protocol.bms.tianpower.boot`,
`protocol.bms.pace.boot`) declares its codes and puts them in frames. This module imports no family.

This module must never perform I/O (no asyncio, serial, sockets) and never import the runtime.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol.errors import LocalProtocolError, RemoteProtocolError

BLOCK_SIZE = 128  # bytes of image payload per block (fits Tianpower's one-byte LEN with headroom)


class Op(enum.IntEnum):
    """Message kinds; the same numbering in every family (offset from the family's first code)."""

    ENTER = 0
    BLOCK = 1
    VERIFY = 2
    REBOOT = 3
    STATUS = 4


@dataclass(frozen=True, slots=True)
class CommandCodes:
    """The command codes a family carries the bootloader messages on: one per `Op`, consecutive from
    `first` (each family declares its own in its codec; this module knows no family)."""

    first: int

    def code(self, op: Op) -> int:
        return self.first + int(op)

    def op(self, code: int) -> Op | None:
        """The bootloader message kind carried by `code`, or None for other commands."""
        try:
            return Op(code - self.first)
        except ValueError:
            return None

    def by_name(self) -> dict[str, int]:
        """{"enter": code, "block": code, ...} (the table docs/bootloader.md prints)."""
        return {op.name.lower(): self.code(op) for op in Op}

    def values(self) -> frozenset[int]:
        return frozenset(self.code(op) for op in Op)


class Status(enum.IntEnum):
    """The status byte of every reply."""

    OK = 0x00
    BAD_STATE = 0x01  # e.g. a block before ENTER, REBOOT before a successful VERIFY
    WRONG_TARGET = 0x02  # the image is for another model or family
    BAD_BLOCK_CRC = 0x03  # the block's CRC does not match its data: resend it
    OUT_OF_ORDER = 0x04  # not the block the pack expects (the reply says which one it expects)
    IMAGE_CRC_MISMATCH = 0x05  # VERIFY found the assembled image corrupt: it is discarded
    TOO_LARGE = 0x06  # the image does not fit the pack's flash
    BAD_REQUEST = 0x07  # the message cannot be parsed


class Mode(enum.IntEnum):
    APPLICATION = 0  # the normal firmware runs (answers every command)
    BOOTLOADER = 1  # only bootloader messages are answered


# ---------------------------------------------------------------------------------------------------
# The image container.

IMAGE_MAGIC = b"BGFW"
IMAGE_FORMAT = 1
FAMILY_CODES: dict[str, int] = {"tianpower": 1, "pace": 2}
TEXT_FIELD = 24  # target model and version: ASCII, NUL padded

# Header layout, big-endian (offsets in bytes):
#   0  magic "BGFW"           4s
#   4  format version (1)     B
#   5  family code            B   1 tianpower, 2 pace
#   6  reserved (0)           H
#   8  target model           24s ASCII, NUL padded (a prefix of the pack's version string)
#  32  version string         24s ASCII, NUL padded (what the pack reports after the upgrade)
#  56  payload size           I
#  60  payload CRC32          I   zlib.crc32 of the payload
#  64  header CRC32           I   zlib.crc32 of bytes 0..63
HEADER_STRUCT = struct.Struct(">4sBBH24s24sIII")
HEADER_SIZE = HEADER_STRUCT.size  # 68
MAX_IMAGE_SIZE = 1 << 20


class ImageError(ValueError):
    """The file is not a valid firmware image (the message says what is wrong)."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    family: str
    target: str
    version: str
    size: int
    crc32: int

    def encode(self) -> bytes:
        if self.family not in FAMILY_CODES:
            raise LocalProtocolError(f"unknown family {self.family!r}")
        target = _text(self.target, "target")
        version = _text(self.version, "version")
        if not 0 < self.size <= MAX_IMAGE_SIZE:
            raise LocalProtocolError(f"image size {self.size} outside 1..{MAX_IMAGE_SIZE}")
        head = HEADER_STRUCT.pack(
            IMAGE_MAGIC, IMAGE_FORMAT, FAMILY_CODES[self.family], 0, target, version, self.size, self.crc32, 0
        )[:-4]
        return head + struct.pack(">I", zlib.crc32(head))

    @classmethod
    def decode(cls, data: bytes) -> ImageHeader:
        if len(data) < HEADER_SIZE:
            raise ImageError(f"image header needs {HEADER_SIZE} bytes, got {len(data)}")
        magic, fmt, fam, _res, target, version, size, crc, hcrc = HEADER_STRUCT.unpack_from(data)
        if magic != IMAGE_MAGIC:
            raise ImageError(f"not a bms-gateway firmware image (magic {magic!r}, expected {IMAGE_MAGIC!r})")
        if fmt != IMAGE_FORMAT:
            raise ImageError(f"unsupported image format version {fmt} (expected {IMAGE_FORMAT})")
        if zlib.crc32(data[: HEADER_SIZE - 4]) != hcrc:
            raise ImageError("image header CRC mismatch (the file is damaged)")
        family = {v: k for k, v in FAMILY_CODES.items()}.get(fam)
        if family is None:
            raise ImageError(f"unknown family code {fam} in image header")
        if not 0 < size <= MAX_IMAGE_SIZE:
            raise ImageError(f"image size {size} outside 1..{MAX_IMAGE_SIZE}")
        try:
            return cls(family, _untext(target), _untext(version), size, crc)
        except UnicodeDecodeError:
            raise ImageError("image header text fields are not ASCII") from None

    @property
    def blocks(self) -> int:
        return (self.size + BLOCK_SIZE - 1) // BLOCK_SIZE


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    header: ImageHeader
    payload: bytes

    def block(self, number: int) -> bytes:
        if not 0 <= number < self.header.blocks:
            raise LocalProtocolError(f"block {number} outside 0..{self.header.blocks - 1}")
        return self.payload[number * BLOCK_SIZE : (number + 1) * BLOCK_SIZE]

    def check_target(self, family: str, pack_version: str) -> None:
        """Raise ImageError unless this image is meant for a pack of `family` reporting `pack_version`."""
        if self.header.family != family:
            raise ImageError(f"image is for {self.header.family} packs, this pack speaks {family}")
        if not pack_version.startswith(self.header.target):
            raise ImageError(f"image targets model {self.header.target!r}; the pack reports {pack_version!r}")


def _text(value: str, what: str) -> bytes:
    raw = value.encode("ascii", errors="strict") if value.isascii() else b""
    if not raw or len(raw) > TEXT_FIELD or b"\0" in raw:
        raise LocalProtocolError(f"{what} must be 1..{TEXT_FIELD} ASCII characters, got {value!r}")
    return raw.ljust(TEXT_FIELD, b"\0")


def _untext(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii")


def build_image(family: str, target: str, version: str, payload: bytes) -> bytes:
    """A complete image file: header followed by the payload."""
    header = ImageHeader(family, target, version, len(payload), zlib.crc32(payload))
    return header.encode() + payload


def parse_image(data: bytes) -> FirmwareImage:
    """Check and split an image file; raises ImageError with the reason when it is not usable."""
    header = ImageHeader.decode(data)
    payload = data[HEADER_SIZE:]
    if len(payload) != header.size:
        raise ImageError(f"image payload is {len(payload)} bytes, the header says {header.size}")
    if zlib.crc32(payload) != header.crc32:
        raise ImageError("image payload CRC32 mismatch (the file is corrupt)")
    return FirmwareImage(header, payload)


# ---------------------------------------------------------------------------------------------------
# Message bodies (what goes in the family frame's DATA / INFO).
#
# Requests:
#   ENTER   header (68 bytes, exactly as in the image file)
#   BLOCK   number (u16) | length (u8) | data | CRC-16/CCITT-FALSE of data (u16)
#   VERIFY  (empty)
#   REBOOT  (empty)
#   STATUS  (empty)
# Replies (every op):
#   status (u8) | mode (u8) | next block expected (u16) | total blocks (u16) | version (ASCII, rest)

BLOCK_HEAD = struct.Struct(">HB")
REPLY_HEAD = struct.Struct(">BBHH")


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), the per-block check."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


@dataclass(frozen=True, slots=True)
class BootRequest:
    op: Op
    header: ImageHeader | None = None  # ENTER
    block_number: int = 0  # BLOCK
    data: bytes = b""  # BLOCK
    crc_ok: bool = True  # BLOCK: the CRC sent matches the data

    def encode(self) -> bytes:
        if self.op is Op.ENTER:
            if self.header is None:
                raise LocalProtocolError("ENTER needs the image header")
            return self.header.encode()
        if self.op is Op.BLOCK:
            if not 0 <= self.block_number <= 0xFFFF or not 0 < len(self.data) <= BLOCK_SIZE:
                raise LocalProtocolError("block number or size out of range")
            return (
                BLOCK_HEAD.pack(self.block_number, len(self.data))
                + self.data
                + struct.pack(">H", crc16_ccitt(self.data))
            )
        return b""


def encode_request(
    op: Op, *, header: ImageHeader | None = None, block_number: int = 0, data: bytes = b""
) -> bytes:
    return BootRequest(op, header, block_number, data).encode()


def decode_request(op: Op, body: bytes) -> BootRequest:
    """Parse a request body; RemoteProtocolError when it is malformed."""
    if op is Op.ENTER:
        try:
            header = ImageHeader.decode(body)
        except ImageError as err:
            raise RemoteProtocolError(f"bootloader ENTER: {err}") from None
        if len(body) != HEADER_SIZE:
            raise RemoteProtocolError(f"bootloader ENTER body must be {HEADER_SIZE} bytes, got {len(body)}")
        return BootRequest(op, header=header)
    if op is Op.BLOCK:
        if len(body) < BLOCK_HEAD.size + 2:
            raise RemoteProtocolError("bootloader BLOCK body too short")
        number, length = BLOCK_HEAD.unpack_from(body)
        if len(body) != BLOCK_HEAD.size + length + 2 or length == 0:
            raise RemoteProtocolError(
                f"bootloader BLOCK length {length} does not match a body of {len(body)} bytes"
            )
        data = body[BLOCK_HEAD.size : BLOCK_HEAD.size + length]
        (crc,) = struct.unpack_from(">H", body, BLOCK_HEAD.size + length)
        return BootRequest(op, block_number=number, data=data, crc_ok=crc == crc16_ccitt(data))
    if body:
        raise RemoteProtocolError(f"bootloader {op.name} takes no data, got {len(body)} bytes")
    return BootRequest(op)


@dataclass(frozen=True, slots=True)
class BootReply:
    status: Status
    mode: Mode
    next_block: int
    total_blocks: int
    version: str  # the running firmware's version string (in the bootloader: the one that will run)

    def encode(self) -> bytes:
        return REPLY_HEAD.pack(
            self.status, self.mode, self.next_block, self.total_blocks
        ) + self.version.encode("ascii", errors="replace")

    @classmethod
    def decode(cls, body: bytes) -> BootReply:
        if len(body) < REPLY_HEAD.size:
            raise RemoteProtocolError(
                f"bootloader reply needs at least {REPLY_HEAD.size} bytes, got {len(body)}"
            )
        status, mode, nxt, total = REPLY_HEAD.unpack_from(body)
        try:
            return cls(Status(status), Mode(mode), nxt, total, body[REPLY_HEAD.size :].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise RemoteProtocolError(f"bootloader reply with unknown status/mode {status}/{mode}") from None


# ---------------------------------------------------------------------------------------------------
# The pack side: a state machine the simulator (or any test double) runs.


@dataclass(slots=True)
class BootloaderTarget:
    """The pack's bootloader. `handle(op, body)` -> reply body. Persistable via `to_json`/`from_json`.

    `version` is the running application's version string; `family`/`model` decide which images
    are accepted (the image's target must be a prefix of `model`).
    """

    family: str
    version: str
    model: str
    max_image_size: int = 256 * 1024
    mode: Mode = Mode.APPLICATION
    header: ImageHeader | None = None
    received: bytearray = field(default_factory=bytearray)
    verified: bool = False

    @property
    def next_block(self) -> int:
        return -(-len(self.received) // BLOCK_SIZE) if self.header else 0

    def _reply(self, status: Status) -> bytes:
        total = self.header.blocks if self.header else 0
        return BootReply(status, self.mode, self.next_block, total, self.version).encode()

    def handle(self, op: Op, body: bytes) -> bytes:
        try:
            req = decode_request(op, body)
        except RemoteProtocolError:
            return self._reply(Status.BAD_REQUEST)
        if op is Op.STATUS:
            return self._reply(Status.OK)
        if op is Op.ENTER:
            assert req.header is not None
            hdr = req.header
            if hdr.family != self.family or not self.model.startswith(hdr.target):
                return self._reply(Status.WRONG_TARGET)
            if hdr.size > self.max_image_size:
                return self._reply(Status.TOO_LARGE)
            if self.header != hdr:  # a new image (or the first): start over; the same image resumes
                self.header = hdr
                self.received = bytearray()
                self.verified = False
            self.mode = Mode.BOOTLOADER
            return self._reply(Status.OK)
        if self.mode is not Mode.BOOTLOADER or self.header is None:
            return self._reply(Status.BAD_STATE)
        if op is Op.BLOCK:
            if not req.crc_ok:
                return self._reply(Status.BAD_BLOCK_CRC)
            expected_len = min(BLOCK_SIZE, self.header.size - req.block_number * BLOCK_SIZE)
            if req.block_number == self.next_block - 1 and self.next_block > 0:
                return self._reply(Status.OK)  # a repeat of the last block (our ACK was lost): fine
            if req.block_number != self.next_block or len(req.data) != expected_len:
                return self._reply(Status.OUT_OF_ORDER)
            self.received += req.data
            self.verified = False
            return self._reply(Status.OK)
        if op is Op.VERIFY:
            if len(self.received) != self.header.size:
                return self._reply(Status.BAD_STATE)
            if zlib.crc32(bytes(self.received)) != self.header.crc32:
                # Corrupt image: discard it and go back to the old firmware.
                self.header = None
                self.received = bytearray()
                self.verified = False
                self.mode = Mode.APPLICATION
                return self._reply(Status.IMAGE_CRC_MISMATCH)
            self.verified = True
            return self._reply(Status.OK)
        # REBOOT
        if not self.verified:
            return self._reply(Status.BAD_STATE)
        assert self.header is not None
        self.version = self.header.version
        self.header = None
        self.received = bytearray()
        self.verified = False
        self.mode = Mode.APPLICATION
        return self._reply(Status.OK)

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "mode": int(self.mode),
            "header": self.header.encode().hex() if self.header else None,
            "received": bytes(self.received).hex(),
            "verified": self.verified,
        }

    def restore(self, data: dict[str, object]) -> None:
        self.version = str(data.get("version", self.version))
        self.mode = Mode(int(str(data.get("mode", 0))))
        hdr = data.get("header")
        self.header = ImageHeader.decode(bytes.fromhex(hdr)) if isinstance(hdr, str) else None
        self.received = bytearray(bytes.fromhex(str(data.get("received", ""))))
        self.verified = bool(data.get("verified", False))


# ---------------------------------------------------------------------------------------------------
# The gateway side: which message to send next, given the replies so far.


class UpgradeError(Exception):
    """The pack refused the upgrade; `status` says why."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class UpgradeSession:
    """Drives one upgrade, sans-I/O: `next_request()` -> (op, body); feed each reply to `on_reply`.

    Resumable: ENTER's reply tells where the pack stands, so a new session for the same image on a
    pack left in its bootloader continues from the first missing block. `done` once the pack has
    rebooted into `image.header.version`.
    """

    image: FirmwareImage
    max_block_retries: int = 3
    phase: Op = Op.ENTER
    next_block: int = 0
    retries: int = 0
    done: bool = False
    resumed_from: int | None = None

    def next_request(self) -> tuple[Op, bytes]:
        if self.done:
            raise LocalProtocolError("the upgrade is finished")
        if self.phase is Op.ENTER:
            return Op.ENTER, encode_request(Op.ENTER, header=self.image.header)
        if self.phase is Op.BLOCK:
            return Op.BLOCK, encode_request(
                Op.BLOCK, block_number=self.next_block, data=self.image.block(self.next_block)
            )
        return self.phase, b""

    @property
    def progress(self) -> tuple[int, int]:
        """(blocks acknowledged, total blocks)."""
        return self.next_block, self.image.header.blocks

    def on_reply(self, body: bytes | BootReply) -> None:
        """Feed the pack's reply (its body bytes, or as decoded by `decode_reply_frame`)."""
        reply = body if isinstance(body, BootReply) else BootReply.decode(body)
        if self.phase is Op.ENTER:
            if reply.status is not Status.OK:
                raise UpgradeError(reply.status, f"pack refused to enter its bootloader: {reply.status.name}")
            self.next_block = reply.next_block
            self.resumed_from = reply.next_block if reply.next_block else None
            self.phase = Op.BLOCK if self.next_block < self.image.header.blocks else Op.VERIFY
            return
        if self.phase is Op.BLOCK:
            if reply.status is Status.OK or reply.status is Status.OUT_OF_ORDER:
                if reply.status is Status.OUT_OF_ORDER and reply.next_block == self.next_block:
                    raise UpgradeError(reply.status, f"pack rejected block {self.next_block}")
                self.next_block = reply.next_block
                self.retries = 0
            elif reply.status is Status.BAD_BLOCK_CRC:
                self.retries += 1
                if self.retries > self.max_block_retries:
                    raise UpgradeError(
                        reply.status, f"block {self.next_block} failed its CRC {self.retries} times"
                    )
            else:
                raise UpgradeError(reply.status, f"block {self.next_block}: {reply.status.name}")
            if self.next_block >= self.image.header.blocks:
                self.phase = Op.VERIFY
            return
        if self.phase is Op.VERIFY:
            if reply.status is not Status.OK:
                raise UpgradeError(reply.status, f"pack refused the image: {reply.status.name}")
            self.phase = Op.REBOOT
            return
        if self.phase is Op.REBOOT:
            if reply.status is not Status.OK:
                raise UpgradeError(reply.status, f"pack refused to reboot: {reply.status.name}")
            if reply.version != self.image.header.version:
                raise UpgradeError(Status.BAD_STATE, f"pack reports {reply.version!r} after reboot")
            self.done = True
            return
        raise LocalProtocolError(f"unexpected phase {self.phase}")


# ---------------------------------------------------------------------------------------------------
# Carriage in a family's framing: each family codec provides a `BootCarriage` (its `boot` module) and
# registers it on its `BmsFamily`; generic code reaches it through `protocol.bms.registry`.


@dataclass(frozen=True, slots=True)
class BootCarriage:
    """How one family carries the bootloader messages: its command codes, a builder of the complete
    request frame and a parser of the complete reply frame (RemoteProtocolError when the frame is
    invalid or not an answer to `op`)."""

    family: str
    codes: CommandCodes
    encode_frame: Callable[[int, Op, bytes], bytes]
    decode_reply_frame: Callable[[bytes, Op | None], BootReply]
    # True when an answer carries the request's command code (Tianpower); False when it carries a
    # return code instead (PACE's RTN), so an answer is recognised as "not a request" only.
    answer_carries_command: bool


def reply_body(got: Op | None, op: Op | None, body: bytes) -> BootReply:
    """The reply carried by a frame that answers `got` (None: not a bootloader answer); refused when
    it is not the answer to `op`."""
    if got is None or (op is not None and got is not op):
        raise RemoteProtocolError("the frame is not an answer to the bootloader request")
    return BootReply.decode(body)
