"""The HTTP service: uvicorn serving `create_app(ctx)` inside the gateway's own event loop.

The socket is bound here (so port 0 works and a bad address is a clear configuration error);
uvicorn's own signal handling is disabled, the supervisor in `gateway.app.wiring` owns the signals.
With `[admin] tls_cert`/`tls_key` it serves HTTPS.
It must never block the event loop or install signal handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from pathlib import Path

import uvicorn

from gateway.app.config import ConfigError, listen_error
from gateway.app.context import AppContext
from gateway.app.supervisor import ReadyCallback
from gateway.north.http.app import create_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.started_event.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the gateway's supervisor handles SIGINT/SIGTERM


def bind(listen: str) -> socket.socket:
    """A listening TCP socket for HOST:PORT (ConfigError naming the address when impossible)."""
    host, _, port_s = listen.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port_s), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, ValueError) as err:
        raise ConfigError(f"http.listen: cannot resolve {listen!r}: {err}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise listen_error("http.listen", listen, err) from None
    sock.setblocking(False)
    return sock


class HttpService:
    name = "http"

    def __init__(
        self,
        ctx: AppContext,
        listen: str,
        *,
        tls: tuple[Path, Path] | None = None,
        shutdown_timeout_s: float = 3.0,
    ) -> None:
        self.ctx = ctx
        self.listen = listen
        self.tls = tls  # (certificate, private key), PEM: serve HTTPS
        self.shutdown_timeout_s = shutdown_timeout_s
        self.port: int | None = None

    async def run(self, ready: ReadyCallback) -> None:
        if self.tls is not None:
            for what, path in zip(("admin.tls_cert", "admin.tls_key"), self.tls, strict=True):
                if not path.is_file():
                    raise ConfigError(f"{what}: file not found: {path}")
        sock = bind(self.listen)
        host, port = sock.getsockname()[:2]
        self.port = port
        config = uvicorn.Config(
            create_app(self.ctx),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",  # no WebSocket route; skips importing uvicorn's websockets protocol (start-up)
            timeout_graceful_shutdown=max(1, round(self.shutdown_timeout_s)),
            ssl_certfile=None if self.tls is None else str(self.tls[0]),
            ssl_keyfile=None if self.tls is None else str(self.tls[1]),
        )
        try:
            config.load()
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            sock.close()
            raise ConfigError(f"admin.tls_cert/tls_key: cannot load: {err}") from None
        server = _Server(config)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            started = asyncio.ensure_future(server.started_event.wait())
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if not server.started:
                if task.done():
                    try:
                        task.result()  # raises what uvicorn raised
                    except SystemExit:  # uvicorn exits on start-up failures; never let it end the process
                        raise RuntimeError("the HTTP server could not start") from None
                raise RuntimeError("the HTTP server stopped during start-up")
            shown = f"[{host}]" if ":" in host else host
            scheme = "https" if self.tls is not None else "http"
            self.ctx.register_endpoint("http", f"{scheme}://{shown}:{port}")
            ready()
            await asyncio.wait({task})
            task.result()
            raise RuntimeError("the HTTP server stopped")
        finally:
            server.should_exit = True
            if not task.done():
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(self.shutdown_timeout_s + 1.0):
                        await asyncio.shield(task)
            if not task.done():
                task.cancel()
            sock.close()
