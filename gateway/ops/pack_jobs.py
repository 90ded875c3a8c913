"""Long jobs on one pack are exclusive: a history download and a firmware upgrade never run on the
same pack at once (issue 17: a flash started during a download and the download failed at record
257). Each long-job service registers a function that names its job running on a pack (or None);
before a job starts, the others are asked, and a refusal (409) names the running job.

It must never start, stop or wait for a job: it only answers "what runs on this pack".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.core.model import PackKey

RunningOn = Callable[[PackKey], str | None]
EXTRAS_KEY = "pack_jobs"


class PackJobs:
    """The long-job services of one gateway, by name ("history", "firmware")."""

    def __init__(self) -> None:
        self._services: dict[str, RunningOn] = {}

    def register(self, name: str, running_on: RunningOn) -> None:
        self._services[name] = running_on

    def running(self, key: PackKey, *, besides: str) -> str | None:
        """The description of a job of another service running on the pack, or None."""
        for name, running_on in self._services.items():
            if name == besides:
                continue
            what = running_on(key)
            if what is not None:
                return what
        return None


def pack_jobs(extras: dict[str, Any]) -> PackJobs:
    """The gateway's registry, created on first use in the application context's `extras`."""
    found = extras.get(EXTRAS_KEY)
    if not isinstance(found, PackJobs):
        found = extras[EXTRAS_KEY] = PackJobs()
    return found
