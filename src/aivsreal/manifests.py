"""Manifests: one CSV per split listing its images (path, label, sha256, source), written by the split stage."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

MANIFEST_FIELDS = ("path", "label", "sha256", "source")


@dataclass(frozen=True)
class ImageRecord:
    """One image kept by the split: its path as the manifest writes it, its class, its content hash and
    its source (the folder under data.dir it came from when data.dir is a folder of sources, else "")."""

    path: str
    label: str
    sha256: str
    source: str = ""


def write_manifest(path: Path, rows: list[ImageRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_FIELDS)
        for row in rows:
            writer.writerow([row.path, row.label, row.sha256, row.source])


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The rows as dicts keyed by MANIFEST_FIELDS; a manifest written before sources were kept reads with source ""."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"manifest {path} not found: run the split stage first (`dvc repro split`)")
    with open(path, newline="", encoding="utf-8") as handle:
        return [row | {"source": row.get("source") or ""} for row in csv.DictReader(handle)]
