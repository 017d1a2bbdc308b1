"""Crop vs whole (issue 17): two models of the same data, one trained on the files as they are
(`data.faces: whole`) and one on the faces found in them (`data.faces: crop`), each judged both
ways on the same test files.

    make facebench                                  # in one clone: the whole-mode champion
    dvc exp run <the same flags> -S data.faces=crop # in another clone of the same commit: crop mode
    python benchmarks/crop_vs_whole.py --whole /tmp/fb --crop /tmp/fbc

Both projects split the same files with the same seed (crop mode splits files first, then finds the
faces), so their test files are the same; the script checks it. For each model and each way of
judging ("whole": the file as given; "crop": its faces found, each judged, the file's label by the
model's face_summary), on the test files as stored, re-saved as JPEG quality 75, and "in a photo"
(each face shrunk to 128 px and pasted at a random place in a 384 px crop of one of scikit-image's
face-free photos, as a face in a half-body portrait; every condition treats both classes alike and
comes before the faces are found): accuracy over every file (a file with no face found counts as
a miss: it got no verdict), accuracy over the files judged, and how many were judged; per source
folder (dev, extra, sd21) for the files as stored; and the face finder's time per file. The numbers
in benchmarks/RESULTS.md ("Crop vs whole") come from this script.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

from PIL import Image

from aivsreal.predictor import Predictor


def jpeg(image: Image.Image, quality: int = 75) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


PHOTO_SIDE, FACE_SIDE = 384, 128  # "in a photo": the face shrunk to 128 px in a 384 px picture


@functools.cache
def backgrounds() -> list[Image.Image]:
    """Face-free photos that ship with scikit-image (a coffee cup, a rocket, brick, grass, gravel, a
    galaxy field), as RGB."""
    from skimage import data

    pictures = [data.coffee(), data.rocket(), data.brick(), data.grass(), data.gravel(), data.hubble_deep_field()]
    return [Image.fromarray(p).convert("RGB") for p in pictures]


def in_a_photo(face: Image.Image, seed: int) -> Image.Image:
    """The face shrunk to FACE_SIDE px and pasted at a random place in a PHOTO_SIDE px crop of a real
    photo: a face that does not fill the frame, as in a half-body portrait (both classes alike)."""
    rng = random.Random(seed)
    photo = rng.choice(backgrounds())
    left, top = rng.randrange(photo.width - PHOTO_SIDE), rng.randrange(photo.height - PHOTO_SIDE)
    picture = photo.crop((left, top, left + PHOTO_SIDE, top + PHOTO_SIDE))
    small = face.resize((FACE_SIDE, FACE_SIDE), Image.BICUBIC)
    picture.paste(small, (rng.randrange(PHOTO_SIDE - FACE_SIDE), rng.randrange(PHOTO_SIDE - FACE_SIDE)))
    return picture


def test_files(crop_project: Path, whole_project: Path) -> list[tuple[str, str]]:
    """(path, label) of the crop project's test files (faces.csv), checked against the whole project's."""
    with open(crop_project / "data/processed/faces.csv", newline="") as handle:
        files = [(row["path"], row["label"]) for row in csv.DictReader(handle) if row["split"] == "test"]
    with open(whole_project / "plots/test_predictions.csv", newline="") as handle:
        whole = {row["path"] for row in csv.DictReader(handle)}
    if {path for path, _ in files} != whole:
        raise SystemExit("the two projects' test files differ: same data, seed and split params are needed")
    return files


def source_of(path: str) -> str:
    parts = Path(path).parts
    return parts[-3] if len(parts) >= 3 else "?"


def judge(predictor: Predictor, images: list[Image.Image], mode: str) -> list[str | None]:
    labels = []
    for start in range(0, len(images), 32):
        labels += [answer["label"] for answer in predictor.answer(images[start : start + 32], faces=mode)]
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whole", type=Path, required=True, help="project folder of the whole-mode run")
    parser.add_argument("--crop", type=Path, required=True, help="project folder of the crop-mode run")
    args = parser.parse_args()

    files = test_files(args.crop, args.whole)
    truth = [label for _, label in files]
    models = {"whole-trained": Predictor.from_dir(args.whole / "models/model"),
              "crop-trained": Predictor.from_dir(args.crop / "models/model")}  # fmt: skip
    for name, predictor in models.items():
        print(f"{name}: faces={predictor.config.faces}, engine={predictor.engine}")
    stored = [models["whole-trained"].load(path) for path, _ in files]
    conditions = {"as stored": stored, "JPEG q75": [jpeg(image) for image in stored],
                  "in a photo": [in_a_photo(image, seed) for seed, image in enumerate(stored)]}  # fmt: skip

    finder = models["crop-trained"].face_finder
    finder.find(stored[0])
    times = []
    for image in stored:
        started = time.perf_counter()
        finder.find(image)
        times.append((time.perf_counter() - started) * 1000)
    print(f"\nface finder: {statistics.median(times):.1f} ms per file (median over {len(times)} test files, "
          f"{stored[0].width}x{stored[0].height} px; mean {statistics.mean(times):.1f} ms)\n")  # fmt: skip

    print("| model | judged as | test files | accuracy (no face = miss) | judged | accuracy on judged |")
    print("|---|---|---|---|---|---|")
    per_source = {}
    for condition, images in conditions.items():
        for name, predictor in models.items():
            for mode in ("whole", "crop"):
                labels = judge(predictor, images, mode)
                judged = [(label, actual) for label, actual in zip(labels, truth) if label is not None]
                right = sum(label == actual for label, actual in judged)
                print(f"| {name} | {mode}, {condition} | {len(files)} | {right / len(files):.2%} | "
                      f"{len(judged)} | {right / max(1, len(judged)):.2%} |")  # fmt: skip
                if condition == "as stored":
                    per_source[(name, mode)] = labels

    print("\nper source, as stored: accuracy on judged files (judged / files)")
    sources = sorted({source_of(path) for path, _ in files})
    print("| model | judged as | " + " | ".join(sources) + " |")
    print("|---|---|" + "---|" * len(sources))
    for (name, mode), labels in per_source.items():
        cells = defaultdict(lambda: [0, 0, 0])
        for (path, actual), label in zip(files, labels):
            cell = cells[source_of(path)]
            cell[2] += 1
            if label is not None:
                cell[1] += 1
                cell[0] += label == actual
        row = [f"{c[0] / max(1, c[1]):.1%} ({c[1]}/{c[2]})" for c in (cells[s] for s in sources)]
        print(f"| {name} | {mode} | " + " | ".join(row) + " |")
    no_face = defaultdict(lambda: [0, 0])
    for (_, actual), label in zip(files, per_source[("crop-trained", "crop")]):
        no_face[actual][1] += 1
        no_face[actual][0] += label is None
    print("\nno face found, as stored, per class: "
          + ", ".join(f"{cls} {n}/{total}" for cls, (n, total) in sorted(no_face.items())))  # fmt: skip


if __name__ == "__main__":
    main()
