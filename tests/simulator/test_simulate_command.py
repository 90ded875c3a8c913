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
ONE_PACK = [str(BIN), "simulate", "--packs", "1", "--listen", "127.0.0.1:0", "--no-pacing"]


def test_exit_summary_counts_answers_and_faults_apart() -> None:
    proc = subprocess.Popen(
        ONE_PACK,
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


def test_a_reader_that_stops_reading_does_not_turn_a_clean_stop_into_a_listen_error() -> None:
    # `bms-gateway simulate --listen ... | head -2`: the pipe closes after two lines; the simulator
    # keeps serving, and a stop is still a clean one (exit 0, nothing about listening)
    proc = subprocess.Popen(
        ONE_PACK,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        port = int(proc.stdout.readline().rpartition(":")[2])
        proc.stdout.readline()
        proc.stdout.close()  # what `head -2` does once it has its lines
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(m.encode_request(m.ReadRequest(1, m.Cmd.REALTIME)))
            assert conn.recv(4096)  # still serving
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == 0, err
    assert "cannot listen" not in err and "Traceback" not in err, err


def test_an_address_in_use_is_a_listen_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(BIN), "simulate", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 3, done.stderr
    assert f"bms-gateway simulate: cannot listen on 127.0.0.1:{port}:" in done.stderr


@pytest.mark.parametrize(
    ("faults", "said"),
    [
        ("slow=9:1", "slow: pack 9 is not simulated (addresses 1..2)"),
        ("sleep=2+3", "sleep: pack 3 is not simulated (addresses 1..2)"),
        ("hw=0:NTC_Disconnected", "hw: pack 0 is not simulated (addresses 1..2)"),
        ("offline=2:10/20", "offline pack 2: the time off (20 s) must be within 0 and the period (10 s)"),
    ],
)
def test_faults_for_packs_not_simulated_or_impossible_schedules_are_refused(faults: str, said: str) -> None:
    done = subprocess.run(
        [str(BIN), "simulate", "--packs", "2", "--faults", faults, "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr, done.stderr
