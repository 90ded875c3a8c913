"""`bms-gateway watch [PACK]`: a live terminal view of the packs (the vendor tool's INFO page) over SSH.

What it is for: a person on a terminal sees every cell (lowest and highest marked, balancing cells
flagged), the temperatures, current, SOC/SOH, the active flags by name and how old the data is, with
the bank and the charge policy's decision above, refreshed at the bus's poll rate. It reads the HTTP
API of a running gateway (`GET /api/system`, `/api/packs[/BUS/ADDRESS]`), like `bms-gateway admin`
(`--url`, `--token` for `[admin] data_needs_token`). `--once` prints one frame and exits (scripts,
tests); without a terminal it behaves as `--once`.

It must never talk to a bus or read the gateway's files, and it never writes anything.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gateway.cli.urls import DEFAULT_URL, BadUrl, gateway_url

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3
DEFAULT_INTERVAL_S = 5.0
MAX_FRAMES = 10_000_000  # the loop is bounded (about a year at 5 s); Ctrl-C ends it earlier


class WatchError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "watch",
        help="live terminal view of the packs (cells, temperatures, flags), the bank and the policy",
        description="Live view of a running gateway's packs over its HTTP API (Ctrl-C to leave).",
    )
    p.add_argument("pack", nargs="?", help="BUS/ADDRESS (default: every pack)")
    p.add_argument("--url", help=f"gateway URL (default $BMS_GATEWAY_URL or {DEFAULT_URL})")
    p.add_argument("--token", help="bearer token, when [admin] data_needs_token (default $BMS_GATEWAY_TOKEN)")
    p.add_argument(
        "--interval", type=float, help="seconds between refreshes (default: the bus's realtime poll interval)"
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=run)


# ---- formatting ------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{fmt}}{(' ' + unit) if unit else ''}"


def _local(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).astimezone().isoformat(timespec="seconds")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


AVAILABILITY_STYLE = {"online": "green", "stale": "yellow", "offline": "red", "unknown": "dim"}


def bank_view(system: dict[str, Any], url: str) -> RenderableType:
    bank = system["bank"]
    gw = system["gateway"]
    head = Text(f"bms-gateway {gw['version']}  {url}  {_local(time.time())}", style="bold")
    lines = [head]
    online = f"{bank['packs_online']}/{bank['packs_configured']} online"
    if bank["packs_stale"]:
        online += f", {bank['packs_stale']} stale"
    if bank["has_data"]:
        cmax, cmin = bank["cell_max"], bank["cell_min"]
        cells = (
            f"cells {cmin['value']:.3f} V (min {cmin['bus']}/{cmin['address']} #{cmin['index']}) .. "
            f"{cmax['value']:.3f} V (max {cmax['bus']}/{cmax['address']} #{cmax['index']})"
        )
        lines.append(
            Text(
                f"Bank: {online}  {_num(bank['voltage_v'], '.2f', 'V')}"
                f"  {_num(bank['current_a'], '+.2f', 'A')}"
                f"  {_num(bank['power_w'], '.0f', 'W')}  SOC {_num(bank['soc_pct'], '.1f', '%')}"
                f"  SOH {_num(bank['soh_pct'], '.1f', '%')}  {cells}"
            )
        )
        flags = [*bank["protections"], *bank["alarms"], *bank["faults"]]
        if flags:
            lines.append(Text("Bank flags: " + ", ".join(flags), style="bold red"))
    else:
        lines.append(Text(f"Bank: {online}, no fresh data", style="yellow"))
    policy = system.get("policy")
    if policy is None:
        lines.append(Text("Policy: no decision yet", style="dim"))
    else:
        state = "STALE: charge and discharge blocked" if policy["stale"] else ""
        lines.append(
            Text(
                f"Policy: CVL {policy['charge_voltage_v']:.1f} V  CCL {policy['charge_current_a']:.1f} A  "
                f"DCL {policy['discharge_current_a']:.1f} A  DVL {policy['discharge_voltage_v']:.1f} V  "
                f"charge {'on' if policy['charge_enabled'] else 'OFF'}  "
                f"discharge {'on' if policy['discharge_enabled'] else 'OFF'}"
                + ("  force charge" if policy["force_charge_1"] or policy["force_charge_2"] else "")
                + ("  full charge requested" if policy["full_charge_request"] else "")
                + (f"  {state}" if state else ""),
                style="red" if policy["stale"] else "",
            )
        )
        limiting = policy.get("limiting") or {}
        if limiting:
            lines.append(
                Text("Limited by: " + ", ".join(f"{k} ({v})" for k, v in limiting.items()), style="dim")
            )
    return Group(*lines)


def pack_view(pack: dict[str, Any], columns: int = 8) -> RenderableType:
    avail = pack["availability"]
    title = Text(f"{pack['label']}  ", style="bold")
    title.append(avail, style=AVAILABILITY_STYLE.get(avail, ""))
    title.append(f"  data {_age(pack['age_s'])} old")
    if pack.get("paused"):
        title.append(f"  paused: {pack['paused']}", style="yellow")
    ident = pack.get("identity") or {}
    if ident.get("serial"):
        title.append(f"  SN {ident['serial']}", style="dim")
    t = pack.get("telemetry")
    if t is None:
        return Panel(Text("no reading yet", style="dim"), title=title, title_align="left")
    summary = Text(
        f"{t['voltage_v']:.2f} V  {t['current_a']:+.2f} A  {_num(t['power_w'], '.0f', 'W')}  "
        f"SOC {t['soc_pct']:.1f} %  SOH {_num(t['soh_pct'], '.1f', '%')}  "
        f"remaining {_num(t['remaining_capacity_ah'], '.2f', 'Ah')}"
        f" of {_num(t['full_capacity_ah'], '.2f', 'Ah')}"
        f"  cycles {_num(t['cycles'], 'd')}  measured {_local(t['measured_at'])}"
    )
    cells = Table.grid(padding=(0, 2))
    volts = t["cell_voltages_v"]
    balancing = set(t["balancing_cells"])
    row: list[Text] = []
    for i, v in enumerate(volts, start=1):
        mark = ""
        style = ""
        if i == t["cell_max_index"]:
            mark, style = " max", "bold red"
        elif i == t["cell_min_index"]:
            mark, style = " min", "bold blue"
        if i in balancing:
            mark += " bal"
            style = style or "magenta"
        row.append(Text(f"#{i:<2} {v:.3f}{mark}", style=style))
        if len(row) == columns:
            cells.add_row(*row)
            row = []
    if row:
        cells.add_row(*row)
    spread = Text(
        f"cells: min {t['cell_min_v']:.3f} V (#{t['cell_min_index']})  max {t['cell_max_v']:.3f} V "
        f"(#{t['cell_max_index']})  diff {t['cell_diff_v'] * 1000:.0f} mV  "
        f"balancing: {', '.join(f'#{c}' for c in sorted(balancing)) or 'none'}"
    )
    temps = Text(
        "temperatures: "
        + "  ".join(f"{tr['label']} {_num(tr['value_c'], '.1f', '°C')}" for tr in t["temperatures"])
    )
    mos = Text(
        f"charge MOS {_onoff(t['charge_mos_on'])}  discharge MOS {_onoff(t['discharge_mos_on'])}  "
        f"heater {_onoff(t['heater_on'])}  fan {_onoff(t['fan_on'])}"
    )
    flags: list[Text] = []
    for kind, style in (
        ("protections", "bold red"),
        ("alarms", "yellow"),
        ("faults", "bold red"),
        ("states", ""),
    ):
        if t[kind]:
            flags.append(Text(f"{kind}: {', '.join(t[kind])}", style=style))
    if not any(t[k] for k in ("protections", "alarms", "faults")):
        flags.insert(0, Text("no protection, alarm or fault active", style="green"))
    return Panel(Group(summary, spread, cells, temps, mos, *flags), title=title, title_align="left")


def _onoff(value: bool | None) -> str:
    return "-" if value is None else ("on" if value else "off")


# ---- fetching --------------------------------------------------------------------------------------


def _get(client: httpx.Client, path: str) -> Any:
    try:
        r = client.get(path)
    except httpx.TransportError as err:
        raise WatchError(UNREACHABLE, f"cannot reach the gateway at {client.base_url}: {err}") from None
    if r.status_code == 404:
        raise WatchError(USAGE, r.json().get("detail", r.text))
    if r.status_code in (401, 403):
        raise WatchError(USAGE, f"{r.status_code}: {r.json().get('detail', r.text)} (pass --token)")
    if r.status_code >= 400:
        raise WatchError(FAILED, f"{r.status_code}: {r.text}")
    return r.json()


def frame(client: httpx.Client, pack: str | None, url: str) -> tuple[RenderableType, float | None]:
    """One screen and the poll interval of the bus(es) shown (None when unknown)."""
    system = _get(client, "/api/system")
    if pack is not None:
        bus, sep, addr = pack.rpartition("/")
        if not sep or not bus or not addr.isdigit():
            raise WatchError(USAGE, f"pack {pack!r}: expected BUS/ADDRESS, e.g. sim/1")
        packs = [_get(client, f"/api/packs/{bus}/{addr}")]
    else:
        packs = _get(client, "/api/packs")
    buses = system["gateway"]["buses"]
    intervals = [
        buses[p["bus"]]["realtime_interval_s"]
        for p in packs
        if buses.get(p["bus"], {}).get("realtime_interval_s") is not None
    ]
    body = Group(bank_view(system, url), *(pack_view(p) for p in packs))
    return body, (min(intervals) if intervals else None)


def run(args: argparse.Namespace) -> int:
    try:
        url = gateway_url(args.url)
    except BadUrl as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE
    token = args.token or os.environ.get("BMS_GATEWAY_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    console = Console()
    once = args.once or not console.is_terminal
    with httpx.Client(base_url=url, headers=headers, timeout=args.timeout) as client:
        try:
            body, poll_s = frame(client, args.pack, url)
            if once:
                Console(width=max(console.width, 120) if not console.is_terminal else None).print(body)
                return OK
            interval = args.interval or poll_s or DEFAULT_INTERVAL_S
            with Live(body, console=console, screen=False, auto_refresh=False) as live:
                for _ in range(MAX_FRAMES):
                    time.sleep(interval)
                    body, _poll = frame(client, args.pack, url)
                    live.update(body, refresh=True)
        except WatchError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.code
        except KeyboardInterrupt:
            return OK
    return OK
