"""Manifests: written by the split, read back by training and evaluation, unchanged."""

from __future__ import annotations

import pytest

from aivsreal.manifests import ImageRecord, read_manifest, write_manifest


def test_manifest_round_trip(tmp_path):
    records = [ImageRecord("a/b.png", "ai", "f" * 64, "sd21"), ImageRecord("c, d.png", "real", "0" * 64)]
    write_manifest(tmp_path / "m.csv", records)
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "path,label,sha256,source"
    assert read_manifest(tmp_path / "m.csv") == [
        {"path": "a/b.png", "label": "ai", "sha256": "f" * 64, "source": "sd21"},
        {"path": "c, d.png", "label": "real", "sha256": "0" * 64, "source": ""},
    ]
    with pytest.raises(FileNotFoundError, match="dvc repro split"):
        read_manifest(tmp_path / "missing.csv")


def test_a_manifest_written_before_sources_were_kept_reads_with_source_empty(tmp_path):
    (tmp_path / "old.csv").write_text("path,label,sha256\na/b.png,ai," + "f" * 64 + "\n")
    assert read_manifest(tmp_path / "old.csv") == [{"path": "a/b.png", "label": "ai", "sha256": "f" * 64, "source": ""}]
