"""The dataset card: formats, JPEG qualities and sizes per class, and a warning where the classes differ."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from helpers_images import encode, random_image
from PIL import Image

from aivsreal.dataset_card import dataset_card, jpeg_quality
from aivsreal.manifests import ImageRecord

CLASSES = ["ai", "real"]


def write_class(folder: Path, label: str, n: int, fmt: str = "JPEG", size=(48, 48), source: str = "", **save):
    """`n` noise images of one class, saved as `fmt` with `save` options; their manifest records."""
    records = []
    for i in range(n):
        path = folder / label / f"{i}.{fmt.lower()}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(random_image(size, seed=1000 * CLASSES.index(label) + i), fmt, **save))
        records.append(ImageRecord(str(path), label, "", source))
    return records


@pytest.mark.parametrize("quality", [30, 60, 75, 85, 90, 95, 100])
def test_jpeg_quality_is_read_back_exactly_from_a_pillow_file(tmp_path, quality):
    path = tmp_path / "face.jpg"
    path.write_bytes(encode(random_image((32, 32)), "JPEG", quality=quality))
    with Image.open(path) as image:
        assert jpeg_quality(image.quantization) == quality


def test_classes_saved_at_different_jpeg_qualities_get_a_warning_with_the_numbers(tmp_path):
    records = write_class(tmp_path, "ai", 6, quality=95) + write_class(tmp_path, "real", 6, quality=70)

    card = dataset_card(records, CLASSES, "random")

    assert (
        card["classes"]["ai"]["jpeg_quality"]["median"] == 95
        and card["classes"]["real"]["jpeg_quality"]["median"] == 70
    )
    assert (
        "JPEG quality differs by class: ai median 95 (6 JPEG files), real median 70 (6 JPEG files)" in card["warnings"]
    )
    assert not any("formats differ" in warning or "sizes differ" in warning for warning in card["warnings"])


def test_classes_stored_alike_get_no_warning(tmp_path):
    records = write_class(tmp_path, "ai", 6, quality=85) + write_class(tmp_path, "real", 6, quality=85)
    card = dataset_card(records, CLASSES, "given", {"train": "train", "test": "test"})
    assert card["warnings"] == [] and card["split_folders"] == {"train": "train", "test": "test"}
    assert card["classes"]["ai"]["formats"] == {"JPEG": 6} and card["classes"]["real"]["most_common_size"] == "48x48"


def test_format_and_size_differences_are_named_per_source_too(tmp_path):
    records = (
        write_class(tmp_path / "gan", "ai", 4, fmt="PNG", source="gan")
        + write_class(tmp_path / "gan", "real", 4, quality=90, source="gan")
        + write_class(tmp_path / "sd", "ai", 4, quality=90, size=(96, 96), source="sd")
        + write_class(tmp_path / "sd", "real", 4, quality=90, size=(48, 48), source="sd")
    )

    card = dataset_card(records, CLASSES, "random")

    assert set(card["sources"]) == {"gan", "sd"}
    assert "source gan: file formats differ by class: ai 100% PNG, real 100% JPEG" in card["warnings"]
    assert any(
        w.startswith("source sd: image sizes differ by class: ai median shorter side 96 px") for w in card["warnings"]
    )
    assert not any(w.startswith("source sd: file formats") for w in card["warnings"])


def test_pngs_that_compress_differently_by_class_are_flagged_as_a_possible_compression_history(tmp_path):
    records = write_class(tmp_path, "ai", 5, fmt="PNG")  # noise: about 3 bytes per pixel
    for i in range(5):  # the same noise after a JPEG past, stored as PNG: smoother, compresses better
        path = tmp_path / "real" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        smooth = Image.open(io.BytesIO(encode(random_image((48, 48), seed=50 + i), "JPEG", quality=5)))
        path.write_bytes(encode(smooth, "PNG"))
        records.append(ImageRecord(str(path), "real", ""))

    warnings = dataset_card(records, CLASSES, "random")["warnings"]

    assert len(warnings) == 1 and warnings[0].startswith("PNG files compress differently by class: ai ")
