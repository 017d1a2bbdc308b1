"""load_image turns whatever a user has into 8-bit RGB, or says in a few words why not."""

from __future__ import annotations

import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers_images import encode, png_header_only, random_image, write_image
from PIL import Image, features

from aivsreal.images import BadImageError, list_image_files, load_image, max_file_bytes

ORIENTATION = 0x0112


@pytest.fixture(params=["bytes", "path"])
def load(request, tmp_path):
    """load_image from raw bytes or from a file holding them: both must behave the same."""

    def _load(data: bytes, suffix: str = ".png", **kwargs) -> Image.Image:
        if request.param == "bytes":
            return load_image(data, **kwargs)
        path = tmp_path / f"image{suffix}"
        path.write_bytes(data)
        return load_image(path, **kwargs)

    return _load


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image, dtype=np.int16)


def test_rgb_png_round_trips_exactly(load):
    original = random_image((11, 7), seed=3)
    loaded = load(encode(original, "PNG"))
    assert loaded.size == (11, 7)
    np.testing.assert_array_equal(pixels(loaded), np.asarray(original))


def test_bytearray_is_accepted():
    original = random_image((5, 4), seed=1)
    loaded = load_image(bytearray(encode(original, "PNG")))
    np.testing.assert_array_equal(pixels(loaded), np.asarray(original))


def test_greyscale_becomes_rgb_with_equal_channels(load):
    grey = Image.new("L", (9, 7), 77)
    loaded = load(encode(grey, "PNG"))
    assert loaded.size == (9, 7)
    assert (pixels(loaded) == 77).all()


def test_palette_image_keeps_its_colours(load):
    original = random_image((12, 10), seed=2).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    loaded = load(encode(original, "PNG"))
    np.testing.assert_array_equal(pixels(loaded), np.asarray(original.convert("RGB")))


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(load, fmt):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)  # index 0 red, index 1 blue
    image.paste(1, (0, 0, 8, 4))  # top half blue, bottom half (index 0) transparent red
    loaded = pixels(load(encode(image, fmt, transparency=0), f".{fmt.lower()}"))
    assert (loaded[:4] == (0, 0, 255)).all()
    assert (loaded[4:] == (255, 255, 255)).all()


def test_rgba_transparent_pixels_become_white_and_opaque_ones_stay(load):
    array = np.zeros((4, 6, 4), dtype=np.uint8)
    array[:, :2] = (255, 0, 0, 0)  # fully transparent red: white, not red and not black
    array[:, 2:4] = (0, 0, 255, 255)  # opaque blue
    array[:, 4:] = (0, 0, 0, 128)  # half-transparent black over white: mid grey
    loaded = pixels(load(encode(Image.fromarray(array, "RGBA"), "PNG")))
    assert (loaded[:, :2] == 255).all()
    assert (loaded[:, 2:4] == (0, 0, 255)).all()
    assert np.abs(loaded[:, 4:] - 127).max() <= 1


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour(load):
    red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    loaded = pixels(load(encode(red, "JPEG", quality=95), ".jpg"))
    r, g, b = loaded.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_is_rescaled_not_clipped(load):
    array = np.array([[0, 32768, 65535, 4096]], dtype=np.uint16)
    image = Image.fromarray(array)
    assert image.mode.startswith("I;16")
    loaded = pixels(load(encode(image, "PNG")))
    assert (loaded[..., 0] == loaded[..., 1]).all() and (loaded[..., 1] == loaded[..., 2]).all()
    expected = array[0] / 65535 * 255
    np.testing.assert_allclose(loaded[0, :, 0], expected, atol=1)
    assert abs(int(loaded[0, 1, 0]) - 128) <= 1  # mid grey, not clipped to white


@pytest.mark.parametrize(
    ("orientation", "top_colour"),
    [(6, (255, 0, 0)), (8, (0, 0, 255))],  # 6: turn clockwise (left goes up); 8: anticlockwise
)
def test_exif_orientation_is_applied(load, orientation, top_colour):
    stored = Image.new("RGB", (32, 16), (255, 0, 0))
    stored.paste((0, 0, 255), (16, 0, 32, 16))  # left half red, right half blue, as stored
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    loaded = load(encode(stored, "JPEG", quality=95, exif=exif), ".jpg")
    assert loaded.size == (16, 32)
    top = pixels(loaded)[4:12, 4:12].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(top, top_colour, atol=40)


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_loads(load):
    original = random_image((10, 6), seed=4)
    loaded = load(encode(original, "WEBP", lossless=True), ".webp")
    np.testing.assert_array_equal(pixels(loaded), np.asarray(original))


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "suffix", "reason"),
    [
        pytest.param(b"", ".png", "empty", id="zero bytes"),
        pytest.param(b"hello, this is a text file\n", ".jpg", "not an image", id="text named .jpg"),
        pytest.param(_half(encode(random_image((40, 40)), "PNG")), ".png", "truncated", id="truncated png"),
        pytest.param(_half(encode(random_image((40, 40)), "JPEG")), ".jpg", "truncated", id="truncated jpeg"),
        pytest.param(png_header_only(100_000, 100_000), ".png", "too large", id="bomb header"),
    ],
)
def test_bad_images_raise_bad_image_error_with_a_reason(load, data, suffix, reason):
    with pytest.raises(BadImageError, match=reason):
        load(data, suffix)


def test_pixel_limit_is_configurable_and_named_in_the_message(load):
    data = encode(random_image((20, 10)), "PNG")
    assert load(data, max_pixels=200).size == (20, 10)  # exactly at the limit is fine
    with pytest.raises(BadImageError, match="too large") as error:
        load(data, max_pixels=199)
    assert "20x10" in str(error.value)


