"""Helpers shared by the tests, imported one way: `from tests.support.<module> import ...`.

`REPO` is the repository root (for the docs, deploy files and the source tree the tests read).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
