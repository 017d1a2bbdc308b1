"""Face finding (issue 17): recall and time per image of faces.FaceFinder on real faces, in one run.

    python benchmarks/faces.py                                  # ../shared/facebench and scikit-image's LFW
    python benchmarks/faces.py --facebench /path/to/faces       # a folder of sources, each with ai/ and real/

Three kinds of input:
- facebench's face crops (one face per file, per source and class): how often exactly one face is
  found, none, or more than one; per class, because a detector that misses one class's faces more
  often would give a crop-mode model a shortcut (a file with no face is left out of training);
- LFW (scikit-image's 100 faces and 100 non-face patches, grown to 100 px): recall and false alarms;
- composed pictures: 2-3 facebench faces of 100-200 px pasted on a textured background, each face one
  the detector finds on its own: faces found once, faces missed, boxes on no face.
Each for OpenCV's suggested min_neighbors (5) and the one faces.py uses (8). The numbers in
benchmarks/RESULTS.md ("Face finding") come from this script.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from aivsreal.faces import FaceFinder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_faces import background  # noqa: E402  (the tests' textured background)


def crops_table(finder: FaceFinder, facebench: Path) -> list[str]:
    rows = []
    for source in sorted(p for p in facebench.iterdir() if p.is_dir()):
        for cls in ("ai", "real"):
            files = sorted((source / cls).glob("*.png"))
            counts, seconds = [], []
            for path in files:
                image = Image.open(path).convert("RGB")
                started = time.perf_counter()
                counts.append(len(finder.find(image)))
                seconds.append(time.perf_counter() - started)
            n = len(counts)
            one, none, many = (100 * sum(test(c) for c in counts) / n for test in (lambda c: c == 1, lambda c: c == 0,
                                                                                   lambda c: c > 1))  # fmt: skip
            rows.append(f"| {source.name}/{cls} | {n} | {one:.1f} % | {none:.1f} % | {many:.1f} % | "
                        f"{1000 * statistics.median(seconds):.1f} ms |")  # fmt: skip
    return rows


def lfw_row(finder: FaceFinder) -> str:
    from skimage.data import lfw_subset

    patches = [Image.fromarray((p * 255).astype(np.uint8)).convert("RGB").resize((100, 100), Image.BICUBIC)
               for p in lfw_subset()]  # fmt: skip
    found = sum(len(finder.find(p)) == 1 for p in patches[:100])
    alarms = sum(len(finder.find(p)) > 0 for p in patches[100:])
    return f"LFW: {found}/100 faces found once, {alarms}/100 non-face patches with a box"


def composed_row(finder: FaceFinder, facebench: Path, pictures: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    pool = sorted(facebench.glob("*/*/*.png"))
    found = missed = extra = total = 0
    seconds = []
    for number in range(pictures):
        faces = []
        while len(faces) < rng.choice((2, 3)):
            size = rng.randint(100, 200)
            face = Image.open(rng.choice(pool)).convert("RGB").resize((size, size), Image.BICUBIC)
            if len(finder.find(face)) == 1:  # only faces it finds alone: the test is what composing loses
                faces.append(face)
        width, height = 250 * len(faces), 320
        picture = background(width, height, seed=number)
        placed = []
        for i, face in enumerate(faces):
            left = i * 250 + rng.randint(0, 250 - face.width)
            top = rng.randint(0, height - face.height)
            picture.paste(face, (left, top))
            placed.append((left, top, left + face.width, top + face.height))
        started = time.perf_counter()
        boxes = finder.find(picture)
        seconds.append(time.perf_counter() - started)
        hits = [[b for b in boxes if x0 <= b.center[0] <= x1 and y0 <= b.center[1] <= y1] for x0, y0, x1, y1 in placed]
        total += len(placed)
        found += sum(len(h) == 1 for h in hits)
        missed += sum(len(h) == 0 for h in hits)
        extra += len(boxes) - sum(len(h) for h in hits) + sum(max(len(h) - 1, 0) for h in hits)
    median_ms = 1000 * statistics.median(seconds)
    return (f"composed: {pictures} pictures, {total} faces: {found} found once, {missed} missed, {extra} boxes on "
            f"no face (or a second box on one); {median_ms:.1f} ms per picture (median)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facebench", type=Path, default=ROOT.parent / "shared" / "facebench")
    parser.add_argument("--pictures", type=int, default=100, help="composed multi-face pictures")
    args = parser.parse_args()
    if not args.facebench.is_dir():
        raise SystemExit(f"{args.facebench} not found: pass --facebench (a folder of sources with ai/ and real/)")
    import cv2

    print(f"# OpenCV {cv2.__version__}, Haar cascade frontalface_default, border 0.25, min face 32 px")
    for min_neighbors in (5, 8):
        finder = FaceFinder(min_neighbors=min_neighbors)
        print(f"\n## min_neighbors {min_neighbors}")
        print("| face crops | files | one face | none | more than one | median time |")
        print("|---|---|---|---|---|---|")
        print("\n".join(crops_table(finder, args.facebench)))
        print(lfw_row(finder))
        print(composed_row(finder, args.facebench, args.pictures))


if __name__ == "__main__":
    main()
