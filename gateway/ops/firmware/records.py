"""What is kept of a firmware job: its state, its record (the JSON file and the API's answer), and the
folder of records. The manager reads these at start-up (a job left running becomes `interrupted`)
and for every listing; the transfer itself (`gateway.ops.firmware.job`, with the bootloader codec)
is imported only when a job runs.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class JobState(enum.StrEnum):
    PENDING = "pending"  # created, checks passed, nothing sent yet
    RUNNING = "running"  # messages are being exchanged
    DONE = "done"  # the pack runs the new version (read back)
    FAILED = "failed"  # the pack refused (wrong target, corrupt image) or the version did not change
    INTERRUPTED = "interrupted"  # pack silent or process restart: resumable
    ABORTED = "aborted"  # stopped by an operator: resumable


ACTIVE = frozenset({JobState.PENDING, JobState.RUNNING})
RESUMABLE = frozenset({JobState.INTERRUPTED, JobState.ABORTED, JobState.FAILED})


@dataclass(frozen=True, slots=True)
class JobRecord:
    """What is saved of a job (and reported by the API)."""

    id: str
    bus: str
    address: int
    family: str
    image_id: str
    target: str
    new_version: str
    old_version: str | None
    state: JobState
    phase: str  # enter | block | verify | reboot | confirm | "" (not started)
    blocks_done: int
    blocks_total: int
    pack_mode: str  # application | bootloader | unknown: where the pack was last seen
    created_at: float
    updated_at: float
    attempts: int = 0  # runs of this job (1 + resumes)
    resumed_from_block: int | None = None  # first block of the last run when the pack had some
    detail: str = ""
    history: tuple[str, ...] = field(default_factory=tuple)  # short log of what happened

    @property
    def pack(self) -> str:
        return f"{self.bus}/{self.address}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["pack"] = self.pack
        d["history"] = list(self.history)
        d["in_bootloader"] = self.pack_mode == "bootloader"
        d["percent"] = round(100.0 * self.blocks_done / self.blocks_total, 1) if self.blocks_total else 0.0
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobRecord:
        data = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        data["state"] = JobState(data["state"])
        data["history"] = tuple(data.get("history", ()))
        return cls(**data)


class JobFiles:
    """Job records as JSON files in one folder (one file per job, replaced atomically)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory / "jobs"

    def save(self, rec: JobRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".job-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(rec.as_dict(), f, indent=1)
            os.replace(tmp, self.dir / f"{rec.id}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, job_id: str) -> JobRecord | None:
        if not job_id.replace("-", "").isalnum():
            return None
        try:
            return JobRecord.from_dict(json.loads((self.dir / f"{job_id}.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def all(self) -> list[JobRecord]:
        out = []
        for path in sorted(self.dir.glob("*.json")) if self.dir.exists() else []:
            rec = self.load(path.stem)
            if rec is not None:
                out.append(rec)
        return sorted(out, key=lambda r: r.created_at)
