"""`bms-gateway firmware-image`: build a firmware image for the bms-gateway bootloader.

What it is for: the upgrade demo of docs/firmware.md from a shell. It wraps a payload (a file, or a
deterministic filler of `--size` bytes for the simulator, whose bootloader only checks the image)
into the image container of `protocol.bms.bootloader` (magic, header, CRC32) and writes it to `-o`.
The result is checked with the same parser the gateway uses before it is written.

It must never talk to a gateway or a bus: it only writes one file.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from protocol.bms.bootloader import BLOCK_SIZE, ImageError, build_image, parse_image
from protocol.errors import LocalProtocolError

OK, USAGE = 0, 2
FAMILIES = ("tianpower", "pace")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "firmware-image",
        help="build a firmware image (.bgfw) for the bms-gateway bootloader (e.g. the simulator's)",
        description="Build a bms-gateway bootloader image (docs/firmware.md). The simulated packs report "
        "HY-PT003-B200LT55-V1.0.3 (tianpower); a new version must start with the target model.",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="image file to write (.bgfw)")
    p.add_argument("--family", choices=FAMILIES, default="tianpower")
    p.add_argument("--target", required=True, help="target model, a prefix of the pack's version string")
    p.add_argument("--version", dest="image_version", required=True, help="the version the pack will report")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--payload", type=Path, help="the firmware binary to wrap")
    src.add_argument(
        "--size", type=int, default=4096, help="without --payload: a filler payload of this many bytes"
    )
    p.set_defaults(func=run)


def filler(size: int, seed: str) -> bytes:
    """A deterministic payload: SHA-256 chained over the seed (not firmware; for the simulator)."""
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def run(args: argparse.Namespace) -> int:
    if not args.image_version.startswith(args.target):
        print(
            f"firmware-image: --version {args.image_version!r} must start with --target {args.target!r} "
            "(the gateway checks the target against the pack's version string)",
            file=sys.stderr,
        )
        return USAGE
    if args.payload is not None:
        try:
            payload = args.payload.read_bytes()
        except OSError as err:
            print(f"firmware-image: cannot read {args.payload}: {err}", file=sys.stderr)
            return USAGE
    else:
        if args.size < 1:
            print("firmware-image: --size must be at least 1 byte", file=sys.stderr)
            return USAGE
        payload = filler(args.size, args.image_version)
    try:
        data = build_image(args.family, args.target, args.image_version, payload)
        image = parse_image(data)
    except (ImageError, LocalProtocolError, ValueError) as err:
        print(f"firmware-image: {err}", file=sys.stderr)
        return USAGE
    try:
        args.output.write_bytes(data)
    except OSError as err:
        print(f"firmware-image: cannot write {args.output}: {err}", file=sys.stderr)
        return USAGE
    blocks = -(-len(payload) // BLOCK_SIZE)
    print(
        f"wrote {args.output}: {image.header.family} {image.header.version} for {image.header.target}, "
        f"{len(payload)} bytes payload ({blocks} blocks), CRC32 {image.header.crc32:08x}"
    )
    return OK
