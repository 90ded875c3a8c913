"""A real MQTT broker process for tests: Mosquitto when installed, else amqtt (PyPI) so the suite also
passes on a fresh machine without root (BMS_GATEWAY_TEST_BROKER=amqtt forces it). Bound to 127.0.0.1
on a free port; restartable on that port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt


class Recorder:
    """A test client on the broker recording every message under its subscribed filters."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[tuple[str, bytes, bool]] = []
        self.arrived = asyncio.Event()

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    def last(self, topic: str) -> bytes | None:
        found = self.payloads(topic)
        return found[-1] if found else None

    async def wait(self, predicate: Callable[[], Any], timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


R = TypeVar("R", bound=Recorder)


@contextlib.asynccontextmanager
async def recording(
    port: int, filters: tuple[str, ...], make: Callable[[aiomqtt.Client], R]
) -> AsyncIterator[R]:
    """Connect a recording client (built by `make`), subscribe to `filters` at QoS 1, record until exit."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=None) as client:
        rec = make(client)
        for f in filters:
            await client.subscribe(f, qos=1)

        async def pump() -> None:
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                rec.messages.append((str(m.topic), payload, m.retain))
                rec.arrived.set()

        task = asyncio.create_task(pump())
        try:
            yield rec
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    def __init__(self, workdir: Path, prefer: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        mosquitto = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        prefer = prefer or os.environ.get("BMS_GATEWAY_TEST_BROKER")  # "amqtt" forces the PyPI broker
        self.kind = prefer or ("mosquitto" if mosquitto else "amqtt")
        self._mosquitto = mosquitto
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            assert self._mosquitto is not None
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n", encoding="utf-8"
            )
            return [self._mosquitto, "-c", str(conf)]
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n",
            encoding="utf-8",
        )
        return [sys.executable, "-c", "from amqtt.scripts.broker_script import main; main()", "-c", str(conf)]

    def start(self, timeout_s: float = 15.0) -> None:
        """Start (or restart on the same port). A port taken meanwhile by another process is retried:
        with a new port on the first start, with the same port (a few times) on a restart."""
        for attempt in range(5):
            if self._try_start(timeout_s):
                self._started = True
                return
            if not self._started:
                self.port = free_port()
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"{self.kind}: port {self.port} stayed in use")

    def _try_start(self, timeout_s: float) -> bool:
        log_path = self.workdir / f"{self.kind}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                output = log_path.read_bytes()[offset:].decode(errors="replace")
                if "in use" in output:
                    return False
                raise RuntimeError(f"{self.kind} exited: {output[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} did not listen on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
