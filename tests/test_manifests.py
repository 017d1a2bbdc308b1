"""Manifests: written by the split, read back by training and evaluation, unchanged."""

from __future__ import annotations

import pytest

from aivsreal.manifests import ImageRecord, read_manifest, write_manifest


def test_manifest_round_trip(tmp_path):
    records = [ImageRecord("a/b.png", "ai", "f" * 64), ImageRecord("c, d.png", "real", "0" * 64)]
    write_manifest(tmp_path / "m.csv", records)
    assert read_manifest(tmp_path / "m.csv") == [
        {"path": "a/b.png", "label": "ai", "sha256": "f" * 64},
        {"path": "c, d.png", "label": "real", "sha256": "0" * 64},
    ]
    with pytest.raises(FileNotFoundError, match="dvc repro split"):
        read_manifest(tmp_path / "missing.csv")
