"""Service-layer pieces without a bus: admin priority, report outcomes, capacity warnings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.ops.admin.service import (
    AdminBus,
    ItemReport,
    Outcome,
    PackReport,
    _capacity_warnings,
    batch_json,
)
from gateway.south.drivers.base import Priority
from protocol.bms.base import Frame


class RecordingOwner:
    def __init__(self) -> None:
        self.priorities: list[Priority] = []

    async def transact(self, request: bytes, match: Callable[[Frame], bool], **kw: Any) -> Frame | None:
        self.priorities.append(kw["priority"])
        return None


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        (Priority.BACKGROUND, Priority.ADMIN),
        (Priority.POLL, Priority.ADMIN),
        (Priority.ADMIN, Priority.ADMIN),
        (Priority.FIRMWARE, Priority.FIRMWARE),
    ],
)
async def test_every_request_of_an_admin_action_goes_with_admin_priority(
    asked: Priority, sent: Priority
) -> None:
    owner = RecordingOwner()
    bus = AdminBus(owner)
    await bus.transact(b"x", lambda f: True, priority=asked)
    assert owner.priorities == [sent] and bus.requests == 1


def report(*outcomes: Outcome) -> PackReport:
    rep = PackReport("b/1", items=[ItemReport(f"p{i}", 1.0, outcome=o) for i, o in enumerate(outcomes)])
    rep.summarize()
    return rep


def test_pack_and_batch_outcomes() -> None:
    assert (report(Outcome.VERIFIED, Outcome.WRITTEN).outcome, report(Outcome.VERIFIED).written) == (
        "ok",
        True,
    )
    assert report(Outcome.VERIFIED, Outcome.FAILED).outcome == "partial"
    assert report(Outcome.FAILED).outcome == "failed" and not report(Outcome.FAILED).written
    assert report(Outcome.VERIFIED, Outcome.MISMATCH).outcome == "mismatch"
    assert report(Outcome.WOULD_CHANGE, Outcome.UNCHANGED).outcome == "dry_run"
    ok, failed = report(Outcome.VERIFIED), report(Outcome.FAILED)
    assert batch_json("a", [ok, ok])["outcome"] == "ok"
    doc = batch_json("a", [ok, failed])
    assert doc["outcome"] == "partial" and doc["written"] == ["b/1"] and doc["not_written"] == ["b/1"]
    assert batch_json("a", [failed])["outcome"] == "failed"
    assert batch_json("a", [report(Outcome.WOULD_CHANGE)], dry_run=True)["outcome"] == "dry_run"


def test_capacity_warning_when_full_and_nominal_disagree() -> None:
    assert _capacity_warnings(200.0, 100.0) and "manual 4.5.1" in _capacity_warnings(200.0, 100.0)[0]
    assert _capacity_warnings(100.5, 100.0) == []
    assert _capacity_warnings(None, 100.0) == [] and _capacity_warnings(100.0, None) == []
