"""A data folder holding every kind of bad file we know of, and what the split must do with each.

`make_bad_data_corpus(root)` writes root/ai/ and root/real/ (class folders, as data.dir
expects) with good images of many layouts mixed with broken, hostile and odd files, and
returns a `Corpus` listing every entry it made with the expected outcome: kept, or left out
with a keyword its reason must contain. `python tests/helpers_badfiles.py` prints the counts.

Outcomes depend on one thing outside the files: whether the reading process bypasses file
permissions (root with CAP_DAC_OVERRIDE reads a chmod-000 file). `Corpus.expected(privileged)`
gives the outcome for either case; the tests run the split both ways where they can.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).parent))  # for `python tests/helpers_badfiles.py`
from helpers_images import encode, png_header_only, random_image  # noqa: E402

KEPT = "kept"
REJECTED = "rejected"
NOT_LISTED = "not listed"  # inside a folder the split cannot list, so it never sees the file

ORIENTATION = 0x0112
# Files up to this size are hashed in `snapshot`; the sparse "too large" file is compared by size and time.
SNAPSHOT_HASH_LIMIT = 16 * 2**20


@dataclass(frozen=True)
class CorpusFile:
    path: str  # relative to the corpus root, as the split shows it (undecodable bytes as \xNN escapes)
    label: str
    kind: str  # what it is, in a few words; several files can share a kind
    outcome: str  # KEPT, REJECTED or NOT_LISTED for a reader without special privileges
    reason: str = ""  # a keyword the split's reason must contain (case-insensitive), for REJECTED
    size: tuple[int, int] | None = None  # (width, height) load_image must give, for KEPT
    privileged_outcome: str | None = None  # where root's bypassing of chmod changes the outcome

    def expected(self, privileged: bool) -> str:
        return self.privileged_outcome if privileged and self.privileged_outcome else self.outcome


@dataclass
class Corpus:
    root: Path
    files: list[CorpusFile] = field(default_factory=list)
    locked: list[Path] = field(default_factory=list)  # chmod 000 paths; restore_permissions() undoes it

    def expected(self, privileged: bool) -> dict[str, CorpusFile]:
        """Every entry the split lists (kept or left out), by path."""
        return {f.path: f for f in self.files if f.expected(privileged) != NOT_LISTED}

    def kept(self, privileged: bool) -> set[str]:
        return {f.path for f in self.files if f.expected(privileged) == KEPT}

    def rejected(self, privileged: bool) -> dict[str, CorpusFile]:
        return {f.path: f for f in self.files if f.expected(privileged) == REJECTED}

    def counts(self) -> dict[str, int]:
        """Bad and good files and their kinds, as an unprivileged reader sees them."""
        bad = [f for f in self.files if f.outcome == REJECTED]
        good = [f for f in self.files if f.outcome == KEPT]
        return {
            "bad_files": len(bad),
            "bad_kinds": len({f.kind for f in bad}),
            "good_files": len(good),
            "good_kinds": len({f.kind for f in good}),
            "not_listed": sum(f.outcome == NOT_LISTED for f in self.files),
        }

    def describe(self) -> str:
        c = self.counts()
        return (
            f"{c['bad_files']} bad files of {c['bad_kinds']} kinds, "
            f"{c['good_files']} good files of {c['good_kinds']} kinds"
        )

    def restore_permissions(self) -> None:
        for path in self.locked:
            path.chmod(0o755 if path.is_dir() else 0o644)

    def add(self, relative: str, **what) -> None:
        shown = os.fsencode(relative).decode("utf-8", "backslashreplace")
        self.files.append(CorpusFile(shown, relative.split("/")[0], **what))


class _Writer:
    """Writes corpus entries and records them; every good image gets distinct pixels."""

    def __init__(self, root: Path):
        self.corpus = Corpus(root)
        self.seed = 0

    def pixels(self, size: tuple[int, int] = (16, 16)) -> Image.Image:
        self.seed += 1
        return random_image(size, seed=self.seed)

    def write(self, relative: str, data: bytes) -> Path:
        path = self.corpus.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def good(self, relative: str, kind: str, data: bytes, size: tuple[int, int]) -> Path:
        self.corpus.add(relative, kind=kind, outcome=KEPT, size=size)
        return self.write(relative, data)

    def bad(self, relative: str, kind: str, reason: str, data: bytes | None = None) -> Path:
        self.corpus.add(relative, kind=kind, outcome=REJECTED, reason=reason)
        path = self.corpus.root / relative
        if data is not None:
            self.write(relative, data)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path


def make_bad_data_corpus(root: Path) -> Corpus:
    """Write the corpus under root (root/ai, root/real, root/not-a-class) and say what the split must do."""
    w = _Writer(Path(root))
    _good_images(w)
    _broken_files(w)
    _hostile_files(w)
    _file_system_oddities(w)
    return w.corpus


def _good_images(w: _Writer) -> None:
    for label in ("ai", "real"):
        for i in range(6):
            w.good(f"{label}/plain_{i:02d}.png", "RGB PNG", encode(w.pixels(), "PNG"), (16, 16))
        for i in range(3):
            w.good(f"{label}/photo_{i:02d}.jpg", "RGB JPEG", encode(w.pixels(), "JPEG", quality=90), (16, 16))

    w.good("ai/cmyk.jpg", "CMYK JPEG", encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"), (16, 16))
    grey16 = Image.fromarray(np.asarray(w.pixels((12, 10)).convert("L")).astype(np.uint16) * 257)  # mode I;16
    w.good("ai/grey16.png", "16-bit greyscale PNG", encode(grey16, "PNG"), (12, 10))
    palette = w.pixels((12, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    w.good(
        "ai/palette_transparent.png", "palette PNG with transparency", encode(palette, "PNG", transparency=0), (12, 8)
    )
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored 32x16, shown turned clockwise: 16 wide, 32 high
    w.good("ai/rotated.jpg", "EXIF-rotated JPEG", encode(w.pixels((32, 16)), "JPEG", exif=exif), (16, 32))
    w.good("ai/animated.gif", "animated GIF (first frame)", _animation(w, "GIF"), (10, 8))
    if features.check("webp"):
        w.good("ai/animated.webp", "animated WebP (first frame)", _animation(w, "WEBP"), (10, 8))
    w.good("ai/one_pixel.png", "complete 1x1 PNG", encode(w.pixels((1, 1)), "PNG"), (1, 1))
    w.good("ai/nested/deeper/face.png", "image in a nested folder", encode(w.pixels(), "PNG"), (16, 16))

    rgba = w.pixels((9, 9)).convert("RGBA")
    rgba.putalpha(128)
    w.good("real/rgba.png", "RGBA PNG", encode(rgba, "PNG"), (9, 9))
    w.good("real/grey.png", "greyscale PNG", encode(w.pixels().convert("L"), "PNG"), (16, 16))
    w.good("real/bitmap.bmp", "BMP", encode(w.pixels(), "BMP"), (16, 16))
    w.good("real/scan.tif", "TIFF", encode(w.pixels(), "TIFF"), (16, 16))
    w.good("real/UPPER.JPEG", "upper-case suffix .JPEG", encode(w.pixels(), "JPEG"), (16, 16))
    w.good("real/really_a_jpeg.png", "JPEG data named .png", encode(w.pixels(), "JPEG"), (16, 16))
    w.good("real/bad_exif.jpg", "JPEG with a corrupt EXIF block", _corrupt_exif_jpeg(w.pixels()), (16, 16))
    w.good('real/visage é, "顔" 😀.png', "UTF-8 name: accents, emoji, comma, quotes", encode(w.pixels()), (16, 16))
    w.good("real/line\nbreak.png", "newline in the file name", encode(w.pixels(), "PNG"), (16, 16))
    original = (w.corpus.root / "real/plain_00.png").read_bytes()
    w.good("real/copy_of_plain_00.png", "exact copy in the same class (same split)", original, (16, 16))
    # A link to an image outside the class folders (datasets are often assembled from links): followed.
    w.write("not-a-class/elsewhere.png", encode(w.pixels(), "PNG"))
    w.corpus.add("real/linked.png", kind="symbolic link to an image", outcome=KEPT, size=(16, 16))
    os.symlink("../not-a-class/elsewhere.png", w.corpus.root / "real/linked.png")


def _broken_files(w: _Writer) -> None:
    w.bad("ai/empty.png", "zero bytes", "empty", b"")
    w.bad("ai/truncated.jpg", "truncated JPEG", "truncated", _half(encode(w.pixels((64, 64)), "JPEG")))
    w.bad("real/truncated.png", "truncated PNG", "truncated", _half(encode(w.pixels((64, 64)), "PNG")))
    w.bad("ai/notes.jpg", "text renamed .jpg", "not an image", b"shopping list: eggs, milk\n")
    html = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
    w.bad("real/page.png", "HTML renamed .png", "not an image", html)
    w.bad("ai/header_1x1.png", "1x1 header-only PNG (no pixel data)", "truncated", png_header_only(1, 1))
    w.bad("ai/readme.txt", "not an image file type", "not an image file type", b"notes\n")


def _hostile_files(w: _Writer) -> None:
    bomb = encode(Image.new("1", (10_000, 10_000)), "PNG", optimize=True)  # 100 MP in about 12 KB
    w.bad("ai/bomb.png", "decompression bomb (small file, huge image)", "too large", bomb)
    w.bad("real/header_20000.png", "20000x20000 header-only PNG", "too large", png_header_only(20_000, 20_000))
    w.bad("real/text_bomb.png", "PNG metadata bomb (zTXt chunk)", "too large", _text_chunk_bomb(w.pixels()))
    # Sparse: takes no disk space, but bigger than any image within the default pixel limit.
    huge = w.bad("ai/huge.png", "file larger than any image could be", "file too large")
    with open(huge, "wb") as handle:
        handle.truncate(2**30)
    same = encode(w.pixels(), "PNG")
    w.bad("ai/shared.png", "same bytes under both classes", "another class", same)
    w.bad("real/shared_too.png", "same bytes under both classes", "another class", same)


def _file_system_oddities(w: _Writer) -> None:
    root = w.corpus.root
    os.symlink("self_link.png", w.bad("ai/self_link.png", "file symlink to itself", "loop"))
    os.symlink("self_dir", w.bad("ai/self_dir", "folder symlink to itself", "loop"))
    w.write("real/sub/inside.png", encode(w.pixels(), "PNG"))
    w.corpus.add("real/sub/inside.png", kind="RGB PNG", outcome=KEPT, size=(16, 16))
    os.symlink("..", w.bad("real/sub/up", "folder symlink loop (to its parent)", "loop"))
    os.symlink("missing.png", w.bad("ai/dangling.png", "broken symlink", "broken"))
    os.symlink("/dev/zero", w.bad("ai/zero.png", "symlink to /dev/zero", "not a regular file"))
    os.mkfifo(w.bad("real/pipe.png", "named pipe named .png", "not a regular file"))
    w.bad("ai/.hidden.png", "hidden file", "hidden", encode(w.pixels(), "PNG"))
    w.bad("real/.cache", "hidden folder", "hidden")
    w.write("real/.cache/thumb.png", encode(w.pixels(), "PNG"))

    # Good images behind names that are not UTF-8 (made with bytes, as an old Latin-1 system would).
    w.bad(os.fsdecode(b"ai/face\xff.png"), "non-UTF-8 file name", "UTF-8", encode(w.pixels(), "PNG"))
    w.bad(os.fsdecode(b"real/dossier\xe9/face.png"), "file in a non-UTF-8 folder", "UTF-8", encode(w.pixels()))

    # No read permission: left out, unless the reader bypasses permissions (root), which keeps them.
    locked_file = w.write("real/unreadable.png", encode(w.pixels(), "PNG"))
    w.corpus.add(
        "real/unreadable.png",
        kind="unreadable file (chmod 000)",
        outcome=REJECTED,
        reason="permission denied",
        privileged_outcome=KEPT,
        size=(16, 16),
    )
    w.write("real/locked/inside.png", encode(w.pixels(), "PNG"))
    w.corpus.add(
        "real/locked",
        kind="unreadable folder (chmod 000)",
        outcome=REJECTED,
        reason="permission denied",
        privileged_outcome=NOT_LISTED,
    )
    w.corpus.add(
        "real/locked/inside.png",
        kind="image in an unreadable folder",
        outcome=NOT_LISTED,
        privileged_outcome=KEPT,
        size=(16, 16),
    )
    # Read but no search permission: the folder lists its names, but nothing in it can be opened.
    w.write("real/no_search/inside.png", encode(w.pixels(), "PNG"))
    w.corpus.add(
        "real/no_search/inside.png",
        kind="image in a folder without search permission (chmod 444)",
        outcome=REJECTED,
        reason="permission denied",
        privileged_outcome=KEPT,
        size=(16, 16),
    )
    for path, mode in ((locked_file, 0), (root / "real/locked", 0), (root / "real/no_search", 0o444)):
        path.chmod(mode)
        w.corpus.locked.append(path)


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _animation(w: _Writer, fmt: str) -> bytes:
    frames = [w.pixels((10, 8)) for _ in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _corrupt_exif_jpeg(image: Image.Image) -> bytes:
    """A JPEG whose EXIF block (APP1) claims more entries than it holds: the pixels are fine."""
    jpeg = encode(image, "JPEG")
    exif = b"Exif\0\0II*\0\x08\0\0\0\x05\0\x12\x01\x03\0"  # 5 entries declared, half of one present
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


def _text_chunk_bomb(image: Image.Image) -> bytes:
    """A small PNG with a compressed text chunk that inflates to 8 MB (Pillow stops at 1 MB)."""
    png = encode(image, "PNG")
    payload = b"Comment\0\0" + zlib.compress(b"\0" * (8 * 2**20), 9)
    chunk = struct.pack(">I", len(payload)) + b"zTXt" + payload + struct.pack(">I", zlib.crc32(b"zTXt" + payload))
    header_end = 8 + 25  # signature, then the IHDR chunk
    return png[:header_end] + chunk + png[header_end:]


def reads_past_permissions(corpus: Corpus) -> bool:
    """True when this process reads a chmod-000 file anyway (root with CAP_DAC_OVERRIDE)."""
    try:
        with open(corpus.locked[0], "rb"):
            return True
    except PermissionError:
        return False


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root (links not followed): type, mode, size, mtime and content hash or link target."""
    listing: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except OSError:  # in a folder without search permission, unless privileged
                listing[os.path.relpath(path, root)] = ("not reachable",)
                continue
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode) and info.st_size <= SNAPSHOT_HASH_LIMIT and os.access(path, os.R_OK):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                content = None
            listing[os.path.relpath(path, root)] = (
                stat.S_IFMT(info.st_mode),
                info.st_mode,
                info.st_size,
                info.st_mtime_ns,
                content,
            )
    return listing


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        corpus = make_bad_data_corpus(Path(folder) / "data")
        try:
            print(corpus.describe())
            for outcome in (REJECTED, KEPT):
                kinds = Counter(f.kind for f in corpus.files if f.outcome == outcome)
                print(f"\n{outcome}:")
                for kind, n in kinds.items():
                    print(f"  {n} x {kind}")
        finally:
            corpus.restore_permissions()
