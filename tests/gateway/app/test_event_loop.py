"""The event loop choice (`event_loop`): uvloop when installed, the standard library's otherwise.

Unit checks of `gateway.app.loop`, then the real `bms-gateway run` process on each loop answering
Modbus/TCP (pyModbusTCP) and HTTP: both loops stay supported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyModbusTCP.client import ModbusClient

from gateway.app import loop
from gateway.app.config import ConfigError, parse_config
from tests.support import REPO

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_auto_is_uvloop_when_installed_and_asyncio_always_works() -> None:
    assert loop.resolve("asyncio") == "asyncio"
    assert loop.resolve("auto") == ("uvloop" if HAVE_UVLOOP else "asyncio")

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert loop.run(which(), "asyncio").startswith("asyncio")
    if HAVE_UVLOOP:
        assert loop.run(which(), "uvloop").startswith("uvloop")
        assert loop.run(which(), "auto").startswith("uvloop")


def test_uvloop_asked_for_but_missing_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "uvloop_available", lambda: False)
    assert loop.resolve("auto") == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop.resolve("uvloop")

    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError

    with pytest.raises(ConfigError):
        loop.run(never(), "uvloop")


def test_event_loop_key_is_validated() -> None:
    assert parse_config({"event_loop": "asyncio"}).event_loop == "asyncio"
    assert parse_config({}).event_loop == "auto"
    with pytest.raises(ConfigError, match="event_loop"):
        parse_config({"event_loop": "trio"})


@pytest.mark.e2e
@pytest.mark.timeout(90)
@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_run_serves_modbus_and_http_on_each_loop(tmp_path: Path, choice: str) -> None:
    if choice == "uvloop" and not HAVE_UVLOOP:
        pytest.skip("uvloop is not installed (extra 'fast')")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'event_loop = "{choice}"\nstate_dir = "{tmp_path / "state"}"\n'
        '[http]\nlisten = "127.0.0.1:0"\n[modbus]\nlisten = "127.0.0.1:0"\n'
        "[simulator]\nenabled = true\npacks = 2\npacing = false\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", "run", "--config", str(cfg)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert proc.stdout is not None
    try:
        found: dict[str, str] = {}
        while "system" not in found:
            line = proc.stdout.readline()
            assert line, f"gateway exited early: {proc.stderr.read() if proc.stderr else ''}"
            name, _, where = line.strip().partition(": ")
            found[name] = where
        port = int(found["modbus"].rsplit(":", 1)[1])
        client = ModbusClient(host="127.0.0.1", port=port, unit_id=2, timeout=5.0, auto_open=True)
        try:
            regs = None
            for _ in range(200):  # the native unit answers at once; wait for both packs online
                regs = client.read_holding_registers(0, 8)
                if regs is not None and regs[4] == 2:
                    break
                subprocess.run(["sleep", "0.05"], check=True)
        finally:
            client.close()
        assert regs is not None and regs[0] == 1 and regs[1] == 2 and regs[4] == 2  # version, packs, online
        import httpx

        ready = httpx.get(found["http"] + "/readyz", timeout=5)
        assert ready.status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "bms-gateway stopped" in out
