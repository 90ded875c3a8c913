"""`bms-gateway admin ...`: the admin API from a terminal or a script.

Talks to a running gateway over HTTP(S) (`--url`, default `$BMS_GATEWAY_URL` or
http://127.0.0.1:8080) with a bearer token (`--token` or `$BMS_GATEWAY_TOKEN`). Prints tables for
humans, or the API's JSON with `--json`. Exit codes: 0 done, 1 the operation failed (a pack did not
answer, a read-back mismatched, a server error), 2 usage (bad arguments, no token, unknown pack),
3 the gateway is not reachable, 4 refused (authentication, role, validation, state, rate limit).

This module never talks to a bus or reads the gateway's state files: everything goes through the API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli.api_client import (
    FAILED,
    OK,
    USAGE,
    Api,
    CliError,
    cli_words,
    emit,
    file_format,
    finite,
    in_range,
    local_time,
    number,
    report_code,
    table,
    write_file,
)
from gateway.cli.urls import DEFAULT_URL
from gateway.south.drivers.base import Control
from protocol.bms import registry as bms_registry


def _show_batch(doc: dict[str, Any]) -> int:
    packs = doc.get("packs") if "packs" in doc else [doc]
    rows = []
    for p in packs or []:
        for i in p.get("items", []):
            rows.append(
                [p["pack"], i["name"], i["requested"], i["before"], i["after"], i["outcome"], i["detail"]]
            )
        if not p.get("items"):
            rows.append([p["pack"], "", "", "", "", p.get("outcome"), p.get("detail")])
    table(
        doc.get("action", "result"),
        ["Pack", "Item", "Requested", "Before", "After", "Outcome", "Detail"],
        rows,
    )
    for p in packs or []:
        for w in p.get("warnings", []):
            print(f"warning: {p['pack']}: {cli_words(w)}")
    if isinstance(doc.get("written"), list):  # a batch; a single pack's report has written: bool
        print(
            f"outcome: {doc['outcome']}; written: {', '.join(doc['written']) or 'none'}; "
            f"not written: {', '.join(doc['not_written']) or 'none'}"
        )
    else:
        print(f"outcome: {doc.get('outcome')}")
    return report_code(doc)


# ---- commands ----------------------------------------------------------------------------------


def _pack_path(pack: str) -> str:
    bus, sep, addr = pack.rpartition("/")
    if not sep or not bus or not addr.isdigit():
        raise CliError(USAGE, f"pack {pack!r}: expected BUS/ADDRESS, e.g. sim/1")
    return f"/api/packs/{bus}/{addr}"


def _packs(items: list[str]) -> list[str] | None:
    return None if not items or items == ["all"] else items


def _on_off(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("on", "1", "true", "enable"):
        return True
    if value.lower() in ("off", "0", "false", "disable"):
        return False
    raise CliError(USAGE, f"expected on or off, got {value!r}")


def cmd_whoami(api: Api, args: argparse.Namespace) -> int:
    doc = api.call("GET", "/api/admin/whoami")
    return emit(args, doc, lambda d: print(f"token {d['token_id']} role {d['role']} ({d['label']})") or OK)


def cmd_params_get(api: Api, args: argparse.Namespace) -> int:
    doc = api.call("GET", _pack_path(args.pack) + "/parameters", params={"fresh": args.fresh})

    def human(d: dict[str, Any]) -> int:
        labels = any(p.get("label") not in (None, p["name"]) for p in d["parameters"])  # PACE's tool labels
        rows = [
            [
                p["no"],
                p["name"],
                *([p.get("label") or ""] if labels else []),
                p["value"],
                p["unit"],
                p["range"],
                p["default"],
                p["access"],
                p["meaning"] or ("inferred" if p["inferred"] else ""),
            ]
            for p in d["parameters"]
        ]
        table(
            f"{d['pack']} ({d['family']}, {d['source']})",
            [
                "No.",
                "Name",
                *(["Tool label"] if labels else []),
                "Value",
                "Unit",
                "Set Range",
                "Default",
                "Access",
                "Note",
            ],
            rows,
        )
        return OK

    return emit(args, doc, human)


def cmd_params_all(api: Api, args: argparse.Namespace) -> int:
    params = [("packs", p) for p in args.packs]
    doc = api.call("GET", "/api/parameters", params=params)

    def human(d: dict[str, Any]) -> int:
        names = [p["pack"] for p in d["packs"]]
        rows = [[r["name"], r["unit"], *(r["values"].get(n) for n in names)] for r in d["parameters"]]
        table("parameters", ["Name", "Unit", *names], rows)
        return OK

    return emit(args, doc, human)


def cmd_params_set(api: Api, args: argparse.Namespace) -> int:
    packs = [i for i in args.items if "=" not in i]
    values: dict[str, Any] = {}
    for item in (i for i in args.items if "=" in i):
        name, _, value = item.partition("=")
        values[name.strip()] = number(value.strip())
    if not values:
        raise CliError(USAGE, "name at least one NAME=VALUE")
    if not packs:  # a forgotten pack must not mean every pack
        raise CliError(USAGE, "name the packs, or `all`: PACK [PACK...|all] NAME=VALUE [NAME=VALUE...]")
    if "all" in packs and len(packs) > 1:
        raise CliError(USAGE, f"`all` already names every pack: drop it or the packs ({' '.join(packs)})")
    body = {
        "values": values,
        "dry_run": args.dry_run,
        "allow_inferred": args.allow_inferred,
        "force": args.force,
    }
    if len(packs) == 1 and packs[0] != "all":
        doc = api.call("PUT", _pack_path(packs[0]) + "/parameters", json=body)
    else:
        doc = api.call("PUT", "/api/parameters", json={**body, "packs": _packs(packs)})
    return emit(args, doc, _show_batch)


PARAM_FORMATS = ("json", "csv", "xml", "xlsx")


def cmd_params_export(api: Api, args: argparse.Namespace) -> int:
    fmt = file_format(args.format, args.output, PARAM_FORMATS, "csv")
    if fmt == "xlsx" and not args.output:
        raise CliError(USAGE, "XLSX is a binary file: write it with -o FILE.xlsx")
    data: bytes = api.call(
        "GET",
        _pack_path(args.pack) + "/parameters/export",
        binary=True,
        params={"format": fmt, "fresh": args.fresh, "per_pack_state": args.per_pack_state},
    )
    if args.output:
        write_file(args.output, data)
        note = "" if args.per_pack_state else " (per-pack state left out; --per-pack-state includes it)"
        print(f"wrote {args.output} ({fmt}){note}", file=sys.stderr)
    else:
        sys.stdout.write(data.decode("utf-8"))
    return OK


def cmd_params_import(api: Api, args: argparse.Namespace) -> int:
    try:
        content = Path(args.file).read_bytes()
    except OSError as err:
        raise CliError(USAGE, f"cannot read {args.file}: {err}") from None
    params: dict[str, Any] = {
        "apply": args.apply,
        "allow_inferred": args.allow_inferred,
        "per_pack_state": args.per_pack_state,
        "force": args.force,
    }
    ext = Path(args.file).suffix.lower().lstrip(".")
    fmt = args.format or (ext if ext in PARAM_FORMATS else None)  # else the gateway reads the content
    if fmt:
        params["format"] = fmt
    doc = api.call("POST", _pack_path(args.pack) + "/parameters/import", params=params, content=content)

    def human(d: dict[str, Any]) -> int:
        rows = [[c["name"], c["current"], c["new"], c["unit"], c["set_range"]] for c in d["changes"]]
        table(
            f"{d['pack']}: {len(d['changes'])} change(s), {d['unchanged']} unchanged",
            ["Name", "Current", "New", "Unit", "Set Range"],
            rows,
        )
        for skip in d.get("skipped", []):
            print(f"skipped row {skip['row']}: {skip['message']}")
        if d.get("skipped"):
            print("(--per-pack-state writes them)")
        if d["result"] is not None:
            return _show_batch(d["result"])
        if not d["applied"]:
            print("preview only: repeat with --apply to write these values")
        return OK

    return emit(args, doc, human)


def cmd_params_load_origin(api: Api, args: argparse.Namespace) -> int:
    if not args.packs:  # it writes: a forgotten pack must not mean every pack (as for `params set`)
        raise CliError(USAGE, "name the packs, or `all`: params load-origin PACK [PACK...|all]")
    if "all" in args.packs and len(args.packs) > 1:
        named = " ".join(args.packs)
        raise CliError(USAGE, f"`all` already names every pack: drop it or the packs ({named})")
    body = {
        "packs": _packs(args.packs),
        "dry_run": args.dry_run,
        "allow_inferred": args.allow_inferred,
        "force": args.force,
    }
    return emit(args, api.call("POST", "/api/parameters/load-origin", json=body), _show_batch)


def cmd_params_table(api: Api, args: argparse.Namespace) -> int:
    doc = api.call("GET", f"/api/families/{args.family}/parameters")

    def human(d: list[dict[str, Any]]) -> int:
        rows = [
            [
                p["name"],
                p["unit"],
                p["range"],
                p["default"],
                p["access"],
                "; ".join(f"{c['value']} = {c['meaning']}" for c in p["choices"]) or (p["note"] or ""),
            ]
            for p in d
        ]
        table(args.family, ["Name", "Unit", "Set Range", "Default", "Access", "Choices / note"], rows)
        return OK

    return emit(args, doc, human)


def cmd_capacities(api: Api, args: argparse.Namespace) -> int:
    path = _pack_path(args.pack) + "/capacities"
    if args.full is None and args.remaining is None and args.nominal is None:
        doc = api.call("GET", path)

        def human(d: dict[str, Any]) -> int:
            table(
                d["pack"],
                ["Full Ah", "Remaining Ah", "Nominal Ah"],
                [[d["full_ah"], d["remaining_ah"], d["nominal_ah"]]],
            )
            for w in d["warnings"]:
                print(f"warning: {w}")
            return OK

        return emit(args, doc, human)
    body = {
        "full_ah": args.full,
        "remaining_ah": args.remaining,
        "nominal_ah": args.nominal,
        "allow_inferred": args.allow_inferred,
    }
    return emit(args, api.call("PUT", path, json=body), _show_batch)


def cmd_cell_count(api: Api, args: argparse.Namespace) -> int:
    body = {"cells": args.cells, "confirm": args.confirm}
    return emit(args, api.call("PUT", _pack_path(args.pack) + "/cell-count", json=body), _show_batch)


def cmd_serial(api: Api, args: argparse.Namespace) -> int:
    return emit(
        args, api.call("PUT", _pack_path(args.pack) + "/serial", json={"serial": args.serial}), _show_batch
    )


def cmd_anti_theft(api: Api, args: argparse.Namespace) -> int:
    path = _pack_path(args.pack) + "/anti-theft"
    mode = {
        "communication": _on_off(args.comm),
        "physical": _on_off(args.physical),
        "charge_activation": _on_off(args.charge_activation),
        "sleep_voltage": _on_off(args.sleep_voltage),
    }
    body: dict[str, Any] = {k: v for k, v in mode.items() if v is not None}
    if args.comm_timeout is not None:
        body["comm_timeout_h"] = args.comm_timeout
    if not body:
        doc = api.call("GET", path)

        def human(d: dict[str, Any]) -> int:
            mode = d["mode"]
            modes = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in mode.items()) if mode else "unknown"
            table(
                d["pack"],
                ["Locked", "Mode", "Mode source", "Comm timeout h"],
                [[d["locked"], modes, d["mode_source"], d["comm_timeout_h"]]],
            )
            print(d["comm_timeout_note"])
            return OK

        return emit(args, doc, human)
    return emit(args, api.call("PUT", path, json=body), _show_batch)


def cmd_unlock(api: Api, args: argparse.Namespace) -> int:
    return emit(args, api.call("POST", _pack_path(args.pack) + "/unlock"), _show_batch)


def cmd_pack_protocol(api: Api, args: argparse.Namespace) -> int:
    path = _pack_path(args.pack) + "/inverter-protocol"
    if args.can is None and args.rs485 is None and args.mode is None:
        doc = api.call("GET", path)

        def human(d: dict[str, Any]) -> int:
            table(
                d["pack"],
                ["CAN", "RS485", "Mode"],
                [[f"{d['can']} {d['can_name']}", f"{d['rs485']} {d['rs485_name']}", d["mode"]]],
            )
            return OK

        return emit(args, doc, human)
    body = {"can": args.can, "rs485": args.rs485, "mode": args.mode}
    return emit(args, api.call("PUT", path, json=body), _show_batch)


CONTROLS = tuple(c.value for c in Control)
NO_STATE = (Control.FORCED_SLEEP.value, Control.SHUTDOWN.value)  # actions, not switches


def cmd_control(api: Api, args: argparse.Namespace) -> int:
    if args.action in NO_STATE:
        if args.state is not None:
            raise CliError(USAGE, f"{args.action} takes no on/off: admin control {args.pack} {args.action}")
        on: bool | None = True
    else:
        if args.state is None:
            raise CliError(
                USAGE,
                f"{args.action} is a switch: name its state, on or off (admin control PACK ACTION on|off)",
            )
        on = _on_off(args.state)
    body = {"action": args.action, "on": on, "allow_inferred": args.allow_inferred}
    return emit(args, api.call("POST", _pack_path(args.pack) + "/control", json=body), _show_batch)


def cmd_sleep(api: Api, args: argparse.Namespace) -> int:
    body = {"action": "forced_sleep", "on": True}
    return emit(args, api.call("POST", _pack_path(args.pack) + "/control", json=body), _show_batch)


def _drift(drift_s: float | None) -> str:
    return "" if drift_s is None else f"{drift_s:+.1f}"


def cmd_clock_read(api: Api, args: argparse.Namespace) -> int:
    doc = api.call("GET", "/api/clock", params=[("packs", p) for p in args.packs if p != "all"])

    def human(d: dict[str, Any]) -> int:
        rows = [
            [p["pack"], local_time(p["pack_time"]), _drift(p["drift_s"]), p["source"], p["error"]]
            for p in d["packs"]
        ]
        table(
            f"clocks (limit {d['max_drift_s']:g} s)",
            ["Pack", "Pack time", "Drift s", "Source", "Error"],
            rows,
        )
        return FAILED if any(p["drift_s"] is None for p in d["packs"]) else OK

    return emit(args, doc, human)


def cmd_clock_sync(api: Api, args: argparse.Namespace) -> int:
    return emit(args, api.call("POST", "/api/clock/sync", json={"packs": _packs(args.packs)}), _show_batch)


def cmd_protocol(api: Api, args: argparse.Namespace) -> int:
    if args.can is None and args.rs485 is None:
        doc = api.call("GET", "/api/gateway/protocols")

        def human(d: dict[str, Any]) -> int:
            rows = [
                [k, d[k]["protocol"], d[k]["enabled"], ", ".join(d[k]["available"])] for k in ("can", "rs485")
            ]
            table("gateway inverter protocols", ["Port", "Protocol", "Enabled", "Available"], rows)
            return OK

        return emit(args, doc, human)
    doc = api.call("PUT", "/api/gateway/protocols", json={"can": args.can, "rs485": args.rs485})

    def show(d: dict[str, Any]) -> int:
        print(
            f"before: {d['before']}\nafter:  {d['after']}\npersisted: {d['persisted']} ({d['config_file']})"
        )
        return OK

    return emit(args, doc, show)


def cmd_audit(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.action:
        params["action"] = args.action
    fmt = file_format(args.format, args.output, AUDIT_FORMATS, "csv") if args.output else None
    doc = api.call("GET", "/api/audit", params=params)
    if args.output and fmt:
        return _audit_file(doc, args.output, fmt)

    def human(d: list[dict[str, Any]]) -> int:
        rows = [
            [
                e["id"],
                local_time(e["at"]),
                e["token_id"],
                e["role"],
                e["client"],
                e["action"],
                ",".join(e["packs"]),
                e["outcome"],
                e["detail"][:80],
            ]
            for e in d
        ]
        table("audit", ["Id", "At", "Token", "Role", "Client", "Action", "Packs", "Outcome", "Detail"], rows)
        cut = [e for e in d if e["outcome"] == "interrupted"]
        if cut:
            packs = sorted({p for e in cut for p in e["packs"]})
            print(
                f"{len(cut)} write(s) interrupted: the gateway stopped after the intent was recorded and "
                f"before the outcome; the change may have reached {', '.join(packs) or 'the pack'}: "
                "read the pack back before relying on it"
            )
        return OK

    return emit(args, doc, human)


AUDIT_FORMATS = ("csv", "xlsx")
AUDIT_COLUMNS = (
    "id",
    "at",
    "token_id",
    "role",
    "client",
    "action",
    "packs",
    "request",
    "before",
    "after",
    "outcome",
    "detail",
)


def _audit_file(entries: list[dict[str, Any]], path: str, fmt: str) -> int:
    """The audit entries as a CSV or XLSX file (cells neutralised by the shared export writer)."""
    import json

    from gateway.ops.history.export import render

    rows = []
    for e in entries:
        row: list[Any] = []
        for col in AUDIT_COLUMNS:
            v = e.get(col)
            if col == "packs":
                v = ",".join(v or [])
            elif isinstance(v, dict | list):
                v = json.dumps(v, sort_keys=True)
            row.append(v)
        rows.append(row)
    write_file(path, render(fmt, list(AUDIT_COLUMNS), rows, sheet="audit"))
    print(f"{len(rows)} audit entries written to {path} ({fmt})")
    return OK


# ---- parser ------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    try:
        api = Api(args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    try:
        code: int = args.admin_func(api, args)
        return code
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    finally:
        api.close()


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"gateway URL (default $BMS_GATEWAY_URL or {DEFAULT_URL})")
    common.add_argument("--token", help="bearer token (default $BMS_GATEWAY_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    common.add_argument(
        "--timeout", type=in_range(0.001, 86400), default=60.0, help="seconds to wait for an answer"
    )
    common.add_argument("--cafile", help="CA certificate to verify an https:// gateway")
    common.add_argument("--insecure", action="store_true", help="do not verify the https certificate")

    p = sub.add_parser("admin", help="administer packs through a running gateway's admin API")
    groups = p.add_subparsers(dest="admin_group", metavar="GROUP", required=True)

    def leaf(parent: Any, name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help_text, parents=[common])
        sp.set_defaults(func=_run, admin_func=func)
        return sp

    leaf(groups, "whoami", cmd_whoami, "show the token's id and role")

    params = groups.add_parser("params", help="parameters: get, all, set, export, import, load-origin, table")
    ps = params.add_subparsers(dest="params_command", metavar="ACTION", required=True)
    sp = leaf(ps, "get", cmd_params_get, "every parameter of a pack")
    sp.add_argument("pack", help="BUS/ADDRESS")
    sp.add_argument("--fresh", action="store_true", help="read from the pack now instead of the last reading")
    sp = leaf(ps, "all", cmd_params_all, "several packs side by side (default: all)")
    sp.add_argument("packs", nargs="*")
    sp = leaf(ps, "set", cmd_params_set, "write: PACK [PACK...|all] NAME=VALUE [NAME=VALUE...]")
    sp.add_argument("items", nargs="+", help="packs (BUS/ADDRESS or all) and NAME=VALUE assignments")
    sp.add_argument("--dry-run", action="store_true", help="show the difference, write nothing")
    sp.add_argument("--allow-inferred", action="store_true", help="opt in to inferred write encodings")
    sp.add_argument(
        "--force",
        action="store_true",
        help="write past the parameter rules' warnings (recommended ranges; audited); ordering rules "
        "are never overridden",
    )
    per_pack_help = "include per-pack state (full and remaining capacity; never cloned by default)"
    sp = leaf(ps, "export", cmd_params_export, "a pack's parameters as json, csv, xml or xlsx")
    sp.add_argument("pack")
    sp.add_argument("--format", choices=PARAM_FORMATS, help="default: from the extension, else csv")
    sp.add_argument("-o", "--output", help="file to write (default: stdout); .json .csv .xml .xlsx")
    sp.add_argument("--fresh", action="store_true")
    sp.add_argument("--per-pack-state", action="store_true", help=per_pack_help)
    sp = leaf(ps, "import", cmd_params_import, "validate a file and preview the changes (--apply writes)")
    sp.add_argument("pack")
    sp.add_argument("file", help=".json .csv .xml or .xlsx")
    sp.add_argument("--format", choices=PARAM_FORMATS, help="default: from the extension or the content")
    sp.add_argument("--apply", action="store_true")
    sp.add_argument("--allow-inferred", action="store_true")
    sp.add_argument(
        "--force",
        action="store_true",
        help="write past the parameter rules' warnings (recommended ranges; audited); ordering rules "
        "are never overridden",
    )
    sp.add_argument("--per-pack-state", action="store_true", help=per_pack_help)
    sp = leaf(ps, "load-origin", cmd_params_load_origin, "restore the documented defaults")
    sp.add_argument("packs", nargs="*", metavar="PACK", help="the packs (bus/address), or `all`")
    sp.add_argument("--dry-run", action="store_true")
    sp.add_argument("--allow-inferred", action="store_true")
    sp.add_argument(
        "--force",
        action="store_true",
        help="write past the parameter rules' warnings (recommended ranges; audited); ordering rules "
        "are never overridden",
    )
    sp = leaf(ps, "table", cmd_params_table, "a family's table (ranges, defaults, LC_Style modes)")
    sp.add_argument("family", choices=bms_registry.names())

    config = groups.add_parser(
        "config", help="capacities, cell-count, serial, anti-theft, unlock, pack-protocol"
    )
    cs = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    sp = leaf(cs, "capacities", cmd_capacities, "read, or write with --full/--remaining/--nominal (Ah)")
    sp.add_argument("pack")
    sp.add_argument("--full", type=finite, metavar="AH")
    sp.add_argument("--remaining", type=finite, metavar="AH")
    sp.add_argument("--nominal", type=finite, metavar="AH")
    sp.add_argument("--allow-inferred", action="store_true")
    sp = leaf(cs, "cell-count", cmd_cell_count, "factory: set the cell string count (needs --confirm)")
    sp.add_argument("pack")
    sp.add_argument("cells", type=int)
    sp.add_argument("--confirm", action="store_true")
    sp = leaf(cs, "serial", cmd_serial, "write the SN code")
    sp.add_argument("pack")
    sp.add_argument("serial")
    sp = leaf(cs, "anti-theft", cmd_anti_theft, "read, or set the anti-theft locks")
    sp.add_argument("pack")
    for opt in ("--comm", "--physical", "--charge-activation", "--sleep-voltage"):
        sp.add_argument(opt, metavar="on|off")
    sp.add_argument("--comm-timeout", type=finite, metavar="HOURS")
    sp = leaf(cs, "unlock", cmd_unlock, "unlock a pack locked by the communication anti-theft")
    sp.add_argument("pack")
    sp = leaf(cs, "pack-protocol", cmd_pack_protocol, "the pack's own inverter protocol selection (PACE)")
    sp.add_argument("pack")
    sp.add_argument("--can", type=int, metavar="CODE")
    sp.add_argument("--rs485", type=int, metavar="CODE")
    sp.add_argument("--mode", choices=("auto", "manual"))

    sp = leaf(groups, "control", cmd_control, "MOS, heater, fan, buzzer, ...: PACK ACTION on|off")
    sp.add_argument("pack")
    sp.add_argument("action", choices=CONTROLS, metavar="ACTION", help=f"one of: {', '.join(CONTROLS)}")
    sp.add_argument(
        "state",
        nargs="?",
        metavar="on|off",
        help=f"required for the switches; none for {' and '.join(NO_STATE)}",
    )
    sp.add_argument("--allow-inferred", action="store_true")
    sp = leaf(groups, "sleep", cmd_sleep, "forced sleep (refused while charging)")
    sp.add_argument("pack")

    clock = groups.add_parser("clock", help="read clocks and drift, or sync them")
    cls = clock.add_subparsers(dest="clock_command", metavar="ACTION", required=True)
    sp = leaf(cls, "read", cmd_clock_read, "every pack's clock and drift (or the packs named)")
    sp.add_argument("packs", nargs="*")
    sp = leaf(cls, "sync", cmd_clock_sync, "write the gateway's time (all packs, or the packs named)")
    sp.add_argument("packs", nargs="*")

    sp = leaf(groups, "protocol", cmd_protocol, "the gateway's own CAN/RS485 inverter protocols")
    sp.add_argument("--can", metavar="NAME")
    sp.add_argument("--rs485", metavar="NAME")

    sp = leaf(groups, "audit", cmd_audit, "the audit log (admin)")
    sp.add_argument("--limit", type=in_range(1, 10000, integer=True), default=50, help="1..10000")
    sp.add_argument("--action")
    sp.add_argument("-o", "--output", help="write the entries to a file (.csv or .xlsx) instead")
    sp.add_argument(
        "--format", choices=AUDIT_FORMATS, help="file format (default: from the file name, else csv)"
    )

    from gateway.cli.admin_records import register_records  # history, record, firmware

    register_records(groups, leaf)
