"""The real faces in ../shared/facebench (when present) go through the split stage's checks."""

from pathlib import Path

import pytest
from conftest import PROJECT

from aivsreal.images import DEFAULT_MAX_PIXELS
from aivsreal.split import scan_dataset, split_manifest

FACEBENCH = PROJECT.parent / "shared" / "facebench"


@pytest.mark.skipif(not FACEBENCH.is_dir(), reason=f"{FACEBENCH} not present (real data is not in the repo)")
def test_facebench_sources_scan_and_split_without_leaks():
    records, rejected = scan_dataset(FACEBENCH, ["ai", "real"], DEFAULT_MAX_PIXELS, root=PROJECT)
    assert rejected == []
    by_label = {label: sum(r.label == label for r in records) for label in ("ai", "real")}
    files = {label: sum(1 for _ in FACEBENCH.glob(f"*/{label}/*.png")) for label in ("ai", "real")}
    assert by_label == files
    splits = split_manifest(records, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=42)
    hashes = {name: {r.sha256 for r in rows} for name, rows in splits.items()}
    assert not (hashes["train"] & hashes["test"]) and not (hashes["train"] & hashes["val"])
    assert all(Path(r.path).is_absolute() or (PROJECT / r.path).exists() for r in records[:5])
