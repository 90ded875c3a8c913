"""Uploaded firmware images: checked before they are kept, stored by content hash.

An upload is refused unless it parses as a bms-gateway image (magic, format, header CRC, size,
payload CRC32; `protocol.bms.bootloader.parse_image`) and fits the configured size limit. The file
is kept as `<dir>/images/<id>.bgfw` where `id` is the start of its SHA-256, so uploading the same
image twice yields the same id. Target checks against a pack happen when a job is created.

This module never talks to a bus.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.bms.bootloader import FirmwareImage, ImageError, parse_image

ID_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ImageInfo:
    id: str
    family: str
    target: str
    version: str
    size: int  # payload bytes
    crc32: int
    blocks: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "target": self.target,
            "version": self.version,
            "size": self.size,
            "crc32": f"{self.crc32:08x}",
            "blocks": self.blocks,
            "sha256": self.sha256,
        }


def info_of(image: FirmwareImage, data: bytes) -> ImageInfo:
    digest = hashlib.sha256(data).hexdigest()
    h = image.header
    return ImageInfo(digest[:ID_LENGTH], h.family, h.target, h.version, h.size, h.crc32, h.blocks, digest)


class ImageStore:
    def __init__(self, directory: Path, *, max_bytes: int = 1 << 20) -> None:
        self.dir = directory / "images"
        self.max_bytes = max_bytes

    def check(self, data: bytes) -> tuple[FirmwareImage, ImageInfo]:
        """Parse and check an image file; ImageError says what is wrong."""
        if not data:
            raise ImageError("the upload is empty")
        if len(data) > self.max_bytes + 68:
            raise ImageError(f"image of {len(data)} bytes is larger than the limit of {self.max_bytes} bytes")
        image = parse_image(data)
        return image, info_of(image, data)

    def add(self, data: bytes) -> ImageInfo:
        _image, info = self.check(data)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{info.id}.bgfw"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".upload-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return info

    def load(self, image_id: str) -> tuple[FirmwareImage, ImageInfo]:
        """The stored image `image_id` (checked again: a damaged file is refused, not flashed)."""
        if not image_id.isalnum() or len(image_id) != ID_LENGTH:
            raise KeyError(f"no image {image_id!r}")
        path = self.dir / f"{image_id}.bgfw"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no image {image_id!r}") from None
        return self.check(data)

    def list(self) -> list[ImageInfo]:
        out = []
        for path in sorted(self.dir.glob("*.bgfw")) if self.dir.exists() else []:
            try:
                out.append(self.check(path.read_bytes())[1])
            except (ImageError, OSError):
                continue
        return out
