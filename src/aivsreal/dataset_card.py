"""A dataset card: what the data is, and whether its classes differ in how the files were stored.

Per class (and per source, in a folder of sources): file formats, JPEG qualities (estimated from the
quantisation tables, as ImageMagick's `identify -format %Q` does), image sizes and bytes per pixel,
read from each file's header without decoding pixels. When the classes differ in format, JPEG quality,
size or (files of one format) bytes per pixel, a detector can learn the storage instead of the faces (the
shortcut facebench's README describes): the card warns, with the numbers. The evaluate stage's metadata
check (shortcut.py) measures the same leak after training; the card says it before.
"""

from __future__ import annotations

import functools
import io
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

FORMAT_GAP = 0.2  # warn when a file format's share differs by this much between two classes
QUALITY_GAP = 5  # ...when the classes' median JPEG qualities differ by this many quality points
SIZE_RATIO = 1.2  # ...when a median image side (or, one format, bytes per pixel) is this many times the other


def file_facts(path: str | Path) -> dict:
    """Format, size, bytes and estimated JPEG quality (None unless JPEG) of one file, from its header."""
    with Image.open(path) as image:
        fmt, (width, height) = image.format or "unknown", image.size
        tables = getattr(image, "quantization", None) if fmt == "JPEG" else None
    return {"format": fmt, "width": width, "height": height, "bytes": Path(path).stat().st_size,
            "jpeg_quality": jpeg_quality(tables) if tables else None}  # fmt: skip


def jpeg_quality(tables: dict[int, list[int]]) -> int:
    """The libjpeg quality (1-100) whose luminance table is nearest to the file's: exact for files saved
    by libjpeg-based tools (Pillow, OpenCV, most phones' libraries), the closest match for the rest."""
    luminance = np.asarray(tables[min(tables)], dtype=float)
    distances = {q: np.abs(luminance - table).sum() for q, table in _libjpeg_tables().items()}
    return min(distances, key=distances.get)


@functools.cache
def _libjpeg_tables() -> dict[int, np.ndarray]:
    """Pillow's (libjpeg's) luminance quantisation table at every quality, in the order Pillow reads them."""
    tables = {}
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("L", (8, 8)).save(buffer, format="JPEG", quality=quality)
        with Image.open(buffer) as image:
            tables[quality] = np.asarray(image.quantization[0], dtype=float)
    return tables


def describe(facts: list[dict]) -> dict:
    """The card's numbers for a group of files: count, formats, JPEG qualities, sizes, bytes per pixel."""
    qualities = [f["jpeg_quality"] for f in facts if f["jpeg_quality"] is not None]
    sides = [min(f["width"], f["height"]) for f in facts]
    sizes = Counter(f"{f['width']}x{f['height']}" for f in facts)
    common, common_count = sizes.most_common(1)[0]
    return {
        "files": len(facts),
        "formats": dict(Counter(f["format"] for f in facts).most_common()),
        "jpeg_quality": {
            "files": len(qualities),
            "median": float(np.median(qualities)),
            "min": min(qualities),
            "max": max(qualities),
        }
        if qualities
        else None,  # fmt: skip
        "min_side": {"median": float(np.median(sides)), "min": min(sides), "max": max(sides)},
        "most_common_size": common,
        "most_common_size_share": round(common_count / len(facts), 4),
        "bytes_per_pixel_median": round(float(np.median([f["bytes"] / (f["width"] * f["height"]) for f in facts])), 4),
    }


def differences(by_class: dict[str, dict], where: str) -> list[str]:
    """Warnings, with the numbers, where the classes differ in format share, JPEG quality or size."""
    warnings, names = [], list(by_class)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            first, second = by_class[a], by_class[b]
            formats = sorted(set(first["formats"]) | set(second["formats"]))
            share = {name: {f: group["formats"].get(f, 0) / group["files"] for f in formats}
                     for name, group in ((a, first), (b, second))}  # fmt: skip
            gap = max(abs(share[a][f] - share[b][f]) for f in formats)
            if gap >= FORMAT_GAP:
                warnings.append(
                    f"{where}file formats differ by class: {a} {_shares(share[a])}, {b} {_shares(share[b])}"
                )
            q1, q2 = first["jpeg_quality"], second["jpeg_quality"]
            if q1 and q2 and abs(q1["median"] - q2["median"]) >= QUALITY_GAP:
                warnings.append(
                    f"{where}JPEG quality differs by class: {a} median {q1['median']:g} ({q1['files']} JPEG files), "
                    f"{b} median {q2['median']:g} ({q2['files']} JPEG files)"
                )
            b1, b2 = first["bytes_per_pixel_median"], second["bytes_per_pixel_median"]
            same_format = _dominant(first["formats"]) == _dominant(second["formats"]) is not None
            if same_format and max(b1, b2) >= SIZE_RATIO * min(b1, b2):
                warnings.append(
                    f"{where}{_dominant(first['formats'])} files compress differently by class: {a} {b1:g} bytes per "
                    f"pixel (median), {b} {b2:g}; compression history (a JPEG past) or content differs"
                )
            s1, s2 = first["min_side"]["median"], second["min_side"]["median"]
            if max(s1, s2) >= SIZE_RATIO * min(s1, s2):
                warnings.append(
                    f"{where}image sizes differ by class: {a} median shorter side {s1:g} px "
                    f"(most often {first['most_common_size']}), {b} {s2:g} px (most often {second['most_common_size']})"
                )
    return warnings


def dataset_card(
    records: list, class_names: list[str], layout: str, split_folders: dict[str, str] | None = None
) -> dict:
    """The card for the kept files (manifest records: path, label, source): per class, per source and
    class when there are sources, and the warnings. `layout`: given (the data's own splits) or random."""
    facts = [(record, file_facts(record.path)) for record in tqdm(records, desc="dataset card", unit="img",
                                                                    leave=False, disable=None)]  # fmt: skip
    labels = [label for label in class_names if any(r.label == label for r in records)]
    by_class = {label: describe([f for r, f in facts if r.label == label]) for label in labels}
    card: dict = {"layout": layout, "classes": by_class, "warnings": differences(by_class, "")}
    if split_folders:
        card["split_folders"] = split_folders
    sources = sorted({record.source for record in records} - {""})
    if sources:
        card["sources"] = {}
        for source in sources:
            groups = {label: [f for r, f in facts if r.label == label and r.source == source] for label in labels}
            card["sources"][source] = {label: describe(group) for label, group in groups.items() if group}
            card["warnings"] += differences(card["sources"][source], f"source {source}: ")
    return card


def _dominant(formats: dict[str, int]) -> str | None:
    """The format of at least 80 % of the files, if one is."""
    name, count = max(formats.items(), key=lambda item: item[1])
    return name if count >= 0.8 * sum(formats.values()) else None


def _shares(share: dict[str, float]) -> str:
    return " / ".join(f"{share[f]:.0%} {f}" for f in sorted(share, key=share.get, reverse=True) if share[f] > 0)
