"""Datasets as people publish them: their own train/valid/test folders and their own class names."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT
from helpers_images import write_image

from aivsreal.images import DEFAULT_MAX_PIXELS
from aivsreal.layout import given_split_folders, split_mode
from aivsreal.params import Params, ParamsError
from aivsreal.split import (
    DatasetError,
    cross_split_duplicates,
    given_split,
    scan_dataset,
    scan_given_splits,
)

CLASSES = ["ai", "real"]
FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
FAKE_REAL = {"fake": "ai", "real": "real"}


def make_published(root: Path, counts: dict[str, int], folders=("fake", "real"), sources=("",)) -> dict[str, set]:
    """root/<split folder>/[<source>/]<class folder>/NNN.png, `counts` files per class folder; returns the
    files written per split folder (relative to root)."""
    written: dict[str, set] = {}
    seed = 0
    for split_folder, n in counts.items():
        written[split_folder] = set()
        for source in sources:
            for folder in folders:
                for i in range(n):
                    seed += 1
                    path = root / split_folder / source / folder / f"{i:03d}.png"
                    written[split_folder].add(write_image(path, seed=seed).relative_to(root).as_posix())
    return written


def scan_given(root: Path, class_map=FAKE_REAL):
    return scan_given_splits(given_split_folders(root), CLASSES, DEFAULT_MAX_PIXELS, root=root, class_map=class_map)


def test_given_splits_are_kept_file_for_file_with_mapped_class_names(tmp_path):
    written = make_published(tmp_path, {"train": 12, "Valid": 3, "TEST": 4})
    assert split_mode(tmp_path, "auto") == "given"
    assert {name: folder.name for name, folder in given_split_folders(tmp_path).items()} == {
        "train": "train", "val": "Valid", "test": "TEST"
    }  # fmt: skip

    scanned, rejected = scan_given(tmp_path)
    splits = given_split(scanned, FRACTIONS, seed=0)

    assert not rejected
    for name, folder in (("train", "train"), ("val", "Valid"), ("test", "TEST")):
        assert {r.path for r in splits[name]} == written[folder]
        for record in splits[name]:  # the folder's name on disk, the model's class in the manifest
            assert record.label == {"fake": "ai", "real": "real"}[Path(record.path).parent.name]
    assert cross_split_duplicates(splits)["images"] == 0


def test_a_missing_validation_split_is_carved_from_train_with_the_seed(tmp_path):
    written = make_published(tmp_path, {"train": 20, "test": 4})
    scanned, _ = scan_given(tmp_path)

    splits = given_split(scanned, FRACTIONS, seed=3)

    assert {r.path for r in splits["test"]} == written["test"]  # test untouched
    assert {r.path for r in splits["train"] + splits["val"]} == written["train"]
    for label in CLASSES:  # 20 per class, val : train = 0.15 : 0.70 -> 4 (3.5 rounded by largest remainder)
        assert sum(r.label == label for r in splits["val"]) == round(20 * 0.15 / 0.85)
    assert given_split(scanned, FRACTIONS, seed=3) == splits
    assert given_split(scanned, FRACTIONS, seed=4)["val"] != splits["val"]


def test_identical_files_in_two_given_splits_are_reported_not_moved(tmp_path):
    make_published(tmp_path, {"train": 6, "val": 2, "test": 3})
    leaked = tmp_path / "test" / "fake" / "leaked.png"
    shutil.copyfile(tmp_path / "train" / "fake" / "001.png", leaked)
    scanned, _ = scan_given(tmp_path)

    splits = given_split(scanned, FRACTIONS, seed=0)
    duplicates = cross_split_duplicates(splits)

    assert "test/fake/leaked.png" in {r.path for r in splits["test"]}
    assert "train/fake/001.png" in {r.path for r in splits["train"]}
    pair = ["train/fake/001.png", "test/fake/leaked.png"]
    assert duplicates == {"images": 1, "pairs": {"train/test": 1}, "examples": [pair]}


def test_sources_inside_given_splits_keep_their_names_and_test_sources_go_whole_to_test(tmp_path):
    make_published(tmp_path, {"train": 6, "val": 2, "test": 3}, sources=("gan", "diffusion"))
    scanned, _ = scan_given(tmp_path)
    assert {r.source for rows in scanned.values() for r in rows} == {"gan", "diffusion"}

    splits = given_split(scanned, FRACTIONS, seed=0, test_sources=["diffusion"])

    assert not any(r.source == "diffusion" for name in ("train", "val") for r in splits[name])
    assert sum(r.source == "diffusion" for r in splits["test"]) == 2 * (6 + 2 + 3)
    assert {r.path for r in splits["train"]} == {r.path for r in scanned["train"] if r.source == "gan"}


def test_a_folder_the_class_map_does_not_name_is_an_error_listing_the_folders(tmp_path):
    make_published(tmp_path, {"train": 3, "test": 2}, folders=("fake", "real", "unsure"))
    with pytest.raises(
        DatasetError, match=r"holds folder\(s\) unsure that data.class_map does not name.*fake, real, unsure"
    ):
        scan_given(tmp_path)


def test_class_folders_named_otherwise_without_a_map_suggest_one(tmp_path):
    make_published(tmp_path, {"train": 3, "test": 2}, folders=("FAKE", "REAL"))
    with pytest.raises(DatasetError, match=r"(?s)class folder .*ai is missing.*folders found: FAKE, REAL.*class_map"):
        scan_given(tmp_path, class_map={})
    scanned, _ = scan_given(tmp_path, class_map={"FAKE": "ai", "REAL": "real"})  # the map the error suggests
    assert {r.label for r in scanned["train"]} == {"ai", "real"}


def test_several_folder_names_map_to_one_class_in_a_flat_tree(tmp_path):
    for number, folder in enumerate(("fake", "FAKE", "real")):
        for i in range(3):
            write_image(tmp_path / folder / f"{i}.png", seed=10 * number + i)
    records, _ = scan_dataset(tmp_path, CLASSES, DEFAULT_MAX_PIXELS, root=tmp_path,
                              class_map={"fake": "ai", "FAKE": "ai", "real": "real"})  # fmt: skip
    assert sum(r.label == "ai" for r in records) == 6 and sum(r.label == "real" for r in records) == 3
    assert split_mode(tmp_path, "auto") == "random"  # no split folders: the usual random split


def test_split_mode_given_without_split_folders_and_two_val_folders_are_errors(tmp_path):
    (tmp_path / "ai").mkdir()
    with pytest.raises(
        DatasetError, match=r"split.mode is given but .* has no train/ and no test/ folder.*split.mode: random"
    ):
        split_mode(tmp_path, "given")
    assert split_mode(tmp_path, "random") == "random"
    (tmp_path / "val").mkdir()
    (tmp_path / "validation").mkdir()
    with pytest.raises(DatasetError, match=r"val/ and validation/ .* both look like the val split"):
        split_mode(tmp_path, "auto")


def test_the_class_map_param_is_checked_and_numeric_folder_names_read_as_text(tmp_path):
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())

    def load(class_map: str) -> Params:
        raw["data"]["class_map"] = yaml.safe_load(class_map)  # as YAML reads params.yaml: 0 and 1 are numbers
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        return Params.load(tmp_path / "params.yaml")

    assert load("{1: ai, 0: real}").data.class_map == {"1": "ai", "0": "real"}
    with pytest.raises(ParamsError, match=re.escape("data.class_map maps folders to 'human', not in data.class_names")):
        load("{fake: ai, human: human}")
    with pytest.raises(ParamsError, match="data.class_map maps no folder to 'real'"):
        load("{fake: ai}")
