"""`bms-gateway scan URL [--protocol auto]`: which BMS family answers at which addresses.

Opens the bus like the gateway does (device path, socket://, rfc2217://), probes addresses 1-15
(or `--addresses`) with each family's probe request through a bus owner, prints what answered and
a `[[bus]]` snippet for the configuration file.

A bus a running gateway polls is never opened a second time (two programs interleaving frames on
one bus miss answers): first the gateway at `--gateway` (default `$BMS_GATEWAY_URL` or
http://127.0.0.1:8080) is asked whether one of its buses has this URL; if so the scan goes through
its bus owner (`POST /api/buses/{bus}/scan`, operator token from `--token`/`$BMS_GATEWAY_TOKEN`),
or, without a token, says that the bus is in use. A serial port locked by another program (the
gateway opens serial ports exclusively) is reported the same way. `--direct` skips the gateway.

Exit codes: 0 found packs, 1 nothing answered, 2 bad arguments, 3 the bus could not be opened,
4 the bus is in use (by a running gateway without a usable token, or by another program).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import httpx

from gateway.app.config import ConfigError
from gateway.cli.progress import busy
from gateway.cli.urls import DEFAULT_URL, BadUrl, gateway_url
from gateway.io.transport import Backoff, SerialSettings, parse_url
from gateway.south.bus import BusOwner
from gateway.south.poller import available_families, scan

FOUND, NOTHING, USAGE, CANNOT_OPEN, IN_USE = 0, 1, 2, 3, 4


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
    p.add_argument(
        "--gateway",
        default=None,
        metavar="URL",
        help="a running gateway to scan through when it owns this bus (default: $BMS_GATEWAY_URL or "
        f"{DEFAULT_URL})",
    )
    p.add_argument("--token", default=None, help="operator token for --gateway (default: $BMS_GATEWAY_TOKEN)")
    p.add_argument("--direct", action="store_true", help="never ask a gateway; open the bus directly")
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
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done() and isinstance(task.exception(), ConfigError):  # a serial port locked by another
            print(
                f"bms-gateway scan: {args.url}: the bus is in use by another process (a running "
                "gateway? scan through it: --gateway URL --token TOKEN)",
                file=sys.stderr,
            )
            return IN_USE, {}
        if not owner.connected:
            print(f"bms-gateway scan: cannot open {args.url}: {owner.counters.last_error}", file=sys.stderr)
            return CANNOT_OPEN, {}
        return 0, await scan(owner, families, args.addresses)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _through_gateway(args: argparse.Namespace) -> tuple[int, dict[str, list[int]]] | None:
    """Scan through a running gateway that owns `args.url`; None when no gateway owns it."""
    base = gateway_url(args.gateway, "--gateway")  # BadUrl: checked by run() before anything opens
    token = args.token or os.environ.get("BMS_GATEWAY_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=base, headers=headers, timeout=max(10.0, 16 * args.timeout + 5))
    with client:
        try:
            r = client.get("/api/system")
        except httpx.HTTPError:
            return None  # no gateway there
        if r.status_code in (401, 403):  # a gateway whose data API needs a token: it may own this bus
            print(
                f"bms-gateway scan: a gateway at {base} may be polling {args.url}, but its bus list needs "
                "a token: pass --token (operator role, or $BMS_GATEWAY_TOKEN), or --direct to open the "
                "bus anyway",
                file=sys.stderr,
            )
            return IN_USE, {}
        try:
            buses = r.json().get("gateway", {}).get("buses", {}) if r.status_code == 200 else {}
        except (ValueError, AttributeError):
            buses = {}  # something else listens there: not a gateway
        name = next((n for n, b in buses.items() if b.get("url") == args.url), None)
        if name is None:
            return None
        if not token:
            print(
                f"bms-gateway scan: {args.url} is bus {name!r} of the gateway at {base}, which is "
                "polling it: scan through it with --token (operator role, or $BMS_GATEWAY_TOKEN), "
                "or stop the gateway",
                file=sys.stderr,
            )
            return IN_USE, {}
        body = {"addresses": args.addresses, "timeout_s": args.timeout}
        try:  # from here on the bus is the gateway's: never fall back to opening it
            r = client.post(f"/api/buses/{name}/scan", json=body)
        except httpx.HTTPError as err:
            print(f"bms-gateway scan: the gateway at {base} did not answer the scan: {err}", file=sys.stderr)
            return IN_USE, {}
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        print(
            f"bms-gateway scan: the gateway at {base} refused the scan of bus {name!r}: {detail}",
            file=sys.stderr,
        )
        return IN_USE, {}
    doc = r.json()
    print(f"scanned through the gateway at {base} (bus {name!r}, protocol {doc['protocol']})")
    found: dict[str, list[int]] = doc.get("found", {})
    return 0, found


def run(args: argparse.Namespace) -> int:
    try:
        parse_url(args.url)
    except ValueError as err:
        print(f"bms-gateway scan: {err}", file=sys.stderr)
        return 2
    if not args.direct:
        try:
            gateway_url(args.gateway, "--gateway")
        except BadUrl as err:
            print(f"bms-gateway scan: {err}", file=sys.stderr)
            return USAGE
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
    what = f"scanning {args.url} for {', '.join(families)} packs at {len(args.addresses)} address(es)"
    with busy(args, what):
        via = None if args.direct else _through_gateway(args)
        code, found = asyncio.run(_scan(args, families)) if via is None else via
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
