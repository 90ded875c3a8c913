"""The admin API client shared by the `admin` and `history`/`record`/`firmware` commands: the exit
codes, the HTTP client with its error mapping, and the table/JSON output.

It never talks to a bus or reads the gateway's state files: everything goes through the API.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from gateway.cli.progress import busy
from gateway.cli.urls import BadUrl, gateway_url

OK, FAILED, USAGE, UNREACHABLE, REFUSED = 0, 1, 2, 3, 4


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def number(text: str) -> float | int:
    """A value typed on the command line: an integer, else a finite float (JSON has no NaN or
    infinity, and no pack takes one); CliError(USAGE) otherwise."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise CliError(USAGE, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise CliError(USAGE, f"{text!r} is not a finite number")
    return value


def finite(text: str) -> float:
    """argparse `type=` for a float option: a finite number, or the usage error (exit 2)."""
    try:
        return float(number(text))
    except CliError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def in_range(low: float, high: float, *, integer: bool = False) -> Callable[[str], float | int]:
    """argparse `type=` for a number the API bounds: refused before anything is sent (exit 2)."""

    def parse(text: str) -> float | int:
        try:
            value = number(text)
        except CliError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        if integer and not isinstance(value, int):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value if integer else float(value)

    return parse


def file_format(explicit: str | None, filename: str | None, formats: tuple[str, ...], default: str) -> str:
    """The format asked for (`--format`), else the one the file name's extension stands for, else
    `default` (no extension); another extension is a usage error, never silently `default`."""
    if explicit:
        return explicit
    ext = Path(filename).suffix.lower().lstrip(".") if filename else ""
    if ext in formats:
        return ext
    if ext:
        names = ", ".join(f".{f}" for f in formats[:-1]) + f" or .{formats[-1]}"
        raise CliError(
            USAGE,
            f"{filename}: cannot tell the format from the extension .{ext}; name the file {names}, "
            "or pass --format",
        )
    return default


def write_file(path: str | Path, data: bytes) -> None:
    """Write an exported file; CliError(USAGE) naming it when it cannot be written."""
    try:
        Path(path).write_bytes(data)
    except OSError as err:
        raise CliError(USAGE, f"cannot write {path}: {err}") from None


def status_code(status: int) -> int:
    if status in (401, 403, 409, 422, 429):
        return REFUSED
    if status in (400, 404, 405):
        return USAGE
    return FAILED


class Api:
    def __init__(self, args: argparse.Namespace) -> None:
        token = args.token or os.environ.get("BMS_GATEWAY_TOKEN")
        if not token:
            raise CliError(
                USAGE, "no token: pass --token or set BMS_GATEWAY_TOKEN (bms-gateway token create)"
            )
        self.args = args
        try:
            self.url = gateway_url(args.url)
        except BadUrl as err:
            raise CliError(USAGE, str(err)) from None
        verify: bool | ssl.SSLContext = True
        if args.cafile:
            try:
                verify = ssl.create_default_context(cafile=args.cafile)
            except (OSError, ssl.SSLError) as err:
                raise CliError(USAGE, f"cannot load --cafile {args.cafile}: {err}") from None
        elif args.insecure:
            verify = False
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=args.timeout,
            verify=verify,
        )

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, *, raw: bool = False, binary: bool = False, **kw: Any) -> Any:
        """The answer's JSON (`raw`: its text, `binary`: its bytes); CliError with the exit code."""
        try:
            with busy(self.args, f"{method} {path}: waiting for the gateway"):
                r = self.client.request(method, path, **kw)
        except httpx.TransportError as err:
            raise CliError(UNREACHABLE, f"cannot reach the gateway at {self.url}: {err}") from None
        if r.status_code >= 400:
            raise CliError(status_code(r.status_code), f"{r.status_code}: {error_text(r)}")
        if binary:
            return r.content
        return r.text if raw else r.json()


# What the API asks of a request, as a person types it on the command line.
CLI_WORDS: tuple[tuple[str, str], ...] = (
    ('"allow_inferred": true in the request', "--allow-inferred on the command line"),
    ('"allow_inferred": true', "--allow-inferred"),
    ('with "confirm": true', "with --confirm"),
    ('"confirm": true', "--confirm"),
    ('with confirm = "DELETE"', "with --confirm"),
    ('confirm = "DELETE"', "--confirm"),
    ('"dry_run": true', "--dry-run"),
)


def cli_words(text: str) -> str:
    """An API message with the request fields named as the CLI's flags (`--allow-inferred`, ...)."""
    for api, cli in CLI_WORDS:
        text = text.replace(api, cli)
    return text


def error_text(r: httpx.Response) -> str:
    """The error body of an answer for a person: the detail, then every listed problem on its own
    line with its row number (imports) or parameter, in the CLI's words."""
    try:
        body = r.json()
    except ValueError:
        return cli_words(r.text)
    detail = body.get("detail") if isinstance(body, dict) else body
    problems = validation_problems(detail)
    if problems:
        if len(problems) == 1:
            return problems[0]
        return "\n  ".join([f"{len(problems)} problems in the request:", *problems])
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    lines = [cli_words(detail)]
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        for e in errors:
            if not isinstance(e, dict) or "message" not in e:
                continue
            where = f"row {e['row']}" if e.get("row") is not None else str(e.get("parameter") or "")
            message = cli_words(str(e["message"]))
            if where and message.startswith(f"{where}:"):  # the message names its parameter already
                where = ""
            lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


LIMITS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be more than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


def validation_problems(detail: Any) -> list[str]:
    """FastAPI's validation answer (a 422 whose detail lists `loc`, `msg`, `type`, `input`, `ctx`) as
    one line per problem in words, e.g. `interval_min: must be at least 1 (got 0)`; [] for any
    other detail."""
    if not isinstance(detail, list) or not detail:
        return []
    if not all(isinstance(e, dict) and "loc" in e and "msg" in e for e in detail):
        return []
    lines = []
    for e in detail:
        loc = [str(part) for part in e["loc"]]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        where = ".".join(loc) or "the request"
        ctx = e.get("ctx") if isinstance(e.get("ctx"), dict) else {}
        key, words = LIMITS.get(str(e.get("type")), ("", ""))
        if key and key in ctx:
            text = f"{words} {fmt(ctx[key])}"
        elif e.get("type") == "missing":
            text = "is required"
        else:
            msg = str(e["msg"])
            text = msg.removeprefix("Input ").removeprefix("Value error, ")
            text = text[:1].lower() + text[1:]
        got = e.get("input")
        if "input" in e and e.get("type") != "missing" and not isinstance(got, dict | list):
            quoted = isinstance(got, str) and not key  # a query's number arrives as text: 16, not '16'
            text += f" (got {got!r})" if quoted else f" (got {fmt(got)})"
        lines.append(cli_words(f"{where}: {text}"))
    return lines


# ---- output ------------------------------------------------------------------------------------


def local_time(epoch: float | None) -> str:
    """An epoch time as the local ISO 8601 time with its zone (human output; JSON keeps the epoch)."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).astimezone().isoformat(timespec="seconds")


def fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    Console(width=200).print(t)


def report_code(doc: dict[str, Any]) -> int:
    outcome = doc.get("outcome")
    return OK if outcome in ("ok", "dry_run", None) else FAILED


def emit(args: argparse.Namespace, doc: Any, human: Any) -> int:
    if args.json:
        print(json.dumps(doc, indent=2))
        return report_code(doc) if isinstance(doc, dict) else OK
    code: int = human(doc)
    return code
