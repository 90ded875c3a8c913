"""Failed-authentication throttling per client address, with an exponential backoff.

Defence in depth: tokens carry 256 random bits, so guessing is hopeless anyway; the throttle only
keeps a client from spending the gateway's time on it. Rules (docs/admin.md, "Failed tokens"):

- every request with a missing, malformed, unknown or revoked token counts as one failure of its
  client address (an IPv6 address counts for its /64, where one host usually has many addresses);
- the first `free_failures` failures cost nothing; each further one blocks the address for
  `base_s`, then twice as long, ... up to `max_s`;
- while an address is blocked, every request from it that needs a token gets 429 with
  Retry-After *before its token is looked at*: answering a valid token there would leave the
  block an oracle at full speed. So the real token works at all times from any other address, and
  from the blocked address again once the backoff (at most `max_s`) has passed;
- a valid token never counts and never resets the count (a user behind the same NAT as a
  guesser cannot clear the guesser's record); an address without a failure for `forget_s` starts
  afresh; at most `max_addresses` addresses are tracked (the oldest record is dropped first).

This module never sees a secret (only client addresses) and never blocks for good.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_FREE_FAILURES = 20
DEFAULT_BASE_S = 1.0
DEFAULT_MAX_S = 60.0
DEFAULT_FORGET_S = 900.0
DEFAULT_MAX_ADDRESSES = 10_000


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float
    blocked_until: float


def client_key(address: str) -> str:
    """The throttled unit of a client address: itself for IPv4, its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AuthThrottle:
    def __init__(
        self,
        *,
        free_failures: int = DEFAULT_FREE_FAILURES,
        base_s: float = DEFAULT_BASE_S,
        max_s: float = DEFAULT_MAX_S,
        forget_s: float = DEFAULT_FORGET_S,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if free_failures < 0 or base_s <= 0 or max_s < base_s or forget_s <= 0 or max_addresses < 1:
            raise ValueError("throttle: free_failures >= 0, 0 < base_s <= max_s, forget_s > 0 needed")
        self.free_failures = free_failures
        self.base_s = base_s
        self.max_s = max_s
        self.forget_s = forget_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()  # used from the event loop and from FastAPI's worker threads
        self.refused = 0  # requests answered 429 by the throttle (a metric and a test observable)
        self.failures = 0  # failed authentications counted

    def retry_after_s(self, address: str) -> float:
        """Seconds until `address` may try again (0: it may now)."""
        key = client_key(address)
        with self._lock:
            rec = self._records.get(key)
            if rec is None:
                return 0.0
            now = self._clock()
            if now - rec.last_failure >= self.forget_s:
                del self._records[key]
                return 0.0
            return max(0.0, rec.blocked_until - now)

    def check(self, address: str) -> float:
        """`retry_after_s`, counting a refusal when the address is blocked."""
        wait = self.retry_after_s(address)
        if wait > 0:
            self.refused += 1
        return wait

    def failed(self, address: str) -> float:
        """Count one failed authentication; the backoff it starts (0 while still free)."""
        key = client_key(address)
        with self._lock:
            return self._failed(key, self._clock())

    def _failed(self, key: str, now: float) -> float:
        rec = self._records.pop(key, None)
        if rec is None or now - rec.last_failure >= self.forget_s:
            rec = _Record(0, now, now)
        rec.failures += 1
        rec.last_failure = now
        self.failures += 1
        excess = rec.failures - self.free_failures
        backoff = 0.0
        if excess > 0:
            backoff = self.max_s if excess > 64 else min(self.max_s, self.base_s * math.pow(2, excess - 1))
            rec.blocked_until = now + backoff
        self._records[key] = rec  # most recent last
        while len(self._records) > self.max_addresses:
            self._records.popitem(last=False)
        return backoff

    @property
    def tracked(self) -> int:
        return len(self._records)
