"""The HTTP service (read-only API here; the admin and metrics adapters add their routers).

`create_app(ctx)` -> FastAPI application; `HttpService(ctx, listen)` serves it with uvicorn inside
the gateway's event loop. Extra routers: append to `ctx.http_routers` before the service starts.
"""

from gateway.north.http.app import create_app, gateway_status
from gateway.north.http.service import HttpService, bind

__all__ = ["HttpService", "bind", "create_app", "gateway_status"]
