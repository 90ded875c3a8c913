"""Bearer tokens with roles, stored hashed.

A token looks like `bmsg_<id>_<secret>`: `id` is public (it names the token in the audit log),
`secret` is 32 random bytes in URL-safe base64 and is never stored: the file keeps its SHA-256.
With that much entropy a plain hash is enough; a slow KDF would only slow every request.

Roles are ordered: viewer < operator < admin < factory. A role may do everything the lower ones may.
This module never logs a secret and never compares secrets with `==`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.ops.security.throttle import AuthThrottle

TOKEN_PREFIX = "bmsg"


class Role(enum.IntEnum):
    VIEWER = 0  # read data
    OPERATOR = 1  # read parameters, sync clocks, download history
    ADMIN = 2  # write parameters and configuration, control MOS, firmware
    FACTORY = 3  # cell count, calibration and other factory entries

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            allowed = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"unknown role {name!r}; allowed: {allowed}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class AuthError(Exception):
    """401: no token, malformed, unknown or revoked."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    role: str
    sha256: str
    created_at: float
    label: str = ""
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request."""

    token_id: str
    role: Role
    label: str = ""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """The token file (JSON). Reads it once and again whenever its modification time changes, so
    tokens created by `bms-gateway token create` work without a restart. `throttle` counts the
    failed authentications per client address of everyone checking tokens against this file."""

    def __init__(self, path: Path, *, throttle: AuthThrottle | None = None) -> None:
        self.path = path
        self.throttle = throttle if throttle is not None else AuthThrottle()
        self._mtime: float | None = None
        self._records: dict[str, TokenRecord] = {}

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._records, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        data = json.loads(self.path.read_text(encoding="utf-8"))
        self._records = {r["id"]: TokenRecord(**r) for r in data.get("tokens", [])}
        self._mtime = mtime

    def records(self) -> list[TokenRecord]:
        self._load()
        return sorted(self._records.values(), key=lambda r: r.created_at)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"tokens": [asdict(r) for r in self._records.values()]}, indent=2)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._mtime = None

    def create(self, role: Role, label: str = "") -> tuple[TokenRecord, str]:
        """Create a token; returns its record and the full token string (shown once)."""
        self._load()
        token_id = secrets.token_hex(4)
        while token_id in self._records:
            token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        rec = TokenRecord(token_id, role.label, _hash(secret), time.time(), label)
        self._records[token_id] = rec
        self._save()
        return rec, f"{TOKEN_PREFIX}_{token_id}_{secret}"

    def revoke(self, token_id: str) -> bool:
        self._load()
        rec = self._records.get(token_id)
        if rec is None:
            return False
        self._records[token_id] = TokenRecord(rec.id, rec.role, rec.sha256, rec.created_at, rec.label, True)
        self._save()
        return True

    def authenticate(self, token: str) -> Principal:
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != TOKEN_PREFIX or not token_id or not secret:
            raise AuthError("malformed token (expected bmsg_<id>_<secret>)")
        self._load()
        rec = self._records.get(token_id)
        if rec is None or not hmac.compare_digest(rec.sha256, _hash(secret)):
            raise AuthError("unknown token")
        if rec.revoked:
            raise AuthError("token revoked")
        return Principal(rec.id, Role.parse(rec.role), rec.label)


class RateLimiter:
    """A sliding one-minute window per token id."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        q = self._hits.setdefault(key, deque())
        while q and now - q[0] >= 60.0:
            q.popleft()
        if len(q) >= self.per_minute:
            return False
        q.append(now)
        return True
