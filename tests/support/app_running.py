"""The whole gateway in this test's event loop (`run_app`), as a context: the served `AppContext`
once every service is ready; stopped (and awaited) when the context ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.app.config import Config
from gateway.app.context import AppContext
from gateway.app.wiring import run_app


@contextlib.asynccontextmanager
async def app_running(config: Config, ready_s: float = 20.0) -> AsyncIterator[AppContext]:
    stop = asyncio.Event()
    ready: asyncio.Future[AppContext] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(
        run_app(config, None, install_signals=False, stop=stop, on_all_ready=ready.set_result)
    )
    try:
        yield await asyncio.wait_for(asyncio.shield(ready), ready_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
