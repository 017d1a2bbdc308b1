"""Loading any image a user might have as an RGB picture, or a short reason why not.

Training, evaluation, serving and the web app all call `load_image`, so a file the
split stage accepted is read the same way everywhere.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Image files the pipeline looks at; anything else in a class folder is reported, not read.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Default pixel limit (width * height). 40 MP covers any camera photo; a decompression
# bomb declares far more. params.yaml `split.max_pixels` overrides it for the pipeline.
DEFAULT_MAX_PIXELS = 40_000_000


class BadImageError(ValueError):
    """The bytes are not a usable image; the message says why in a few words."""


def load_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file path or raw bytes into an 8-bit RGB image, upright per its EXIF tag."""
    if isinstance(source, bytes | bytearray):
        if not source:
            raise BadImageError("empty file (0 bytes)")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        try:
            if path.stat().st_size == 0:
                raise BadImageError("empty file (0 bytes)")
            stream = io.BytesIO(path.read_bytes())
        except OSError as error:
            raise BadImageError(f"cannot read file: {error.strerror or error}") from error
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; PIL's own bomb check would fire first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels:,}")
            if width < 1 or height < 1:
                raise BadImageError(f"image has no pixels ({width}x{height})")
            image.load()  # decodes everything: truncated and corrupt data fail here
            image = ImageOps.exif_transpose(image)
    except BadImageError:
        raise
    except UnidentifiedImageError as error:
        raise BadImageError("not an image (unknown or unsupported format)") from error
    except Image.DecompressionBombError as error:
        raise BadImageError(f"image too large: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImageError(f"corrupt or truncated image: {error}") from error
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without clipping 16-bit data or blackening transparency."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's own convert clips 16-bit values at 255; rescale to the image's bit depth instead.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F" and array.max() <= 1.0:
            top = 1.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, as a browser shows them on a light page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def list_image_files(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """All files below `folder`, following links once: (candidates, [(path, reason) skipped])."""
    candidates: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen_dirs: set[Path] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            real = current.resolve(strict=True)
        except (OSError, RuntimeError):
            skipped.append((current, "broken or looping link"))
            continue
        if real in seen_dirs:
            skipped.append((current, "folder already visited (link loop)"))
            continue
        seen_dirs.add(real)
        try:
            entries = sorted(current.iterdir(), key=lambda p: p.name)
        except OSError as error:
            skipped.append((current, f"cannot list folder: {error.strerror or error}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(entry)
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                candidates.append(entry)
            else:
                skipped.append((entry, f"not an image file type ({entry.suffix or 'no suffix'})"))
    return sorted(candidates), skipped
