"""scan_dataset + split_manifest: stratified, reproducible, leak-free splits with clear errors."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import PROJECT
from helpers_images import encode, random_image, write_image

from aivsreal.images import DEFAULT_MAX_PIXELS
from aivsreal.split import SPLITS, DatasetError, scan_dataset, split_counts, split_manifest

CLASSES = ["ai", "real"]
FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


def make_tree(data_dir: Path, per_class: dict[str, int], reverse: bool = False) -> dict[str, list[Path]]:
    """data_dir/<class>/<class>_NNN.png, distinct noise images (seeded per class and index)."""
    written: dict[str, list[Path]] = {}
    for class_index, (label, n) in enumerate(per_class.items()):
        order = range(n - 1, -1, -1) if reverse else range(n)
        written[label] = [
            write_image(data_dir / label / f"{label}_{i:03d}.png", seed=1000 * class_index + i) for i in order
        ]
        (data_dir / label).mkdir(parents=True, exist_ok=True)
    return written


def scan(data_dir: Path, root: Path | None = None):
    return scan_dataset(data_dir, CLASSES, DEFAULT_MAX_PIXELS, root=root if root is not None else data_dir)


def paths_by_split(splits) -> dict[str, list[str]]:
    return {name: sorted(r.path for r in records) for name, records in splits.items()}


def test_split_is_stratified_and_adds_up(tmp_path):
    per_class = {"ai": 20, "real": 40}
    make_tree(tmp_path, per_class)
    records, rejected = scan(tmp_path)
    assert rejected == []
    splits = split_manifest(records, FRACTIONS, seed=0)
    assert set(splits) == set(SPLITS)
    for label, n in per_class.items():
        for name, fraction in FRACTIONS.items():
            assert sum(r.label == label for r in splits[name]) == round(n * fraction), (label, name)
    all_paths = [r.path for records in splits.values() for r in records]
    assert sorted(all_paths) == sorted(r.path for r in records)  # every image in exactly one split


def test_split_counts_round_so_that_they_add_up(tmp_path):
    make_tree(tmp_path, {"ai": 11, "real": 13})
    records, _ = scan(tmp_path)
    splits = split_manifest(records, FRACTIONS, seed=0)
    for label, n in (("ai", 11), ("real", 13)):
        counts = [sum(r.label == label for r in splits[name]) for name in SPLITS]
        assert sum(counts) == n
        for count, name in zip(counts, SPLITS, strict=True):
            assert abs(count - n * FRACTIONS[name]) < 1


def test_split_is_deterministic_for_a_seed_and_changes_with_the_seed(tmp_path):
    make_tree(tmp_path, {"ai": 20, "real": 20})
    records, _ = scan(tmp_path)
    first = paths_by_split(split_manifest(records, FRACTIONS, seed=7))
    assert paths_by_split(split_manifest(records, FRACTIONS, seed=7)) == first
    assert paths_by_split(split_manifest(records, FRACTIONS, seed=8)) != first


def test_split_does_not_depend_on_file_creation_or_record_order(tmp_path):
    forward, backward = tmp_path / "forward", tmp_path / "backward"
    make_tree(forward, {"ai": 20, "real": 20})
    make_tree(backward, {"ai": 20, "real": 20}, reverse=True)
    records_forward, _ = scan(forward)
    records_backward, _ = scan(backward)
    expected = paths_by_split(split_manifest(records_forward, FRACTIONS, seed=3))
    assert paths_by_split(split_manifest(records_backward, FRACTIONS, seed=3)) == expected
    shuffled = list(records_forward)
    random.Random(0).shuffle(shuffled)
    assert paths_by_split(split_manifest(shuffled, FRACTIONS, seed=3)) == expected


def test_exact_duplicates_always_land_in_the_same_split(tmp_path):
    written = make_tree(tmp_path, {"ai": 20, "real": 20})
    for label in CLASSES:
        for original in written[label][:6]:
            for copy in range(3):
                shutil.copyfile(original, original.with_name(f"{original.stem}_copy{copy}.png"))
    records, rejected = scan(tmp_path)
    assert rejected == [] and len(records) == 40 + 2 * 6 * 3
    for seed in range(10):
        split_of: dict[str, set[str]] = defaultdict(set)
        for name, split_records in split_manifest(records, FRACTIONS, seed).items():
            for record in split_records:
                split_of[record.sha256].add(name)
        assert all(len(names) == 1 for names in split_of.values()), f"duplicate leaked across splits, seed {seed}"


def test_bad_files_are_rejected_with_a_reason_and_good_ones_all_kept(tmp_path):
    written = make_tree(tmp_path, {"ai": 10, "real": 10})
    bad = {
        "ai/empty.png": (b"", "empty"),
        "ai/text.jpg": (b"just some text\n", "not an image"),
        "real/cut.png": (encode(random_image((40, 40), seed=99))[:300], "truncated"),
        "real/cut.jpg": (encode(random_image((40, 40), seed=98), "JPEG")[:300], "truncated"),
        "real/notes.txt": (b"not an image type", "not an image file type"),
    }
    for relative, (data, _) in bad.items():
        (tmp_path / relative).write_bytes(data)

    records, rejected = scan(tmp_path)

    good = {path.relative_to(tmp_path).as_posix() for paths in written.values() for path in paths}
    assert {r.path for r in records} == good
    assert all(r.label == Path(r.path).parts[0] for r in records)
    reasons = {r.path: r.reason for r in rejected}
    assert set(reasons) == set(bad)
    for relative, (_, reason) in bad.items():
        assert reason in reasons[relative], relative
    assert len(records) + len(rejected) == len(good) + len(bad)


def test_names_that_are_not_utf8_are_left_out_with_advice_to_rename(tmp_path):
    make_tree(tmp_path, {"ai": 10, "real": 10})
    write_image(tmp_path / "ai" / os.fsdecode(b"face\xff.png"), seed=777)  # a Latin-1 name, as bytes
    write_image(tmp_path / "real" / os.fsdecode(b"caf\xe9") / "face.png", seed=778)
    write_image(tmp_path / "real" / os.fsdecode(b"notes\xff.txt"))
    write_image(tmp_path / "real" / 'café 😀, "ok".png', seed=779)  # valid UTF-8: kept

    records, rejected = scan(tmp_path)

    reasons = {r.path: r.reason for r in rejected}
    assert set(reasons) == {"ai/face\\xff.png", "real/caf\\xe9/face.png", "real/notes\\xff.txt"}
    assert "UTF-8" in reasons["ai/face\\xff.png"] and "rename" in reasons["real/caf\\xe9/face.png"]
    assert 'real/café 😀, "ok".png' in {r.path for r in records}
    for text in [r.path for r in records] + [r.path for r in rejected]:
        text.encode("utf-8")  # what the manifests and the summary will hold: no lone surrogates


def test_same_bytes_under_both_classes_are_rejected_from_both(tmp_path):
    written = make_tree(tmp_path, {"ai": 10, "real": 10})
    shutil.copyfile(written["ai"][0], tmp_path / "real" / "stolen.png")
    records, rejected = scan(tmp_path)
    assert {r.path for r in rejected} == {"ai/ai_000.png", "real/stolen.png"}
    assert all("another class" in r.reason for r in rejected)
    assert len(records) == 19


def test_class_left_empty_by_cross_class_duplicates_is_an_error(tmp_path):
    written = make_tree(tmp_path, {"ai": 10, "real": 0})
    for path in written["ai"]:
        shutil.copyfile(path, tmp_path / "real" / path.name)
    with pytest.raises(DatasetError, match="(?s)has no usable images.*same content appears under another class"):
        records, _ = scan(tmp_path)
        split_manifest(records, FRACTIONS, seed=0)


def test_missing_data_dir_names_the_folder(tmp_path):
    missing = tmp_path / "no_such_data"
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        scan(missing)


def test_missing_class_folder_names_it(tmp_path):
    make_tree(tmp_path, {"ai": 10})
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "real"))):
        scan(tmp_path)


@pytest.mark.parametrize("content", ["nothing", "only bad files"])
def test_class_folder_without_usable_images_names_it(tmp_path, content):
    make_tree(tmp_path, {"ai": 10, "real": 0})
    if content == "only bad files":
        (tmp_path / "real" / "broken.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "real"))):
        scan(tmp_path)


def test_too_few_images_names_the_class_and_the_advice_is_enough(tmp_path):
    make_tree(tmp_path / "few", {"ai": 20, "real": 2})
    records, _ = scan(tmp_path / "few")
    with pytest.raises(DatasetError, match="'real'") as error:
        split_manifest(records, FRACTIONS, seed=0)
    needed = int(re.search(r"at least (\d+)", str(error.value)).group(1))

    make_tree(tmp_path / "enough", {"ai": 20, "real": needed})
    records, _ = scan(tmp_path / "enough")
    splits = split_manifest(records, FRACTIONS, seed=0)
    assert all(any(r.label == "real" for r in splits[name]) for name in SPLITS)

    make_tree(tmp_path / "one_less", {"ai": 20, "real": needed - 1})  # the advice is also the minimum
    records, _ = scan(tmp_path / "one_less")
    with pytest.raises(DatasetError):
        split_manifest(records, FRACTIONS, seed=0)


def test_manifest_paths_are_relative_to_the_given_root(tmp_path):
    data_dir = tmp_path / "project" / "data" / "raw"
    make_tree(data_dir, {"ai": 5, "real": 5})
    records, _ = scan(data_dir, root=tmp_path / "project")
    assert all(r.path.startswith("data/raw/") for r in records)
    assert all((tmp_path / "project" / r.path).is_file() for r in records)


def test_manifest_paths_default_to_the_working_directory(tmp_path, monkeypatch):
    make_tree(tmp_path / "data", {"ai": 5, "real": 5})
    monkeypatch.chdir(tmp_path)
    records, _ = scan_dataset(Path("data"), CLASSES, DEFAULT_MAX_PIXELS)
    assert all(not Path(r.path).is_absolute() and r.path.startswith("data/") for r in records)


def test_paths_outside_the_root_stay_absolute(tmp_path):
    make_tree(tmp_path / "data", {"ai": 5, "real": 5})
    records, _ = scan(tmp_path / "data", root=tmp_path / "elsewhere")
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in records)


def test_split_counts_add_up(tmp_path):
    make_tree(tmp_path, {"ai": 20, "real": 30})
    (tmp_path / "ai" / "empty.png").write_bytes(b"")
    (tmp_path / "real" / "notes.txt").write_text("x")
    (tmp_path / "real" / "bad.jpg").write_text("x")
    records, rejected = scan(tmp_path)
    splits = split_manifest(records, FRACTIONS, seed=0)

    counts = split_counts(splits, rejected)

    for name in SPLITS:
        assert counts[name] == {label: sum(r.label == label for r in splits[name]) for label in CLASSES}
    assert counts["total_kept"] == sum(sum(counts[name].values()) for name in SPLITS) == len(records)
    assert counts["rejected"] == {"ai": 1, "real": 2}
    assert counts["total_rejected"] == len(rejected) == 3


def test_a_folder_of_sources_is_read_as_their_union(tmp_path):
    """facebench-style layout: data/<source>/<class>/ for several sources."""
    dev = make_tree(tmp_path / "dev", {"ai": 3, "real": 4})
    extra = make_tree(tmp_path / "extra", {"ai": 5, "real": 2})
    # make_tree seeds by class and index only: make the second source's files distinct
    for label, paths in extra.items():
        for i, path in enumerate(paths):
            write_image(path, seed=500 + 10 * len(label) + i)
    records, rejected = scan(tmp_path)
    assert rejected == []
    assert sorted(r.path for r in records if r.label == "ai") == sorted(
        [f"dev/ai/ai_{i:03d}.png" for i in range(3)] + [f"extra/ai/ai_{i:03d}.png" for i in range(5)]
    )
    assert sum(r.label == "real" for r in records) == len(dev["real"]) + len(extra["real"])


def test_images_below_the_models_min_side_are_left_out_with_the_reason(tmp_path):
    write_image(tmp_path / "ai" / "face.png", size=(40, 40), seed=1)
    write_image(tmp_path / "ai" / "thumb.png", size=(16, 40), seed=2)
    write_image(tmp_path / "real" / "photo.png", size=(32, 32), seed=3)
    records, rejected = scan_dataset(tmp_path, CLASSES, DEFAULT_MAX_PIXELS, root=tmp_path, min_side=32)
    assert sorted(r.path for r in records) == ["ai/face.png", "real/photo.png"]
    assert [(r.path, r.reason) for r in rejected] == [
        ("ai/thumb.png", "too small: 16x40 px, below model.min_side (32 px)")
    ]


def test_the_split_stage_runs_without_torch():
    """Writing manifests needs no training code: `python -m pipeline.split` never imports torch."""
    code = "import sys, pipeline.split; print([name for name in ('torch', 'torchvision') if name in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_crop_mode_trains_on_every_face_found_in_its_files_split_and_leaves_out_files_without_one(tmp_path):
    """data.faces: crop. The split is made on files, as in whole mode; each file's faces are cropped
    square (its own pixels) into that file's split; a file with no face is left out with the reason."""
    from helpers_faces import background, compose, lfw_faces
    from PIL import Image

    from aivsreal.faces import make_finder
    from aivsreal.split import NO_FACE, crop_faces

    finder = make_finder("mtcnn")  # crop_faces' default detector (data.face_detector)
    faces = [face for face in lfw_faces()[0] if len(finder.find(face)) == 1]  # 98 of the 100 (test_faces.py)
    for label, offset in (("ai", 0), ("real", 40)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(10):
            faces[offset + i].save(tmp_path / "data" / label / f"{label}_{i}.png")
    group, _ = compose([lfw_faces()[0][i] for i in (0, 5, 9)], 480, 220)  # as in test_faces.py: 3 boxes
    group.save(tmp_path / "data" / "real" / "group.png")
    background(200, 200, seed=4).save(tmp_path / "data" / "ai" / "wall.png")
    records, rejected = scan_dataset(tmp_path / "data", ["ai", "real"], DEFAULT_MAX_PIXELS, root=tmp_path)
    by_file = split_manifest(records, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    split_of = {r.path: name for name, rows in by_file.items() for r in rows}

    crops, no_face, per_file = crop_faces(by_file, tmp_path / "faces", 0.25, DEFAULT_MAX_PIXELS, root=tmp_path)

    assert [(r.path, r.reason) for r in no_face] == [("data/ai/wall.png", NO_FACE)]
    found = {row.path: row for row in per_file}
    assert set(found) == set(split_of) and all(found[p].split == split_of[p] for p in split_of)
    assert found["data/real/group.png"].faces == 3 and found["data/ai/wall.png"].faces == 0
    assert sum(row.faces for row in per_file) == sum(len(rows) for rows in crops.values())
    several = [name for name, rows in crops.items() for r in rows if r.path.endswith(("_2.png", "_3.png"))]
    assert several == [split_of["data/real/group.png"]] * 2  # the group's other faces: in the file's split
    for name, rows in crops.items():
        for record in rows:
            assert record.path.startswith(f"faces/{name}/{record.label}/")
            with Image.open(tmp_path / record.path) as crop:
                assert crop.width == crop.height >= 32 and crop.format == "PNG"
    assert sum(len(rows) for rows in crops.values()) == 20 + 3  # 20 single faces and the group's 3


def make_sources(data_dir: Path, per_source: dict[str, int]) -> dict[str, dict[str, list[Path]]]:
    """data_dir/<source>/<class>/..., `n` distinct images per class in each source (facebench's layout)."""
    written = {}
    for source_index, (source, n) in enumerate(per_source.items()):
        written[source] = {
            label: [
                write_image(data_dir / source / label / f"{i:03d}.png", seed=10_000 * source_index + 1000 * c + i)
                for i in range(n)
            ]
            for c, label in enumerate(CLASSES)
        }
    return written


def test_records_keep_their_source_folder_and_a_flat_tree_has_none(tmp_path):
    make_sources(tmp_path / "sources", {"dev": 3, "sd21": 4})
    records, _ = scan(tmp_path / "sources")
    assert {r.source for r in records} == {"dev", "sd21"}
    assert all(r.path.startswith(f"{r.source}/{r.label}/") for r in records)
    make_tree(tmp_path / "flat", {"ai": 3, "real": 3})
    records, _ = scan(tmp_path / "flat")
    assert {r.source for r in records} == {""}


def test_test_sources_go_whole_to_test_and_the_other_sources_split_by_fraction(tmp_path):
    make_sources(tmp_path, {"dev": 20, "extra": 20, "sd21": 10})
    records, _ = scan(tmp_path)

    splits = split_manifest(records, FRACTIONS, seed=0, test_sources=["sd21"])

    held_out = sorted(r.path for r in records if r.source == "sd21")
    assert sorted(r.path for r in splits["test"] if r.source == "sd21") == held_out and len(held_out) == 20
    assert not any(r.source == "sd21" for name in ("train", "val") for r in splits[name])
    trained = [r for r in records if r.source != "sd21"]
    assert paths_by_split({name: [r for r in rows if r.source != "sd21"] for name, rows in splits.items()}) == (
        paths_by_split(split_manifest(trained, FRACTIONS, seed=0))  # as if the held-out source were not there
    )
    for label in CLASSES:  # 40 per class in the trained sources: 28 / 6 / 6
        for name, fraction in FRACTIONS.items():
            assert sum(r.label == label and r.source != "sd21" for r in splits[name]) == round(40 * fraction)
    counts = split_counts(splits, [], ["sd21"])
    assert counts["test_sources"] == {"sd21": {"ai": 10, "real": 10}}
    assert set(counts["trained_sources"]) == {"dev", "extra"}
    assert sum(n for source in counts["trained_sources"].values() for n in source["train"].values()) == 56


def test_no_test_sources_splits_exactly_as_before(tmp_path):
    make_sources(tmp_path, {"dev": 10, "extra": 10})
    records, _ = scan(tmp_path)
    assert split_manifest(records, FRACTIONS, seed=5, test_sources=[]) == split_manifest(records, FRACTIONS, seed=5)
    make_tree(tmp_path / "flat", {"ai": 20, "real": 20})
    records, _ = scan(tmp_path / "flat")
    counts = split_counts(split_manifest(records, FRACTIONS, seed=5), [])
    assert "trained_sources" not in counts and "test_sources" not in counts  # a flat tree has no sources to name


def test_bytes_in_a_held_out_and_a_trained_source_go_to_test_with_every_copy(tmp_path):
    written = make_sources(tmp_path, {"dev": 20, "sd21": 5})
    for i, original in enumerate(written["sd21"]["ai"][:3]):  # the generator's pictures also filed in dev
        shutil.copyfile(original, tmp_path / "dev" / "ai" / f"copied_{i}.png")
    records, _ = scan(tmp_path)
    copied = {r.sha256 for r in records if Path(r.path).name.startswith("copied_")}
    for seed in range(5):
        splits = split_manifest(records, FRACTIONS, seed, test_sources=["sd21"])
        in_test = [r for r in splits["test"] if r.sha256 in copied]
        assert len(in_test) == 6 and {r.source for r in in_test} == {"dev", "sd21"}  # no leak into train or val


@pytest.mark.parametrize(
    ("tree", "test_sources", "message"),
    [
        ("sources", ["sd22"], r"names 'sd22', not a source folder.*found: dev, sd21"),
        ("flat", ["sd21"], r"flat class-per-folder tree.*split.test_sources: \[\]"),
        ("sources", ["dev", "sd21"], r"holds out every source \(dev, sd21\).*nothing is left to train on"),
    ],
)
def test_bad_test_sources_are_a_clear_error(tmp_path, tree, test_sources, message):
    if tree == "flat":
        make_tree(tmp_path, {"ai": 20, "real": 20})
    else:
        make_sources(tmp_path, {"dev": 20, "sd21": 5})
    records, _ = scan(tmp_path)
    with pytest.raises(DatasetError, match=f"(?s){message}"):
        split_manifest(records, FRACTIONS, seed=0, test_sources=test_sources)


def test_crop_mode_carries_each_files_source_onto_its_crops(tmp_path):
    from aivsreal.faces import FaceBox
    from aivsreal.split import crop_faces

    class CentreFace:  # one face in the middle of every picture: the detector is not what is tested here
        def find(self, image):
            return [FaceBox(image.width // 4, image.height // 4, image.width // 2, image.height // 2)]

    for source_index, source in enumerate(("dev", "sd21")):
        for c, label in enumerate(CLASSES):
            for i in range(4):
                write_image(
                    tmp_path / "data" / source / label / f"{i}.png", (40, 40), seed=100 * source_index + 10 * c + i
                )
    records, _ = scan_dataset(tmp_path / "data", CLASSES, DEFAULT_MAX_PIXELS, root=tmp_path)
    splits = split_manifest(records, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0, test_sources=["sd21"])

    crops, _, _ = crop_faces(splits, tmp_path / "faces", 0.25, DEFAULT_MAX_PIXELS, finder=CentreFace(), root=tmp_path)

    for name in SPLITS:
        assert sorted(r.source for r in crops[name]) == sorted(r.source for r in splits[name])
    assert {r.source for r in crops["test"]} == {"dev", "sd21"} and all(r.source == "dev" for r in crops["train"])


def test_a_class_that_only_held_out_sources_have_is_an_error(tmp_path):
    make_sources(tmp_path, {"dev": 10, "sd21": 5})
    shutil.rmtree(tmp_path / "dev" / "real")
    records, _ = scan(tmp_path)
    with pytest.raises(DatasetError, match="class 'real' has 0 distinct usable images outside split.test_sources"):
        split_manifest(records, FRACTIONS, seed=0, test_sources=["sd21"])
