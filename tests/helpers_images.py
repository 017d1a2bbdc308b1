"""Small real images made on the fly, shared by the unit tests (no files checked in)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def random_image(size: tuple[int, int] = (16, 16), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Noise image of `size` (width, height); a different seed gives different pixels."""
    rng = np.random.default_rng(seed)
    width, height = size
    channels = {"RGB": 3, "L": 1}[mode]
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode=mode)


def encode(image: Image.Image, fmt: str = "PNG", **save_kwargs) -> bytes:
    """The bytes of `image` saved as `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def write_image(path: Path, size: tuple[int, int] = (8, 8), seed: int = 0, fmt: str = "PNG") -> Path:
    """Write a distinct (per seed) noise image to `path`, creating folders as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(random_image(size, seed), fmt))
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
