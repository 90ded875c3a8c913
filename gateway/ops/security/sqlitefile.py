"""One SQLite file in WAL mode, shared by threads behind one lock (the audit log, the history
records and the real-time recording each keep one).

Synchronous and short: callers on the event loop run the methods of a subclass in a thread. This
module only opens and closes the file; it never knows a table.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import ClassVar


class SqliteFile:
    """Opens `path` (its directory created; ":memory:" kept in memory) and applies `SCHEMA`."""

    SCHEMA: ClassVar[str] = ""

    def __init__(self, path: Path | str) -> None:
        p = Path(path)
        if str(p) != ":memory:":
            p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(p), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(self.SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()
