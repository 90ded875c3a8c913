"""The request guard: authentication before a request body is read, and a cap on every body.

FastAPI reads (and parses) a JSON body before it runs a route's dependencies, so without this
guard an unauthenticated client could make the gateway hold any body in memory before the 401.
This ASGI middleware runs first, for every request that may carry a body (POST, PUT, PATCH,
DELETE, or any request with a Content-Length or chunked body):

1. the client address must not be in its failed-authentication backoff (429, `throttle`), and the
   bearer token must be valid (401, counted as a failure of the address). Every route that takes
   a body is an admin route: a request that fails here is handed to the application with an empty
   body, so the route's own dependency answers it (the 401 naming the role the route needs, the
   429 with Retry-After); should the application answer anything else, the guard answers 401;
3. the body must fit the route's cap: `[admin] max_body_kib` by default, the parameter import
   and the firmware image upload keep their own larger caps. A declared Content-Length above the
   cap gets 413 at once; a chunked body is counted as it arrives and gets 413 at the first byte
   over the cap. In both cases the rest is never read (`Connection: close` ends the request).

The body (at most the cap) is then handed to the application unchanged. This module never reads
more than a cap of any body and never lets a request through that failed a check.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.ops.security.auth import AuthError, TokenStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestGuard:
    """ASGI middleware; `tokens()` gives the token store (None: no admin API, nothing to check),
    `caps` the (path regex, bytes) of routes with their own cap, `default_cap` every other body's."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Callable[[], TokenStore | None],
        default_cap: int,
        caps: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.app = app
        self._tokens = tokens
        self.default_cap = default_cap
        self.caps = tuple((re.compile(pattern), cap) for pattern, cap in caps)
        self.refused = {401: 0, 413: 0, 429: 0}

    def cap_for(self, path: str) -> int:
        for pattern, cap in self.caps:
            if pattern.fullmatch(path):
                return cap
        return self.default_cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length_header = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        has_body = chunked or (length_header not in (None, "0")) or scope["method"] in BODY_METHODS
        if not has_body:
            await self.app(scope, receive, send)
            return
        if not await self._authenticated(scope, headers):
            await self.app(scope, _replay(b"", receive), _refusal_only(send, self))
            return
        cap = self.cap_for(scope["path"])
        too_large: tuple[int, str, dict[str, str]] = (
            413,
            f"request body larger than the limit of {cap} bytes for {scope['path']}",
            {},
        )
        if length_header is not None:
            try:
                length = int(length_header)
            except ValueError:
                await self._refuse(send, 400, "Content-Length is not a number", {})
                return
            if length > cap:
                await self._refuse(send, *too_large)
                return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nothing to answer
            body += message.get("body", b"")
            if len(body) > cap:
                await self._refuse(send, *too_large)
                return
            more = bool(message.get("more_body", False))
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _authenticated(self, scope: Scope, headers: dict[str, str]) -> bool:
        """True when the request may send its body: not throttled, and a valid token (the failure
        itself is counted by the route's dependency, which sees the same token)."""
        tokens = self._tokens()
        if tokens is None:
            return True
        client = scope["client"][0] if scope.get("client") else "unknown"
        if tokens.throttle.retry_after_s(client) > 0:
            return False
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return False
        try:
            await asyncio.to_thread(tokens.authenticate, credentials.strip())  # a file stat: off the loop
        except AuthError:
            return False
        return True

    async def _refuse(self, send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1
        payload = json.dumps({"detail": detail}).encode()
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),  # the unread rest of the body ends with the connection
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload, "more_body": False})


def _refusal_only(send: Send, guard: RequestGuard) -> Send:
    """The application's answer to a request that failed authentication, if it is a refusal
    (401, 429, or 404/405 for a route that does not exist); anything else becomes a plain 401."""
    passing = True

    async def guarded(message: Message) -> None:
        nonlocal passing
        if message["type"] == "http.response.start":
            status = int(message["status"])
            passing = status in (401, 404, 405, 429)
            if passing:
                guard.refused[status] = guard.refused.get(status, 0) + 1
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {
                    **message,
                    "headers": [*headers, (b"connection", b"close")],
                }  # the body stays unread
            else:
                await guard._refuse(
                    send, 401, "this endpoint needs a bearer token", {"WWW-Authenticate": "Bearer"}
                )
                return
        if passing:
            await send(message)

    return guarded


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives the buffered body once, then passes on to the server's (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
