"""`bms-gateway simulate`: run virtual packs on a TCP port (and optionally a pty) until interrupted.

Prints where it listens (and the pty path) on stdout, one `key: value` per line, then serves until
SIGINT/SIGTERM. Exit codes: 0 after a clean stop, 2 for bad arguments (including a bad --faults
spec or an unreadable --state file), 3 when the address cannot be bound.
It must never print a traceback for bad input; everything it serves lives in `simulator`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from protocol.bms import registry as bms_registry
from simulator import PROFILES, Simulator, SimulatorOptions, parse_fault_spec


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:4001), got {value!r}")
    return host, int(port)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run simulated battery packs on a TCP port (a virtual RS485 bus)",
        description="Virtual Basengreen/Tianpower or PACE packs behind a transparent RS485-to-TCP "
        "converter. See docs/simulator.md.",
    )
    p.add_argument("--protocol", choices=bms_registry.names(), default=bms_registry.DEFAULT)
    p.add_argument("--packs", type=int, default=1, help="number of packs (1..15)")
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 4001), metavar="HOST:PORT")
    p.add_argument("--first-address", type=int, default=1, help="address of the first pack (default 1)")
    p.add_argument("--baud", type=int, default=9600, help="wire pacing: 10 bits per byte at this rate")
    p.add_argument("--no-pacing", action="store_true", help="send answers at once (fast tests)")
    p.add_argument("--turnaround", type=float, default=0.05, metavar="SECONDS", help="delay before an answer")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", choices=PROFILES, default="idle")
    p.add_argument(
        "--faults",
        default="",
        metavar="SPEC",
        help="fault injection, e.g. corrupt=0.01,drop=0.05,hw=1:NTC_Disconnected (docs/simulator.md)",
    )
    p.add_argument("--state", default=None, metavar="FILE", help="persist parameters, SN, clock, history")
    p.add_argument("--pty", action="store_true", help="also expose the bus on a pseudo-terminal")
    p.add_argument("--history-records", type=int, default=0, help="timing records each pack starts with")
    p.add_argument("--pace-version", choices=("25", "20"), default="25", help="PACE protocol version")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        faults = parse_fault_spec(args.faults)
        options = SimulatorOptions(
            protocol=args.protocol,
            packs=args.packs,
            first_address=args.first_address,
            seed=args.seed,
            profile=args.profile,
            baud=args.baud,
            pacing=not args.no_pacing,
            turnaround_s=args.turnaround,
            faults=faults,
            state_file=args.state,
            history_records=args.history_records,
            pace_version=int(args.pace_version, 16),
            time_scale=args.time_scale,
        )
        sim = Simulator(options)
        if args.state:
            sim.save_state()  # fail now, not at the first write, when the file cannot be written
    except (ValueError, OSError) as err:
        print(f"bms-gateway simulate: {err}", file=sys.stderr)
        return 2
    host, port = args.listen
    return asyncio.run(_serve(sim, host, port, args.pty))


def _say(line: str) -> None:
    """Print a report line; once nobody reads standard output (`simulate ... | head -2`) the rest
    is dropped and the simulator keeps serving until it is stopped."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Python would otherwise fail again flushing the closed pipe at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _serve(sim: Simulator, host: str, port: int, pty: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        try:
            server = await stack.enter_async_context(sim.serve_tcp(host, port, pty=pty))
        except OSError as err:  # only binding: a failure later is not "cannot listen"
            print(f"bms-gateway simulate: cannot listen on {host}:{port}: {err}", file=sys.stderr)
            return 3
        opts = sim.options
        _say(f"listening: {server.host}:{server.port}")
        if server.pty_path:
            _say(f"pty: {server.pty_path}")
        _say(f"protocol: {opts.protocol}")
        _say(f"addresses: {', '.join(str(a) for a in sim.addresses)}")
        pacing = f"{opts.baud} baud, turnaround {opts.turnaround_s} s" if opts.pacing else "off"
        _say(f"pacing: {pacing}")
        await stop.wait()
    counters = dict(sim.fault_counters)
    _say(f"answers: {counters.pop('responses', 0)}")  # every answer the packs produced, faulty or not
    for key, value in counters.items():  # only what fault injection did
        if value:
            _say(f"fault {key}: {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.cli.simulate ...`: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="bms-gateway")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
