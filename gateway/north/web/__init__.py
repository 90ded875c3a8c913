"""The web UI (docs/ui.md): server-rendered pages at `/` with a small amount of our own JavaScript.

The pages are a client of the HTTP API: every value they show and every action they take goes
through `/api/...` with the user's bearer token, so roles, validation and the audit log are the
API's. `install(ctx)` adds the router that serves pages, static files and the translation
catalogues; it is imported only when `[http] ui = true`.

Nothing here reads the model or talks to a bus.
"""

from __future__ import annotations

from typing import Any


def install(ctx: Any) -> None:
    """Mount the UI's router on the HTTP application (added before the HTTP service starts)."""
    from gateway.north.web.routes import web_router

    ctx.http_routers.append(web_router(ctx))