def test_decompression_bomb_names_our_limit_not_pillows(load):
    """Pillow refuses 20000x20000 itself before we see the size; the message still names split.max_pixels."""
    with pytest.raises(BadImageError, match="400,000,000 pixels exceeds the limit of 40,000,000"):
        load(png_header_only(20_000, 20_000))


def test_metadata_bomb_is_named_as_one(load):
    png = encode(random_image((8, 8)), "PNG")
    payload = b"Comment\0\0" + zlib.compress(b"\0" * (8 * 2**20), 9)  # a text chunk that inflates to 8 MB
    chunk = struct.pack(">I", len(payload)) + b"zTXt" + payload + struct.pack(">I", zlib.crc32(b"zTXt" + payload))
    with pytest.raises(BadImageError, match="metadata too large"):
        load(png[:33] + chunk + png[33:])


def test_corrupt_exif_keeps_the_pixels_quietly(load):
    original = random_image((12, 8), seed=5)
    jpeg = encode(original, "JPEG", quality=95)
    exif = b"Exif\0\0II*\0\x08\0\0\0\x05\0\x12\x01\x03\0"  # 5 entries declared, half of one present
    broken = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load(broken, ".jpg")
    assert loaded.size == (12, 8)


def test_any_decoder_exception_becomes_a_bad_image_error(monkeypatch):
    """Pillow plugins have raised struct.error, IndexError... on crafted files; none may escape."""

    def crash(*args, **kwargs):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(Image, "open", crash)
    with pytest.raises(BadImageError, match="corrupt image .*struct.error"):
        load_image(b"anything")


def within(seconds: float, function):
    """function() in a thread: a test fails, rather than hangs, if a file makes it block or read forever."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(function()), daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert not worker.is_alive(), "still running: the file made it block or read forever"
    return result[0] if result else None


@pytest.mark.parametrize(
    ("special", "named"),
    [("named pipe", "named pipe"), ("link to /dev/zero", "character device"), ("folder", "folder")],
)
def test_special_files_are_turned_away_without_reading_them(tmp_path, special, named):
    path = tmp_path / "face.png"
    if special == "named pipe":
        os.mkfifo(path)  # opening it for reading the usual way waits for a writer forever
    elif special == "link to /dev/zero":
        os.symlink("/dev/zero", path)  # reading it fills memory
    else:
        path.mkdir()

    def attempt():
        with pytest.raises(BadImageError, match="not a regular file") as error:
            load_image(path)
        return str(error.value)

    assert named in within(10, attempt)


def test_file_larger_than_any_image_is_not_read(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:
        handle.truncate(max_file_bytes(100) + 1)  # sparse: no disk used, and it must not be read into memory
    with pytest.raises(BadImageError, match="file too large"):
        load_image(path, max_pixels=100)
    with pytest.raises(BadImageError, match="file too large"):
        load_image(bytes(max_file_bytes(100) + 1), max_pixels=100)


def test_links_that_cannot_be_followed_say_so(tmp_path):
    folder = tmp_path / "ai"
    good = write_image(folder / "good.png")
    os.symlink("missing.png", folder / "dangling.png")
    os.symlink("self.png", folder / "self.png")
    os.symlink("self_dir", folder / "self_dir")
    os.symlink("good.png", folder / "alias.png")

    candidates, skipped = list_image_files(folder)

    assert candidates == [folder / "alias.png", good]  # a link to an image is followed
    reasons = {path.name: reason for path, reason in skipped}
    assert "broken symbolic link" in reasons["dangling.png"] and "missing.png" in reasons["dangling.png"]
    assert "link loop" in reasons["self.png"] and "link loop" in reasons["self_dir"]
    with pytest.raises(BadImageError, match="broken symbolic link"):
        load_image(folder / "dangling.png")
    with pytest.raises(BadImageError, match="link loop"):
        load_image(folder / "self.png")


def test_missing_file_is_a_bad_image_error(tmp_path):
    with pytest.raises(BadImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")


def test_list_image_files_recurses_and_names_non_images_and_hidden_entries(tmp_path):
    root = tmp_path / "ai"
    expected = [
        write_image(root / "a.png"),
        write_image(root / "sub" / "b.JPG", fmt="JPEG"),
        write_image(root / "sub" / "deeper" / "c.webp", fmt="WEBP"),
    ]
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "README").write_text("no suffix")
    write_image(root / ".hidden.png")
    write_image(root / ".cache" / "d.png")

    candidates, skipped = list_image_files(root)

    assert candidates == sorted(expected)
    reasons = {path.name: reason for path, reason in skipped}
    assert set(reasons) == {"notes.txt", "README", ".hidden.png", ".cache"}  # the folder once, not its files
    assert ".txt" in reasons["notes.txt"]
    assert "no suffix" in reasons["README"]
    assert "hidden file" in reasons[".hidden.png"] and "hidden folder" in reasons[".cache"]


def test_list_image_files_survives_a_symlink_loop(tmp_path):
    root = tmp_path / "real"
    image = write_image(root / "sub" / "face.png")
    os.symlink(root, root / "sub" / "loop")  # sub/loop -> its grandparent: an endless tree

    result: list = []
    worker = threading.Thread(target=lambda: result.append(list_image_files(root)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "list_image_files did not return: symlink loop followed forever"

    candidates, skipped = result[0]
    assert candidates == [image]
    assert any(Path(path).name == "loop" and "loop" in reason for path, reason in skipped)
