"""Stage `split`: check every image under data.dir and write train/val/test manifests.

With data.faces: crop, the faces of each file are found and cropped into data/processed/faces/,
the manifests list the crops, files with no face are left out (split_summary.json says why) and
data/processed/faces.csv says how many faces each file gave. With data.faces: whole, that folder
holds only a README and faces.csv has its header only.

When data.dir is a folder of sources, the counts (split_summary.json, metrics/split.json) also say which
sources were trained on (`trained_sources`) and which split.test_sources held out whole (`test_sources`).

When data.dir holds its own train/, val/ (valid/, validation/) and test/ folders (split.mode: auto or
given), they are kept file for file (a missing val/ is carved from train/); identical files in two given
splits are counted and shown (`cross_split_duplicates`), not moved. split_summary.json also carries the
dataset card (dataset_card.py): formats, JPEG qualities and sizes per class, with a warning where the
classes differ."""

import csv
import logging
import shutil
import sys
from dataclasses import asdict, astuple, fields
from pathlib import Path

from aivsreal.dataset_card import dataset_card
from aivsreal.layout import given_split_folders, split_mode
from aivsreal.manifests import write_manifest
from aivsreal.split import (
    SPLITS,
    DatasetError,
    FileFaces,
    crop_faces,
    cross_split_duplicates,
    given_split,
    scan_dataset,
    scan_given_splits,
    split_counts,
    split_manifest,
)
from pipeline import stage
from pipeline.paths import FACE_CROPS, FACES_TABLE, MANIFESTS, METRICS, SPLIT_SUMMARY

log = logging.getLogger("pipeline.split")
WHOLE_MODE_NOTE = "data.faces: whole: whole pictures are judged; with data.faces: crop the face crops go here.\n"


def main(argv: list[str] | None = None) -> None:
    params = stage.start(__doc__, argv)
    fractions = {"train": params.split.train, "val": params.split.val, "test": params.split.test}
    data_dir, classes, seed, held_out = (
        Path(params.data.dir),
        params.data.class_names,
        params.split.seed,
        params.split.test_sources,
    )
    read = {
        "max_pixels": params.split.max_pixels,
        "min_side": params.model.min_side,
        "class_map": params.data.class_map,
    }
    try:
        layout, folders = split_mode(data_dir, params.split.mode), {}
        if layout == "given":
            folders = given_split_folders(data_dir)
            scanned, rejected = scan_given_splits(folders, classes, **read)
            splits = given_split(scanned, fractions, seed, held_out)
        else:
            records, rejected = scan_dataset(data_dir, classes, **read)
            splits = split_manifest(records, fractions, seed, held_out)
        duplicates = cross_split_duplicates(splits)
        card = dataset_card([r for rows in splits.values() for r in rows], classes, layout,
                            {name: folders[name].name for name in SPLITS if name in folders})  # fmt: skip
        per_file = []
        if params.data.faces == "crop":
            splits, no_face, per_file = crop_faces(splits, FACE_CROPS, params.data.face_margin, params.split.max_pixels,
                                                   detector=params.data.face_detector)  # fmt: skip
            rejected += no_face
        else:
            shutil.rmtree(FACE_CROPS, ignore_errors=True)
            FACE_CROPS.mkdir(parents=True)  # a DVC out either way (DVC warns about an empty one)
            (FACE_CROPS / "README.txt").write_text(WHOLE_MODE_NOTE)
    except DatasetError as error:
        sys.exit(f"split: {error}")
    with open(FACES_TABLE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([field.name for field in fields(FileFaces)])
        writer.writerows(astuple(row) for row in per_file)
    for name, rows in splits.items():
        write_manifest(MANIFESTS[name], rows)
    counts = split_counts(splits, rejected, params.split.test_sources)
    summary = {"data_dir": params.data.dir, "faces": params.data.faces, "layout": layout, "counts": counts,
               "cross_split_duplicates": duplicates, "dataset_card": card,
               "rejected": [asdict(r) for r in rejected]}  # fmt: skip
    if per_file:
        summary["faces_found"] = {  # crop mode: files by the number of faces found in them
            str(n): sum(row.faces == n for row in per_file) for n in sorted({row.faces for row in per_file})
        }
    stage.write_json(SPLIT_SUMMARY, summary)
    stage.write_json(METRICS / "split.json", counts)
    if layout == "given":
        log.info("kept the data's own splits: %s", ", ".join(f"{k} = {v}/" for k, v in card["split_folders"].items()))
    for name in MANIFESTS:
        log.info("%-5s %s", name, counts[name])
    if duplicates["images"]:
        log.warning("%d image(s) appear in more than one split (%s), e.g. %s: a test score counts them twice",
                    duplicates["images"], duplicates["pairs"], duplicates["examples"][0])  # fmt: skip
    for warning in card["warnings"]:
        log.warning("dataset card: %s: a detector can learn this instead of the faces", warning)
    if "trained_sources" in counts:
        log.info("trained on sources %s", ", ".join(counts["trained_sources"]))
        if counts["test_sources"]:
            log.info("held out in the test split: %s", counts["test_sources"])
    for r in rejected:
        log.warning("left out %s: %s", r.path, r.reason)
    if per_file:
        found = sum(row.faces for row in per_file)
        log.info("crop mode: %d faces found in %d files (per file: %s)", found, len(per_file), FACES_TABLE)
    log.info("%d images kept, %d left out (listed in %s)", counts["total_kept"], len(rejected), SPLIT_SUMMARY)
    if rejected:
        log.info("to include a left-out file, do what its reason says (or re-export it), then re-run the split")


if __name__ == "__main__":
    main()
