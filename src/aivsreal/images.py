"""Loading any image a user might have as an RGB picture, or a short reason why not.

Training, evaluation, serving and the web app all call `load_image`, so a file the
split stage accepted is read the same way everywhere.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Image files the pipeline looks at; anything else in a class folder is reported, not read.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Default pixel limit (width * height). 40 MP covers any camera photo; a decompression
# bomb declares far more. params.yaml `split.max_pixels` overrides it for the pipeline.
DEFAULT_MAX_PIXELS = 40_000_000


SOURCE_FORMAT = "aivsreal_source_format"  # key in a decoded image's `info`: the file format it came from


class BadImageError(ValueError):
    """The bytes are not a usable image; the message says why in a few words."""


def max_file_bytes(max_pixels: int) -> int:
    """The largest file that can hold an image within the pixel limit; bigger ones are not read into memory.

    16 bytes per pixel is more than any uncompressed layout Pillow reads (4 channels of 32 bits);
    64 MiB on top leaves room for metadata (ICC profiles, EXIF, XMP, thumbnails).
    """
    return 16 * max_pixels + 64 * 2**20


def load_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file path or raw bytes into an 8-bit RGB image, upright per its EXIF tag."""
    if isinstance(source, bytes | bytearray):
        if not source:
            raise BadImageError("empty file (0 bytes)")
        if len(source) > max_file_bytes(max_pixels):
            raise BadImageError(_file_too_large(len(source), max_pixels))
        data = bytes(source)
    else:
        data = read_image_file(source, max_pixels)
    return decode_image(data, max_pixels)


def read_image_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The bytes of a regular file small enough to be an image, or BadImageError saying what to do."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer (it is turned away below).
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise BadImageError(_cannot_open(path, error)) from error
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            # A pipe, a device (a link to /dev/zero reads forever) or a folder named like an image.
            raise BadImageError(
                f"not a regular file ({_file_type(info.st_mode)}): put the image file itself there, or remove it"
            )
        if info.st_size == 0:
            raise BadImageError("empty file (0 bytes)")
        limit = max_file_bytes(max_pixels)
        if info.st_size > limit:
            raise BadImageError(_file_too_large(info.st_size, max_pixels))
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)  # +1: a file that grew since fstat is still caught
    except OSError as error:
        raise BadImageError(f"cannot read file: {error.strerror or error}") from error
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise BadImageError(_file_too_large(len(data), max_pixels))
    return data


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode the bytes of an image file into 8-bit RGB, upright per its EXIF tag."""
    if not data:
        raise BadImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; PIL's own bomb warning would fire first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # A broken EXIF block only loses the orientation; the pixels are fine (one warning per file is noise).
            warnings.filterwarnings("ignore", message="(?i).*corrupt exif", category=UserWarning)
            image = Image.open(io.BytesIO(data))
            file_format = image.format or ""
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels:,}")
            if width < 1 or height < 1:
                raise BadImageError(f"image has no pixels ({width}x{height})")
            image.load()  # decodes everything (the first frame of an animation): truncated data fails here
            image = ImageOps.exif_transpose(image)
    except BadImageError:
        raise
    except UnidentifiedImageError as error:
        raise BadImageError("not an image (unknown or unsupported format)") from error
    except Image.DecompressionBombError as error:
        raise BadImageError(_pillow_bomb_limit(error, max_pixels)) from error
    except ValueError as error:
        if "decompressed data too large" in str(error).lower():
            # A compressed text or ICC chunk that inflates past Pillow's limit: a bomb in the metadata.
            raise BadImageError(f"image metadata too large (possibly a decompression bomb): {error}") from error
        raise BadImageError(f"corrupt or truncated image: {error}") from error
    except (OSError, SyntaxError, EOFError) as error:
        raise BadImageError(f"corrupt or truncated image: {error}") from error
    except Exception as error:
        # Pillow's format plugins have raised struct.error, IndexError, TypeError... on crafted
        # files; whatever the type, one hostile file must not stop a batch.
        kind = type(error).__qualname__
        if type(error).__module__ != "builtins":
            kind = f"{type(error).__module__}.{kind}"  # struct.error, not just "error"
        raise BadImageError(f"corrupt image ({kind}: {error})") from error
    rgb = to_rgb(image)
    rgb.info[SOURCE_FORMAT] = file_format  # JPEG, WEBP, PNG...: input_range.py warns about re-compressed files
    return rgb


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
    """All files below `folder`, following links once: (candidates, [(path, reason) skipped]).

    Every entry below `folder` is either a candidate or skipped with a reason (hidden ones
    included), so what a caller reports adds up to what is on disk.
    """
    candidates: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen_dirs: set[Path] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            real = current.resolve(strict=True)
        except (OSError, RuntimeError):
            skipped.append((current, "broken or looping link: fix or remove it"))
            continue
        if real in seen_dirs:
            skipped.append((current, "link to a folder already scanned (link loop): its images are listed once"))
            continue
        seen_dirs.add(real)
        try:
            entries = sorted(current.iterdir(), key=lambda p: p.name)
        except OSError as error:
            skipped.append((current, f"cannot list folder: {_advice(error, 'make it readable (chmod a+rx)')}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                kind = "folder" if _is_dir(entry) else "file"
                skipped.append((entry, f"hidden {kind} (name starts with '.'): not read; rename it to include it"))
                continue
            try:
                entry.lstat()
            except OSError as error:  # listed but not reachable: a folder with read but no search permission
                skipped.append((entry, f"cannot read file: {_advice(error, 'make its folder searchable (chmod a+x)')}"))
                continue
            link_problem = _link_problem(entry)
            if link_problem:
                skipped.append((entry, link_problem))
            elif _is_dir(entry):
                stack.append(entry)
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                candidates.append(entry)
            else:
                skipped.append((entry, f"not an image file type ({entry.suffix or 'no suffix'})"))
    return sorted(candidates), skipped


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _link_problem(path: Path) -> str | None:
    """Why a symbolic link cannot be followed (loop, missing target), or None if it can (or is no link)."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return f"broken symbolic link (its target {os.readlink(path)!r} does not exist): fix or remove the link"
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13 reports a loop this way
        return "symbolic link loop (the link leads back to itself): fix or remove the link"
    return None


def _cannot_open(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop (the link leads back to itself): fix or remove the link"
    if error.errno == errno.ENOENT and path.is_symlink():
        return f"broken symbolic link (its target {os.readlink(path)!r} does not exist): fix or remove the link"
    return f"cannot read file: {_advice(error, 'make it readable (chmod a+r)')}"


def _advice(error: OSError, fix_permission: str) -> str:
    """The error in words; for a permission error, what to do about it."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {fix_permission} or remove it"
    return str(error.strerror or error)


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def _file_too_large(size: int, max_pixels: int) -> str:
    return (
        f"file too large for an image: {size:,} bytes, more than any image within the limit of "
        f"{max_pixels:,} pixels takes ({max_file_bytes(max_pixels):,} bytes)"
    )


def _pillow_bomb_limit(error: Image.DecompressionBombError, max_pixels: int) -> str:
    """Pillow refuses more than 2 * Image.MAX_IMAGE_PIXELS before we see the size: name our limit if it is lower."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels than allowed"
    pillow_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 0
    if max_pixels <= pillow_limit:
        return f"image too large: {pixels} exceeds the limit of {max_pixels:,}"
    return f"image too large: {pixels} exceeds Pillow's decompression-bomb limit of {pillow_limit:,}"
