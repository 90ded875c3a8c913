"""Progress for CLI operations that take more than a second (issue 17): PACE parameter reads and
writes take 8-15 s, history downloads and firmware upgrades minutes.

Human mode (no `--json`): a rich spinner (`busy`) or progress bar (`Reporter`) on **stderr**, only
when stderr is a terminal, so stdout keeps exactly the tables a script or a test reads. `--json`:
never a spinner; `Reporter` writes one JSON document per update on stdout (JSON lines).

It must never decide an exit code or print a result: callers do that.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from rich.console import Console


def _stderr() -> Console:
    return Console(stderr=True)


@contextlib.contextmanager
def busy(args: argparse.Namespace, text: str) -> Iterator[None]:
    """A spinner with `text` on stderr while the block runs (human mode on a terminal only)."""
    console = _stderr()
    if getattr(args, "json", False) or not console.is_terminal:
        yield
        return
    with console.status(text, spinner="dots"):
        yield


class Reporter:
    """Progress of long jobs: a bar per pack on stderr (human mode, terminal), JSON lines with --json."""

    def __init__(self, args: argparse.Namespace, title: str) -> None:
        self.json = bool(getattr(args, "json", False))
        self.title = title
        self._console = _stderr()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Reporter:
        if not self.json and self._console.is_terminal:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeRemainingColumn(),
                console=self._console,
            )
            self._progress.__enter__()
        return self

    def update(self, key: str, done: int, total: int | None, doc: dict[str, Any], note: str = "") -> None:
        if self.json:
            print(json.dumps(doc), flush=True)
            return
        if self._progress is None:
            return
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = self._progress.add_task(f"{self.title} {key}", total=total)
        self._progress.update(
            task, completed=done, total=total, description=f"{self.title} {key} {note}".rstrip()
        )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
