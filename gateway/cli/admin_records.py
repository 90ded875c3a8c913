"""`bms-gateway admin history|record|firmware ...`: records and upgrades through a running gateway.

Plugged into `bms-gateway admin` (`gateway.cli.admin`): same `--url`/`--token`/`--json`
options and exit codes (0 done, 1 failed, 2 usage, 3 unreachable, 4 refused). Long operations
(history pull, firmware flash/resume) follow the job over one server-sent-events request until it
ends (no polling, so no rate limit to run into): a progress bar on stderr when it is a terminal and
a summary on stdout, or one JSON document per update with `--json`. Times given are epoch seconds or
ISO 8601 (without a zone: UTC); times shown are local ISO 8601 with the zone.

This module never talks to a bus or reads the gateway's files: everything goes through the API.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.cli.api_client import (
    FAILED,
    OK,
    UNREACHABLE,
    USAGE,
    Api,
    CliError,
    emit,
    error_text,
    file_format,
    in_range,
    local_time,
    status_code,
    table,
    write_file,
)
from gateway.cli.progress import Reporter, busy


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(USAGE, f"{text!r} is neither epoch seconds nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _target(text: str) -> tuple[str, int | None]:
    """BUS/ADDRESS (one pack) or BUS (every pack of the bus)."""
    bus, sep, addr = text.rpartition("/")
    if not sep:
        if not text:
            raise CliError(USAGE, "expected BUS/ADDRESS or BUS")
        return text, None
    if not bus or not addr.isdigit():
        raise CliError(USAGE, f"{text!r}: expected BUS/ADDRESS (e.g. sim/1) or BUS (e.g. sim)")
    return bus, int(addr)


def _pack(text: str) -> tuple[str, int]:
    bus, address = _target(text)
    if address is None:
        raise CliError(USAGE, f"{text!r}: expected BUS/ADDRESS, e.g. sim/1")
    return bus, address


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _sse(api: Api, path: str) -> Iterator[dict[str, Any]]:
    try:
        with api.client.stream("GET", path, timeout=httpx.Timeout(api.client.timeout.read, read=None)) as r:
            if r.status_code >= 400:
                r.read()
                raise CliError(status_code(r.status_code), f"{r.status_code}: {error_text(r)}")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[6:])
    except httpx.TransportError as err:
        raise CliError(UNREACHABLE, f"cannot reach the gateway at {api.url}: {err}") from None


# ---- history ---------------------------------------------------------------------------------------


def _follow_history(api: Api, args: argparse.Namespace, bus: str, address: int | None) -> int:
    """Follow the pull over one server-sent-events request until its last download ends (no polling:
    a long download cannot run into the token's rate limit); the final states decide the exit code."""
    path = f"/api/history/jobs/events?bus={bus}" + ("" if address is None else f"&address={address}")
    last: dict[str, dict[str, Any]] = {}
    with Reporter(args, "history") as rep:
        for doc in _sse(api, path):
            last[doc["pack"]] = doc
            rep.update(doc["pack"], doc["next_index"], doc["count"], doc, doc["state"])
    if not args.json:
        rows = [
            [pack, j["state"], j["read"], j["stored"], j["duplicates"], j.get("detail", "")]
            for pack, j in sorted(last.items())
        ]
        table("history download", ["Pack", "State", "Read", "Stored", "Already stored", "Detail"], rows)
    return FAILED if any(j["state"] != "done" for j in last.values()) or not last else OK


def cmd_history_pull(api: Api, args: argparse.Namespace) -> int:
    bus, address = _target(args.target)
    doc = api.call(
        "POST", "/api/history/pull", json={"bus": bus, "address": address, "resume": not args.restart}
    )
    if args.no_wait:
        return emit(args, doc, _show_started)
    return _follow_history(api, args, bus, address)


def _show_started(jobs: list[dict[str, Any]]) -> int:
    """What `pull --no-wait` knows when it returns: the downloads started, and any pack whose
    download could not start (exit 1, as the followed pull would end)."""
    failed = [j for j in jobs if j["state"] == "failed"]
    started = [j["pack"] for j in jobs if j["state"] != "failed"]
    if started:
        print(f"started: {', '.join(started)}")
    for j in failed:
        print(f"failed: {j['pack']}: {j.get('detail') or 'not started'}")
    return FAILED if failed else OK


def cmd_history_stop(api: Api, args: argparse.Namespace) -> int:
    bus, address = _target(args.target)
    doc = api.call("POST", "/api/history/stop", json={"bus": bus, "address": address})
    return emit(args, doc, lambda d: (print(f"stopped: {len(d['stopped'])} download(s)"), OK)[1])


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    bus, address = _target(args.pack) if args.pack else (None, None)
    return _drop_none(
        {
            "bus": bus,
            "address": address,
            "serial": args.serial,
            "since": _when(args.since),
            "until": _when(args.until),
            "event": args.event,
        }
    )


def cmd_history_list(api: Api, args: argparse.Namespace) -> int:
    params = {**_filters(args), "limit": args.limit}
    doc = api.call("GET", "/api/history/records", params=params)

    def human(d: dict[str, Any]) -> int:
        rows = [
            [
                r["pack_serial"],
                f"{r['bus']}/{r['address']}",
                local_time(r["recorded_at"]),
                r["event"],
                r["voltage_v"],
                r["current_a"],
                r["soc_pct"],
                min(r["cell_voltages_v"], default=None),
                max(r["cell_voltages_v"], default=None),
            ]
            for r in d["records"]
        ]
        table(
            f"history records ({len(rows)} of {d['total']})",
            ["Serial", "Pack", "Time", "Event", "V", "A", "SOC %", "Cell min V", "Cell max V"],
            rows,
        )
        return OK

    return emit(args, doc, human)


RECORD_FORMATS = ("csv", "xlsx")


def _export_format(args: argparse.Namespace) -> str:
    """From --format, else the -o file's extension (.csv or .xlsx; none: csv; another: exit 2)."""
    return file_format(args.format, args.output, RECORD_FORMATS, "csv")


def _download(api: Api, path: str, params: dict[str, Any]) -> bytes:
    try:
        with busy(api.args, f"GET {path}: the gateway builds the file"):
            r = api.client.get(path, params=params)
    except httpx.TransportError as err:
        raise CliError(UNREACHABLE, f"cannot reach the gateway at {api.url}: {err}") from None
    if r.status_code >= 400:
        raise CliError(status_code(r.status_code), f"{r.status_code}: {error_text(r)}")
    return r.content


def cmd_history_export(api: Api, args: argparse.Namespace) -> int:
    fmt = _export_format(args)
    data = _download(api, "/api/history/export", {**_filters(args), "format": fmt})
    write_file(args.output, data)
    print(
        json.dumps({"file": args.output, "format": fmt, "bytes": len(data)})
        if args.json
        else f"wrote {args.output}"
    )
    return OK


def cmd_history_delete(api: Api, args: argparse.Namespace) -> int:
    bus, address = _pack(args.pack)
    body = {"confirm": "DELETE" if args.confirm else None}
    doc = api.call("POST", f"/api/packs/{bus}/{address}/history/delete", json=body)
    return emit(args, doc, lambda d: (print(f"{d['pack']}: records deleted"), OK)[1])


def cmd_history_interval(api: Api, args: argparse.Namespace) -> int:
    bus, address = _pack(args.pack)
    path = f"/api/packs/{bus}/{address}/history/interval"
    if args.minutes is None:
        doc = api.call("GET", path)
        return emit(
            args, doc, lambda d: (print(f"{d['pack']}: storage interval {d['interval_min']} min"), OK)[1]
        )
    doc = api.call("PUT", path, json={"interval_min": args.minutes})

    def human(d: dict[str, Any]) -> int:
        print(f"{d['pack']}: storage interval {d['before_min']} -> {d['interval_min']} min ({d['outcome']})")
        return OK if d["outcome"] == "ok" else FAILED

    return emit(args, doc, human)


def cmd_history_record_time(api: Api, args: argparse.Namespace) -> int:
    bus, address = _pack(args.pack)
    path = f"/api/packs/{bus}/{address}/history/record-time"
    doc: dict[str, Any] = {}
    for which, when in (("start", args.start), ("end", args.end)):
        if when is not None:
            doc = api.call("PUT", path, json={"which": which, "when": when})
    if not doc:
        doc = api.call("GET", path)
    return emit(args, doc, lambda d: (print(f"{d['pack']}: records from {d['start']} to {d['end']}"), OK)[1])


# ---- recording -------------------------------------------------------------------------------------


def cmd_record_export(api: Api, args: argparse.Namespace) -> int:
    fmt = _export_format(args)
    params: dict[str, Any] = _drop_none(
        {"since": _when(args.since), "until": _when(args.until), "format": fmt}
    )
    if args.packs:
        params["packs"] = args.packs
    data = _download(api, "/api/recording/export", params)
    write_file(args.output, data)
    print(
        json.dumps({"file": args.output, "format": fmt, "bytes": len(data)})
        if args.json
        else f"wrote {args.output}"
    )
    return OK


def cmd_record_interval(api: Api, args: argparse.Namespace) -> int:
    if args.seconds is None:
        doc = api.call("GET", "/api/recording")
        return emit(args, doc, lambda d: (print(f"recording interval {d['interval_s']:g} s"), OK)[1])
    doc = api.call("PUT", "/api/recording/interval", json={"interval_s": args.seconds})
    return emit(
        args,
        doc,
        lambda d: (
            print(
                f"recording interval {d['before_s']:g} -> {d['interval_s']:g} s "
                "(until restart; [recording] interval_s keeps it)"
            ),
            OK,
        )[1],
    )


# ---- firmware --------------------------------------------------------------------------------------


def _follow_job(api: Api, args: argparse.Namespace, job: dict[str, Any]) -> int:
    last = job
    with Reporter(args, "firmware") as rep:
        rep.update(job["pack"], job["blocks_done"], job["blocks_total"], job, job["phase"])
        for doc in _sse(api, f"/api/firmware/jobs/{job['id']}/events"):
            last = doc
            rep.update(doc["pack"], doc["blocks_done"], doc["blocks_total"], doc, doc["phase"])
    if not args.json:
        print(f"{last['pack']}: {last['state']}: {last['detail']}")
    return OK if last["state"] == "done" else FAILED


def cmd_firmware_flash(api: Api, args: argparse.Namespace) -> int:
    bus, address = _pack(args.pack)
    try:
        data = Path(args.image).read_bytes()
    except OSError as err:
        raise CliError(USAGE, f"cannot read {args.image}: {err}") from None
    info = api.call(
        "POST",
        "/api/firmware/images",
        params={"filename": Path(args.image).name},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    job = api.call("POST", "/api/firmware/jobs", json={"bus": bus, "address": address, "image": info["id"]})
    if args.no_wait:
        return emit(args, job, lambda d: (print(f"job {d['id']} started on {d['pack']}"), OK)[1])
    return _follow_job(api, args, job)


def cmd_firmware_status(api: Api, args: argparse.Namespace) -> int:
    if args.job:
        doc = api.call("GET", f"/api/firmware/jobs/{args.job}")
        jobs = [doc]
    else:
        doc = api.call("GET", "/api/firmware/jobs")
        jobs = doc["jobs"]

    def human(_d: Any) -> int:
        rows = [
            [
                j["id"],
                j["pack"],
                j["state"],
                j["phase"],
                f"{j['blocks_done']}/{j['blocks_total']}",
                "bootloader" if j["in_bootloader"] else j["pack_mode"],
                f"{j['old_version']} -> {j['new_version']}",
                j["detail"][:90],
            ]
            for j in jobs
        ]
        table(
            "firmware jobs",
            ["Job", "Pack", "State", "Phase", "Blocks", "Pack is in", "Versions", "Detail"],
            rows,
        )
        in_boot = doc.get("packs_in_bootloader") if isinstance(doc, dict) else None
        if in_boot:
            print(f"left in their bootloader: {', '.join(in_boot)} (resume their job)")
        return OK

    return emit(args, doc, human)


def cmd_firmware_resume(api: Api, args: argparse.Namespace) -> int:
    job = api.call("POST", f"/api/firmware/jobs/{args.job}/resume")
    if args.no_wait:
        return emit(args, job, lambda d: (print(f"job {d['id']} resumed"), OK)[1])
    return _follow_job(api, args, job)


def cmd_firmware_abort(api: Api, args: argparse.Namespace) -> int:
    doc = api.call("POST", f"/api/firmware/jobs/{args.job}/abort")
    return emit(args, doc, lambda d: (print(f"job {d['id']}: {d['state']}: {d['detail']}"), OK)[1])


# ---- parser ----------------------------------------------------------------------------------------


def register_records(groups: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `history`, `record` and `firmware` to the `bms-gateway admin` groups."""
    history = groups.add_parser(
        "history", help="records stored in the packs: pull, list, export, delete, interval"
    )
    hs = history.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    sp = leaf(
        hs, "pull", cmd_history_pull, "download the records of a pack (BUS/ADDRESS) or a whole bus (BUS)"
    )
    sp.add_argument("target", help="BUS/ADDRESS or BUS")
    sp.add_argument("--restart", action="store_true", help="start from the newest record instead of resuming")
    sp.add_argument("--no-wait", action="store_true", help="start and return")
    sp = leaf(hs, "stop", cmd_history_stop, "stop a download (it can be resumed)")
    sp.add_argument("target", help="BUS/ADDRESS or BUS")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--pack", help="BUS/ADDRESS or BUS")
        p.add_argument("--serial", help="pack serial number")
        p.add_argument("--since", help="epoch seconds or ISO 8601 (UTC without a zone)")
        p.add_argument("--until")
        p.add_argument("--event", help='event name, e.g. "Timing record"')

    sp = leaf(hs, "list", cmd_history_list, "downloaded records by pack, time and event")
    filters(sp)
    sp.add_argument("--limit", type=in_range(1, 10000, integer=True), default=100, help="1..10000")
    sp = leaf(hs, "export", cmd_history_export, "downloaded records to a CSV or XLSX file")
    filters(sp)
    sp.add_argument("-o", "--output", required=True, help="file to write (.csv or .xlsx)")
    sp.add_argument(
        "--format", choices=RECORD_FORMATS, help="default: from the -o file's extension, else csv"
    )
    sp = leaf(hs, "delete", cmd_history_delete, "delete the records stored IN THE PACK (needs --confirm)")
    sp.add_argument("pack")
    sp.add_argument("--confirm", action="store_true", help="yes, delete them (cannot be undone)")
    sp = leaf(hs, "interval", cmd_history_interval, "read, or write, the pack's storage interval (minutes)")
    sp.add_argument("pack")
    sp.add_argument("minutes", nargs="?", type=in_range(1, 65535, integer=True), help="1..65535")
    sp = leaf(hs, "record-time", cmd_history_record_time, "read, or write, the record start/end time")
    sp.add_argument("pack")
    sp.add_argument("--start", help="ISO 8601 pack time")
    sp.add_argument("--end", help="ISO 8601 pack time")

    record = groups.add_parser("record", help="the gateway's real-time recording: export, interval")
    rs = record.add_subparsers(dest="record_command", metavar="ACTION", required=True)
    sp = leaf(rs, "export", cmd_record_export, "a time range of the recording to a CSV or XLSX file")
    sp.add_argument("-o", "--output", required=True, help="file to write (.csv or .xlsx)")
    sp.add_argument(
        "--format", choices=RECORD_FORMATS, help="default: from the -o file's extension, else csv"
    )
    sp.add_argument("--since")
    sp.add_argument("--until")
    sp.add_argument("packs", nargs="*", help="BUS/ADDRESS (default: every pack)")

    sp = leaf(rs, "interval", cmd_record_interval, "read, or change now (admin), the recording interval")
    sp.add_argument("seconds", nargs="?", type=in_range(0.1, 3600), help="0.1 to 3600 s")

    firmware = groups.add_parser("firmware", help="firmware upgrades: flash, status, resume, abort")
    fs = firmware.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)
    sp = leaf(fs, "flash", cmd_firmware_flash, "upload an image and upgrade a pack")
    sp.add_argument("pack")
    sp.add_argument("image", help="image file (.bgfw)")
    sp.add_argument("--no-wait", action="store_true")
    sp = leaf(fs, "status", cmd_firmware_status, "every job (or one), and packs left in their bootloader")
    sp.add_argument("job", nargs="?")
    sp = leaf(fs, "resume", cmd_firmware_resume, "resume an interrupted, aborted or failed job")
    sp.add_argument("job")
    sp.add_argument("--no-wait", action="store_true")
    sp = leaf(fs, "abort", cmd_firmware_abort, "abort a running job (it stays resumable)")
    sp.add_argument("job")
