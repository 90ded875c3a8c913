"""`bms-gateway admin ...` against a gateway served on a real socket (HTTP service in a thread, the
simulator behind it): tables, --json, and exit codes that say what failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.ops.security.auth import Role
from tests.support.admin_support import ThreadedGateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    with ThreadedGateway(tmp_path_factory.mktemp("cli")) as gw:
        yield gw


def run(gw: ThreadedGateway, role: Role, *args: str) -> list[str]:
    return ["admin", *args, "--url", gw.url, "--token", gw.token(role)]


def test_params_get_table_and_json(gateway: ThreadedGateway, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(run(gateway, Role.OPERATOR, "params", "get", "sim/1")) == 0
    out = capsys.readouterr().out
    assert "CELL_OV_Start" in out and "Set Range" in out and "1..6 V" in out
    assert main(run(gateway, Role.OPERATOR, "params", "get", "sim/1", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pack"] == "sim/1" and doc["parameters"][0]["name"] == "CELL_OV_Start"


def test_set_export_import_and_exit_codes(
    gateway: ThreadedGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # refused: role too weak (4), value out of range (4), unknown pack (2)
    assert main(run(gateway, Role.OPERATOR, "params", "set", "sim/1", "CELL_OV_Stop=3.3")) == 4
    assert "admin role" in capsys.readouterr().err
    assert main(run(gateway, Role.ADMIN, "params", "set", "sim/1", "CELL_OV_Stop=9", "--allow-inferred")) == 4
    assert "outside the allowed range 0..6 V" in capsys.readouterr().err
    assert main(run(gateway, Role.ADMIN, "params", "set", "sim/9", "CELL_OV_Stop=3.3")) == 2
    capsys.readouterr()
    # written and verified on two packs
    code = main(
        run(gateway, Role.ADMIN, "params", "set", "sim/1", "sim/2", "CELL_OV_Stop=3.35", "--allow-inferred")
    )
    out = capsys.readouterr().out
    assert code == 0 and "verified" in out and "written: sim/1, sim/2" in out
    # a silent pack: the operation failed (1), the report says which pack was not written
    assert gateway.stack is not None
    gateway.stack.sim.set_online(3, False)
    try:
        code = main(run(gateway, Role.ADMIN, "params", "set", "all", "CELL_OV_Stop=3.36", "--allow-inferred"))
    finally:
        gateway.stack.sim.set_online(3, True)
    out = capsys.readouterr().out
    assert code == 1 and "not written: sim/3" in out
    # export, edit one row, preview it, apply it
    target = tmp_path / "p.csv"
    assert main(run(gateway, Role.OPERATOR, "params", "export", "sim/1", "-o", str(target))) == 0
    capsys.readouterr()
    text = target.read_text().replace("CELL_OV_Delay,1000,", "CELL_OV_Delay,1200,")
    target.write_text(text)
    assert main(run(gateway, Role.ADMIN, "params", "import", "sim/1", str(target), "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in doc["changes"]] == ["CELL_OV_Delay"]
    code = main(
        run(gateway, Role.ADMIN, "params", "import", "sim/1", str(target), "--apply", "--allow-inferred")
    )
    assert code == 0 and "verified" in capsys.readouterr().out


def test_clock_protocol_and_audit(gateway: ThreadedGateway, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(run(gateway, Role.OPERATOR, "clock", "sync", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["outcome"] == "ok" and doc["written"] == ["sim/1", "sim/2", "sim/3"]
    assert main(run(gateway, Role.OPERATOR, "clock", "read")) == 0
    assert "Drift s" in capsys.readouterr().out
    assert main(run(gateway, Role.ADMIN, "protocol", "--can", "sma")) == 0
    assert "persisted: True" in capsys.readouterr().out
    assert main(run(gateway, Role.ADMIN, "protocol", "--can", "nonsense")) == 4
    capsys.readouterr()
    assert main(run(gateway, Role.ADMIN, "audit", "--json", "--limit", "500")) == 0
    actions = {e["action"] for e in json.loads(capsys.readouterr().out)}
    assert {"clock.sync", "gateway.protocols"} <= actions


def test_process_with_token_from_the_environment_and_unreachable(gateway: ThreadedGateway) -> None:
    env = {**os.environ, "BMS_GATEWAY_TOKEN": gateway.token(Role.VIEWER), "BMS_GATEWAY_URL": gateway.url}
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "admin", "whoami"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0 and "role viewer" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "admin", "whoami", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 3 and "cannot reach" in out.stderr
    env.pop("BMS_GATEWAY_TOKEN")
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "admin", "whoami"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2 and "no token" in out.stderr


def test_over_https_with_the_gateway_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with ThreadedGateway(tmp_path / "gw", tls=(cert, key), packs=1) as gw:
        assert gw.url.startswith("https://")
        assert main(run(gw, Role.OPERATOR, "clock", "read", "--cafile", str(cert))) == 0
        assert "sim/1" in capsys.readouterr().out
        assert main(run(gw, Role.OPERATOR, "clock", "read")) == 3  # unknown certificate: not reachable
        assert "certificate" in capsys.readouterr().err.lower()


def test_inferred_dry_run_without_the_configuration_opt_in_names_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ThreadedGateway(tmp_path / "gw", allow_inferred=False, packs=1) as gw:
        code = main(run(gw, Role.ADMIN, "params", "set", "sim/1", "CELL_OV_Start=3.65", "--dry-run"))
    out = capsys.readouterr().out
    assert code == 0, out
    assert (
        "it needs both [admin] allow_inferred_writes = true in the configuration and --allow-inferred on "
        "the command line" in " ".join(out.split())
    ), out


def test_validation_answers_print_one_problem_a_line() -> None:
    import httpx

    from gateway.cli.api_client import error_text

    detail = [
        {"type": "greater_than_equal", "loc": ["body", "interval_s"], "msg": "Input should be greater than "
         "or equal to 0.1", "input": 0.0, "ctx": {"ge": 0.1}},
        {"type": "missing", "loc": ["body", "confirm"], "msg": "Field required", "input": {}},
        {"type": "int_parsing", "loc": ["query", "limit"], "msg": "Input should be a valid integer, unable "
         "to parse string as an integer", "input": "x"},
    ]  # fmt: skip
    text = error_text(httpx.Response(422, json={"detail": detail}))
    assert text.splitlines() == [
        "3 problems in the request:",
        "  interval_s: must be at least 0.1 (got 0)",
        "  confirm: is required",
        "  limit: should be a valid integer, unable to parse string as an integer (got 'x')",
    ]


def test_a_refused_value_names_its_parameter_once() -> None:
    import httpx

    from gateway.cli.api_client import error_text

    errors = [
        {"parameter": "CELL_OV_Start", "value": 7.5, "allowed": "2.5..4.5 V",
         "message": "CELL_OV_Start: 7.5 V is outside the allowed range 2.5..4.5 V"},
        {"parameter": "LC_Style", "value": 9, "allowed": [1, 2], "message": "not among 1, 2"},
        {"row": 3, "parameter": "CELL_UV_Start", "message": "CELL_UV_Start: not a number"},
    ]  # fmt: skip
    text = error_text(httpx.Response(422, json={"detail": "2 values refused", "errors": errors}))
    assert text.splitlines()[1:] == [
        "  CELL_OV_Start: 7.5 V is outside the allowed range 2.5..4.5 V",
        "  LC_Style: not among 1, 2",
        "  row 3: CELL_UV_Start: not a number",
    ]


def test_set_all_with_a_pack_never_read_lists_it_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # sim/3 is configured but silent from the start: the others are written, it is listed not written
    with ThreadedGateway(tmp_path, protocol="pace", packs=3, silent=(3,)) as gw:
        code = main(run(gw, Role.ADMIN, "params", "set", "all", "Cell_OV_Alarm=3.57", "--dry-run"))
        out = capsys.readouterr().out
        assert code == 1, out
        assert "would_change" in out and "not read" in out
        assert "outcome: partial; written: none; not written: sim/1, sim/2, sim/3" in out
        code = main(run(gw, Role.ADMIN, "params", "set", "all", "Cell_OV_Alarm=3.57"))
        out = capsys.readouterr().out
        assert code == 1, out
        assert "outcome: partial; written: sim/1, sim/2; not written: sim/3" in out
        lines = [line for line in out.splitlines() if "sim/3" in line and "Cell_OV_Alarm" in line]
        assert len(lines) == 1 and "failed" in lines[0] and "not written" in lines[0]
        assert main(run(gw, Role.ADMIN, "params", "set", "sim/3", "Cell_OV_Alarm=3.57")) == 1
        assert "outcome: failed" in capsys.readouterr().out
