"""The OpenAPI document says every status a route can answer, with the body it answers with.

FastAPI documents a route's 200 and, for routes with parameters, a 422 in its own validation
shape. Our routes answer more: the request guard's 401/413/429, a role's 403, the services' 400,
404, 409, 422 and 504 (`gateway.ops.security.errors`, `gateway.ops.history.errors`), all with the
body `{"detail": ..., "errors": [...]}`; and some answer files or event streams instead of JSON.
`document(app)` makes the generated document say so, from what each route is:

- a bearer-token route: 401 and 429 (throttle, rate limit); 403 when it needs more than viewer;
- a route with a body: 400 (unreadable body), 413 (over its cap), 422;
- a route with parameters: 422; with a pack, a bus or a job to look up: 404;
- a route that acts on packs or jobs (`ACTS_ON`): 409 (refused by the pack's or job's state,
  or a pack that stayed silent on the admin channel); a records route on packs also 504
  (a pack that stayed silent during a download or a history read);
- `EXTRA` adds what a single route answers beyond its kind (`/readyz` 503, with the body of its
  200: the services' states);
- `CONTENT` replaces the 200 media types of the routes that answer files or event streams.

The schemathesis test (tests/gateway/north/http/test_conformance.py) holds the document to this:
a status or body the document does not declare fails it. This module never changes a route's
behaviour, only its description.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
            ],
            "description": "what was refused and why (a list of field errors for a malformed request)",
        },
        "errors": {
            "type": "array",
            "items": {"type": "object"},
            "description": "each refused value: parameter, value, allowed range, message",
        },
    },
    "required": ["detail"],
}

_DESCRIPTIONS = {
    400: "The request body cannot be read (not JSON, wrong encoding) or the request is malformed",
    401: "No valid bearer token",
    403: "The token's role is below the role this route needs",
    404: "No such pack, bus, family or job",
    409: "Refused by the state of the pack or job (busy, unsupported, or a pack that did not answer)",
    413: "The request body is larger than this route's cap",
    422: "A value is not acceptable (names the parameter, the value and the allowed range)",
    429: "Too many requests for this token, or too many failed authentications from this address",
    503: "Not ready yet",
    504: "The pack did not answer",
}

_FILE = {"schema": {"type": "string", "format": "binary"}}
_TEXT = {"schema": {"type": "string"}}
_TABLE = {"text/csv": _TEXT, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": _FILE}
_EVENTS = {
    "text/event-stream": {"schema": {"description": "server-sent events, one JSON document per data line"}}
}

CONTENT: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/history/export"): _TABLE,
    ("GET", "/api/recording/export"): _TABLE,
    ("GET", "/api/packs/{bus}/{address}/parameters/export"): {
        "application/json": {"schema": {"type": "object"}},
        "text/csv": _TEXT,
        "application/xml": _TEXT,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": _FILE,
    },
    ("GET", "/api/history/jobs/events"): _EVENTS,
    ("GET", "/api/stream"): _EVENTS,
    ("GET", "/api/firmware/jobs/{job_id}/events"): _EVENTS,
    ("GET", "/metrics"): {"text/plain": _TEXT},
}

EXTRA: dict[tuple[str, str], set[int]] = {
    ("GET", "/readyz"): {503},
}
SAME_BODY_AS_200: frozenset[tuple[str, str, int]] = frozenset({("GET", "/readyz", 503)})

# routes that act on packs or jobs named in the body or query (not only in the path)
ACTS_ON: frozenset[tuple[str, str]] = frozenset(
    {
        ("PUT", "/api/parameters"),
        ("POST", "/api/parameters/load-origin"),
        ("GET", "/api/parameters"),
        ("GET", "/api/clock"),
        ("POST", "/api/clock/sync"),
        ("POST", "/api/history/pull"),
        ("POST", "/api/history/stop"),
        ("GET", "/api/history/jobs/events"),
        ("POST", "/api/firmware/jobs"),
        ("POST", "/api/firmware/images"),
        ("PUT", "/api/gateway/protocols"),
    }
)
_LOOKUP_PARAMS = {"bus", "address", "job_id", "family", "packs", "token_id"}


def role_of(route: APIRoute) -> Any:
    """The role a route's bearer dependency needs (None: an open route)."""
    for dep in _dependencies(route.dependant):
        role = getattr(dep.call, "required_role", None)
        if role is not None:
            return role
    return None


def _dependencies(dependant: Any) -> Iterator[Any]:
    for dep in dependant.dependencies:
        yield dep
        yield from _dependencies(dep)


def statuses(method: str, path: str, op: dict[str, Any], role: Any, tags: Sequence[str]) -> set[int]:
    """The error statuses an operation can answer besides its success (see the module's rules)."""
    out: set[int] = set()
    if role is not None:
        out |= {401, 429}
        if int(role) > 0:
            out.add(403)
    has_body = "requestBody" in op
    if has_body:
        out |= {400, 413, 422}
    params = {p["name"] for p in op.get("parameters", []) if p.get("in") in ("path", "query")}
    if params:
        out.add(422)
    acts = (method, path) in ACTS_ON or bool(params & {"bus", "address", "job_id"})
    if params & _LOOKUP_PARAMS or acts:
        out.add(404)
    if acts:
        out.add(409)
        if "records" in tags:
            out.add(504)
    out |= EXTRA.get((method, path), set())
    return out


def document(app: FastAPI, routes: Iterable[Any]) -> None:
    """Replace `app.openapi` with the generator that documents every status and body; `routes` are
    the application's routes (its own and those of the routers it includes)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    roles = {(m, r.path): role_of(r) for r in routes if isinstance(r, APIRoute) for m in r.methods or ()}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = ERROR_SCHEMA
        components.setdefault("ValidationError", _VALIDATION_ERROR)
        for path, ops in schema.get("paths", {}).items():
            for method, op in ops.items():
                key = (method.upper(), path)
                responses = op.setdefault("responses", {})
                content = CONTENT.get(key)
                if content is not None:
                    responses.setdefault("200", {"description": "Successful Response"})["content"] = content
                for status in sorted(statuses(*key, op, roles.get(key), op.get("tags", []))):
                    if (*key, status) in SAME_BODY_AS_200:
                        responses[str(status)] = {**responses["200"], "description": _DESCRIPTIONS[status]}
                        continue
                    responses[str(status)] = {
                        "description": _DESCRIPTIONS.get(status, "Error"),
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_VALIDATION_ERROR: dict[str, Any] = {
    "title": "ValidationError",
    "type": "object",
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
    "required": ["loc", "msg", "type"],
}
