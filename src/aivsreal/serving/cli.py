"""Command-line predictor: label and class probabilities for image files and folders.

python -m aivsreal.serving.cli face1.jpg face2.png                 # the champion (params.yaml's model)
python -m aivsreal.serving.cli photos/                              # every image below the folder
python -m aivsreal.serving.cli --model models/model face.jpg       # the train stage's output folder
python -m aivsreal.serving.cli --model models:/ai-vs-real/3 --json *.png    # one JSON object per line
python -m aivsreal.serving.cli --csv photos/ > scores.csv
python -m aivsreal.serving.cli --faces group.jpg                   # find the faces, judge each one

A model trained with `data.faces: crop` finds the faces of each image (its `data.face_detector`:
MTCNN or OpenCV's Haar cascade, faces.py), crops each square with a margin and judges each one: one answer per face with
its box, and the image's label by the model's `face_summary` (any: AI if any face is judged AI;
all: only if every face is). An image with no face found gets a warning, not a verdict.
--faces does the same with any model (one trained on face crops judges the faces of a group
photo); --whole judges the whole picture whatever the model says. A whole-picture answer carries a
warning when no face is found in the picture or the largest fills less than the model's
`data.min_face_share` of it: such a model was trained on pictures a face fills.

The registered model is looked up in MLFLOW_TRACKING_URI, else in the project this is run from
(the nearest folder above holding dvc.yaml), else in the project the package was installed from;
a missing store is an error, never created. Each answer carries `warnings` when the image lies
outside what the model was validated on (re-compressed JPEG on a model that fails on them,
smaller than any validation image); files that cannot be judged (not an image, too small) are
skipped with the reason on stderr and the exit status is 1. A demo model (trained on the built-in
sample) says so once on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from aivsreal.experts import SINGLE

PROGRESS_FROM = 20  # files: fewer finish before a progress bar would help


def expand(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given, folders as every image file below them: (to score, [(path, reason) skipped])."""
    from aivsreal.images import IMAGE_SUFFIXES, list_image_files

    files, skipped = [], []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            files.append(given)
            continue
        found, passed_over = list_image_files(path)
        files += [str(p) for p in sorted(found) if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [(str(p), reason) for p, reason in passed_over]
        if not found:
            skipped.append((given, "folder holds no image files"))
    return files, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aivsreal.serving.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, WebP, ...) or folders of them")
    parser.add_argument(
        "--model", help="MLflow model URI or saved model folder (default: params.yaml's registered model @champion)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object per line")
    output.add_argument(
        "--csv",
        action="store_true",
        help="print CSV: path, label, p_<class>..., warnings, engine, expert, expert_reason",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--faces", action="store_true", help="find the faces in each image and judge each one")
    mode.add_argument("--whole", action="store_true", help="judge each whole image (even with a crop-mode model)")
    parser.add_argument("--margin", type=float, help="face mode: margin around a face, share of its side")
    parser.add_argument("--summary", choices=["any", "all"],
                        help="face mode: the image is AI if any face (any) or every face (all) is")  # fmt: skip
    args = parser.parse_args(argv)

    from aivsreal.images import BadImageError
    from aivsreal.serving.artifacts import load_predictor  # after --help: importing torch takes a moment

    model = args.model
    if model is None:
        from aivsreal.tracking import default_model_uri  # imports MLflow, which a registered model needs anyway

        try:
            model = default_model_uri()
        except FileNotFoundError as error:
            print(error, file=sys.stderr)
            return 2
    try:
        predictor = load_predictor(model)
    except Exception as error:
        from aivsreal.tracking import NO_MODEL_HINT

        print(f"cannot load model {model!r}: {error}\n{NO_MODEL_HINT}, or pass --model models/model.", file=sys.stderr)
        return 2
    if predictor.config.demo:
        from aivsreal.input_range import DEMO_NOTICE

        print(f"note: this is a {DEMO_NOTICE}", file=sys.stderr)
    files, skipped = expand(args.images)
    for path, reason in skipped:
        print(f"{path}: skipped: {reason}", file=sys.stderr)
    failures = len(skipped)
    faces = "crop" if args.faces else "whole" if args.whole else predictor.config.faces
    if args.margin is not None:
        predictor.config.face_margin = args.margin
    if args.summary is not None:
        predictor.config.face_summary = args.summary
    writer = None
    if args.csv:
        fields = ["path", "label", *[f"p_{name}" for name in predictor.class_names], "warnings", "engine", "expert",
                  "expert_reason"]  # fmt: skip
        if faces == "crop":
            fields = ["path", "face", "left", "top", "width", "height", *fields[1:], "image_label"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
    from tqdm import tqdm

    for path in tqdm(files, desc="scoring", unit="img", file=sys.stderr, disable=len(files) < PROGRESS_FROM or None):
        try:
            image = predictor.load(path)
        except BadImageError as error:
            failures += 1
            tqdm.write(f"{path}: skipped: {error}", file=sys.stderr)
            continue
        record = predictor.answer([image], faces)[0]
        if faces == "crop":
            print_faces(predictor, path, record, args, writer)
            continue
        if args.json:
            print(json.dumps({"path": path, **record}), flush=True)
        elif writer is not None:
            writer.writerow({"path": path, **record, "warnings": "; ".join(record["warnings"])})
        else:
            probabilities = "  ".join(f"{k}={v:.3f}" for k, v in record.items() if k.startswith("p_"))
            tqdm.write(f"{path}: {record['label']}  ({probabilities})", file=sys.stdout)
            if record["expert"] != SINGLE:
                tqdm.write(f"    expert: {record['expert']} ({record['expert_reason']})", file=sys.stdout)
            for warning in record["warnings"]:
                tqdm.write(f"    warning: {warning}", file=sys.stdout)
    return 1 if failures else 0


def print_faces(predictor, path: str, answer: dict, args, writer) -> None:
    """Face mode: one answer per face found (text, JSON line or CSV row), or the no-face warning."""
    from tqdm import tqdm

    verdict, faces = answer["label"], answer["faces"]
    if not faces:  # an answer of its own: the image was read, and holds nothing to judge
        faces_out = [{"face": None, "box": None, **{k: v for k, v in answer.items() if k not in ("faces", "label")},
                      "label": None}]  # fmt: skip
    else:
        faces_out = [{"face": number, **face} for number, face in enumerate(faces, start=1)]
    if args.json:
        for face in faces_out:
            print(json.dumps({"path": path, **face, "image_label": verdict}), flush=True)
    elif writer is not None:
        for face in faces_out:
            box = face.pop("box") or {}
            writer.writerow(
                {"path": path, **face, **box, "warnings": "; ".join(face["warnings"]), "image_label": verdict}
            )
    elif not faces:
        tqdm.write(f"{path}: {answer['warnings'][0]}", file=sys.stdout)
    else:
        rule = {"any": "if any face is", "all": "if every face is"}[predictor.config.face_summary]
        tqdm.write(f"{path}: {len(faces)} face(s) -> {verdict}  ({predictor.class_names[0]} {rule})", file=sys.stdout)
        for face in faces_out:
            box = face["box"]
            probabilities = "  ".join(f"{k}={v:.3f}" for k, v in face.items() if k.startswith("p_"))
            where = f"{box['left']},{box['top']} {box['width']}x{box['height']}"
            tqdm.write(f"    face {face['face']} at {where}: {face['label']}  ({probabilities})", file=sys.stdout)
            if face["expert"] != SINGLE:
                tqdm.write(f"        expert: {face['expert']} ({face['expert_reason']})", file=sys.stdout)
            for warning in face["warnings"]:
                tqdm.write(f"        warning: {warning}", file=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
