"""Loads the capture files of tests/captures/ (format: tests/captures/README.md)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1] / "captures"
ORIGINS = {"device", "software"}


@dataclass(frozen=True, slots=True)
class Capture:
    file: str
    source: dict[str, Any]
    name: str
    protocol: str
    kind: str
    text: str  # the bytes exactly as published
    stated: dict[str, Any]
    entry: dict[str, Any]

    @property
    def ascii_frame(self) -> bytes:
        """A YD/T1363 ASCII frame (`~ … \\r`) as bytes."""
        return self.text.encode("ascii")

    @property
    def hex_bytes(self) -> bytes:
        """A binary frame published as hex (any of ' ', ':' between bytes)."""
        return bytes.fromhex(self.text.replace(":", " "))


def load(file: str) -> list[Capture]:
    data = tomllib.loads((HERE / file).read_text(encoding="utf-8"))
    source = data["source"]
    return [
        Capture(
            file,
            source,
            f["name"],
            f["protocol"],
            f["kind"],
            f["bytes"],
            dict(f.get("stated", {})),
            f,
        )
        for f in data["frame"]
    ]


def all_files() -> list[str]:
    return sorted(p.name for p in HERE.glob("*.toml"))


def by_name(file: str, name: str) -> Capture:
    for capture in load(file):
        if capture.name == name:
            return capture
    raise KeyError(f"{file}: no frame named {name!r}")
