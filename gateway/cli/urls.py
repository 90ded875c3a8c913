"""The running gateway's base URL for the commands that talk to it (`admin`, `watch`, `scan --gateway`):
from the option, else `$BMS_GATEWAY_URL`, else the local default, checked before any request so a
malformed one is a usage error naming it (exit 2) instead of a traceback or "cannot reach"."""

from __future__ import annotations

import os

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
ENV = "BMS_GATEWAY_URL"


class BadUrl(ValueError):
    """A gateway URL that cannot be used; the message is one line naming it and where it came from."""


def gateway_url(given: str | None, option: str = "--url") -> str:
    """The base URL (without a trailing slash) from `given` (the `option` typed), `$BMS_GATEWAY_URL`
    or the default; BadUrl when it is not an http:// or https:// URL with a host."""
    env = os.environ.get(ENV)
    if given:
        text, source = given, option
    elif env:
        text, source = env, f"${ENV}"
    else:
        return DEFAULT_URL
    text = text.strip().rstrip("/")
    try:
        url = httpx.URL(text)
        port = url.port
    except httpx.InvalidURL as err:
        raise BadUrl(f"{source} {text!r} is not a valid URL: {err}") from None
    if url.scheme not in ("http", "https"):
        raise BadUrl(
            f"{source} {text!r} needs a scheme: http:// or https:// (e.g. http://{text.split('://')[-1]})"
        )
    if not url.host:
        raise BadUrl(f"{source} {text!r} names no host (e.g. http://127.0.0.1:8080)")
    if port is not None and not 0 < port < 65536:
        raise BadUrl(f"{source} {text!r} is not a valid URL: port {port} is out of range 1..65535")
    return text
