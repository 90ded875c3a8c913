"""`bms-gateway scan URL [--protocol auto]`: which BMS family answers at which addresses.

Opens the bus like the gateway does (device path, socket://, rfc2217://), probes addresses 1-15
(or `--addresses`) with each family's probe request through a bus owner, prints what answered and
a `[[bus]]` snippet for the configuration file. Exit codes: 0 found packs, 1 nothing answered,
2 bad arguments, 3 the bus could not be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gateway.south.bus import BusOwner
from gateway.south.poller import available_families, scan
from gateway.south.transport import Backoff, SerialSettings, parse_url


def _addresses(value: str) -> list[int]:
    result: list[int] = []
    try:
        for part in value.split(","):
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi or lo)
            result.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1-15 or 1,2,5, got {value!r}") from None
    if not result or any(not 0 <= a <= 15 for a in result):
        raise argparse.ArgumentTypeError("addresses must be within 0..15")
    return sorted(set(result))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "scan",
        help="find which protocol family answers at which addresses on a bus",
        description="Probe addresses 1-15 of a bus with every BMS family (or the one given) and print "
        "a configuration snippet.",
    )
    p.add_argument("url", help="/dev/ttyUSB0, socket://HOST:PORT or rfc2217://HOST:PORT")
    p.add_argument("--protocol", default="auto", help="auto (default), tianpower or pace")
    p.add_argument("--addresses", type=_addresses, default=list(range(1, 16)), help="e.g. 1-15 or 1,2,5")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--parity", choices=("N", "E", "O"), default="N")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    p.add_argument("--timeout", type=float, default=0.5, help="response timeout per probe (s)")
    p.add_argument("--gap", type=float, default=0.1, help="inter-frame gap (s)")
    p.add_argument("--name", default="bus1", help="bus name used in the printed snippet")
    p.set_defaults(func=run)


def snippet(name: str, url: str, found: dict[str, list[int]]) -> str:
    lines = []
    for family, addrs in found.items():
        lines += [
            "[[bus]]",
            f'name = "{name}"',
            f'url = "{url}"',
            f'protocol = "{family}"',
            f"addresses = [{', '.join(str(a) for a in addrs)}]",
            "",
        ]
        name = f"{name}_{family}"  # a second family on one bus needs its own name (unusual)
    return "\n".join(lines)


async def _scan(args: argparse.Namespace, families: list[str]) -> tuple[int, dict[str, list[int]]]:
    settings = SerialSettings(baudrate=args.baud, parity=args.parity, stopbits=args.stopbits)
    owner = BusOwner.from_url(
        "scan",
        args.url,
        settings,
        None,
        gap_s=args.gap,
        response_timeout_s=args.timeout,
        retries=0,
        backoff=Backoff(initial_s=60.0, max_s=60.0),
    )
    ready = asyncio.Event()
    task = asyncio.ensure_future(owner.run(ready.set))
    try:
        await ready.wait()
        if not owner.connected:
            print(f"bms-gateway scan: cannot open {args.url}: {owner.counters.last_error}", file=sys.stderr)
            return 3, {}
        return 0, await scan(owner, families, args.addresses)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def run(args: argparse.Namespace) -> int:
    try:
        parse_url(args.url)
    except ValueError as err:
        print(f"bms-gateway scan: {err}", file=sys.stderr)
        return 2
    known = available_families()
    if args.protocol == "auto":
        families = known
    elif args.protocol in known:
        families = [args.protocol]
    else:
        print(
            f"bms-gateway scan: unknown protocol {args.protocol!r}; use auto or one of {', '.join(known)}",
            file=sys.stderr,
        )
        return 2
    code, found = asyncio.run(_scan(args, families))
    if code:
        return code
    if not found:
        print(f"no pack answered on {args.url} (tried {', '.join(families)} at {args.addresses})")
        return 1
    for family, addrs in found.items():
        print(f"{family}: addresses {', '.join(str(a) for a in addrs)}")
    print()
    print("# configuration snippet:")
    print(snippet(args.name, args.url, found))
    return 0
