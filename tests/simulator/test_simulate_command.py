"""`bms-gateway simulate` says on exit how many answers its packs gave and, separately, what fault
injection did (issue 17, defect 15: `fault responses: N` counted every answer, faulty or not)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol.bms.tianpower import messages as m

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).with_name("bms-gateway")


def test_exit_summary_counts_answers_and_faults_apart() -> None:
    proc = subprocess.Popen(
        [str(BIN), "simulate", "--packs", "1", "--listen", "127.0.0.1:0", "--no-pacing"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = 0
        for _ in range(20):
            line = proc.stdout.readline()
            if line.startswith("listening:"):
                port = int(line.rpartition(":")[2])
                break
        assert port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            for _ in range(3):
                conn.sendall(m.encode_request(m.ReadRequest(1, m.Cmd.REALTIME)))
                got = b""
                deadline = time.monotonic() + 10
                while not got.endswith(b"\r") and time.monotonic() < deadline:
                    got += conn.recv(4096)
                assert got
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out
    assert "answers: 3" in out.splitlines(), out
    assert not any(line.startswith("fault ") for line in out.splitlines()), out  # no fault was injected
