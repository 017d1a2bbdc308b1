"""The built-in sample: reproducible, honest (AI images are generated, not copies), pipeline-ready."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aivsreal.images import DEFAULT_MAX_PIXELS
from aivsreal.sample_data import make_sample, postprocess, real_faces
from aivsreal.split import scan_dataset

CLASSES = ("ai", "real")
SMALL = {"n_per_class": 6, "size": 20, "components": 5, "noise_std": 4.0}


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


def test_writes_n_per_class_pngs_of_the_given_size_and_one_mode(tmp_path):
    counts = make_sample(tmp_path, seed=0, **SMALL)
    assert counts == {label: SMALL["n_per_class"] for label in CLASSES}
    modes = {}
    for label in CLASSES:
        files = sorted((tmp_path / label).glob("*.png"))
        assert len(files) == SMALL["n_per_class"]
        for path in files:
            with Image.open(path) as image:
                assert image.format == "PNG"
                assert image.size == (SMALL["size"], SMALL["size"])
                modes.setdefault(label, set()).add(image.mode)
    assert len(modes["ai"]) == 1 and modes["ai"] == modes["real"]  # mode must not give the class away


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    make_sample(tmp_path / "a", seed=0, **SMALL)
    make_sample(tmp_path / "b", seed=0, **SMALL)
    make_sample(tmp_path / "c", seed=1, **SMALL)
    first = file_hashes(tmp_path / "a")
    assert len(first) == 2 * SMALL["n_per_class"]
    assert file_hashes(tmp_path / "b") == first
    other = file_hashes(tmp_path / "c")
    assert set(other) == set(first) and other != first
    for label in CLASSES:  # both classes change with the seed
        assert {k: v for k, v in other.items() if k.startswith(label)} != {
            k: v for k, v in first.items() if k.startswith(label)
        }


def test_ai_samples_are_not_copies_of_real_faces(tmp_path):
    make_sample(tmp_path, seed=0, **{**SMALL, "noise_std": 0.0})
    hashes = file_hashes(tmp_path)
    ai = {h for name, h in hashes.items() if name.startswith("ai/")}
    real = {h for name, h in hashes.items() if name.startswith("real/")}
    assert len(ai) == SMALL["n_per_class"]  # every generated face is distinct
    assert not ai & real
    # nor of any of the real faces the generator was fitted to (not only those drawn for this sample)
    rng = np.random.default_rng(0)
    every_real = {postprocess(face, SMALL["size"], 0.0, rng).tobytes() for face in real_faces()}
    for path in (tmp_path / "ai").glob("*.png"):
        with Image.open(path) as image:
            assert image.tobytes() not in every_real, path.name


def test_rerun_replaces_the_old_sample(tmp_path):
    make_sample(tmp_path, seed=0, **SMALL)
    make_sample(tmp_path, seed=0, **{**SMALL, "n_per_class": 3})
    for label in CLASSES:
        assert len(list((tmp_path / label).glob("*.png"))) == 3


def test_asking_for_more_faces_than_exist_raises(tmp_path):
    available = len(real_faces())
    with pytest.raises(ValueError, match=str(available)):
        make_sample(tmp_path, seed=0, **{**SMALL, "n_per_class": available + 1})


def test_sample_passes_the_split_checks(tmp_path):
    make_sample(tmp_path, seed=0, **SMALL)
    records, rejected = scan_dataset(tmp_path, list(CLASSES), DEFAULT_MAX_PIXELS, root=tmp_path)
    assert rejected == []
    assert len(records) == 2 * SMALL["n_per_class"]
