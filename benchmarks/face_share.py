"""Where a whole-picture model stops working: accuracy against how much of the picture the face fills.

    python benchmarks/face_share.py --model runs/wild/dev --faces ../shared/facebench/dev
    python benchmarks/face_share.py --model models/model --faces data/sample --fractions 1 0.5 0.25

Each face file of `--faces` (ai/ and real/) is pasted at its own size on a larger textured, face-free
background (the tests' helpers_faces.background) so that the face file's side is a given fraction of
the picture's side (1 = the file as stored), at a random place, and the whole picture is judged by the
model (`data.faces: whole`), both classes alike. Prints, per fraction: accuracy, ROC AUC, and the share
of the picture the largest face found covers (median, with the detector of `--detector`): the number
`data.min_face_share` compares with. The table in benchmarks/RESULTS.md ("Face finding") comes from it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers_faces import background  # noqa: E402

from aivsreal.faces import DETECTORS, make_finder  # noqa: E402


def compose_at(face: Image.Image, fraction: float, rng: random.Random, seed: int) -> Image.Image:
    if fraction >= 1:
        return face
    side = round(max(face.size) / fraction)
    picture = background(side, side, seed=seed)
    picture.paste(face, (rng.randint(0, side - face.width), rng.randint(0, side - face.height)))
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a saved whole-picture model folder")
    parser.add_argument("--faces", type=Path, required=True, help="a folder with ai/ and real/ face files")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1, 0.8, 0.67, 0.5, 0.4, 0.33, 0.25])
    parser.add_argument("--detector", choices=list(DETECTORS), default="mtcnn")
    parser.add_argument("--limit", type=int, default=200, help="files per class at most")
    args = parser.parse_args()
    from aivsreal.predictor import Predictor

    predictor = Predictor.from_dir(args.model)
    finder = make_finder(args.detector)
    files = [(path, cls) for cls in ("ai", "real") for path in sorted((args.faces / cls).glob("*"))[: args.limit]]
    labels = np.array([cls == predictor.class_names[0] for _, cls in files])
    print(f"# {args.model} on {args.faces}: {len(files)} files, detector {args.detector}")
    print("| face side / picture side | picture side | accuracy | ROC AUC | largest face box / picture (median) "
          "| no face found |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for fraction in args.fractions:
        rng = random.Random(f"{fraction}")
        faces = [Image.open(path).convert("RGB") for path, _ in files]
        pictures = [compose_at(face, fraction, rng, seed) for seed, face in enumerate(faces)]
        p_ai = predictor.predict_proba(pictures)[:, 0]
        said_ai = np.array(predictor.labels(predictor.predict_proba(pictures))) == predictor.class_names[0]
        accuracy = float((said_ai == labels).mean())
        shares, none = [], 0
        for picture in pictures:
            boxes = finder.find(picture)
            none += not boxes
            if boxes:
                shares.append(boxes[0].width * boxes[0].height / (picture.width * picture.height))
        share = f"{100 * statistics.median(shares):.1f} %" if shares else "-"
        print(f"| {fraction:.2f} | {pictures[0].width} px | {accuracy:.3f} | {roc_auc_score(labels, p_ai):.3f} | "
              f"{share} | {none} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
