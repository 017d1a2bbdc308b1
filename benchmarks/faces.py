"""Face finding: recall, false boxes and time per image of the two detectors (`data.face_detector`).

    python benchmarks/faces.py                                  # ../shared/facebench and scikit-image's LFW
    python benchmarks/faces.py --facebench /path/to/faces       # a folder of sources, each with ai/ and real/
    python benchmarks/faces.py --detector mtcnn --pictures 30   # one detector, fewer composed pictures

For each detector (faces.make_finder with the settings the project ships):
- facebench's face crops (one face per file), per source and class: exactly one face found, none, more
  than one, and the class gap (AI files with no face minus real files with no face, in points): a
  detector that misses one class more than the other gives a crop-mode model a shortcut (a file with
  no face is left out of training) and leaves that class unjudged;
- composed pictures, facebench faces pasted on a textured background, by kind: `plain` (2-3 faces of
  100-200 px), `small` (3 faces of 40-64 px in a 640x480 picture), `turned` (2-3 faces rotated 20-35
  degrees or sheared), `covered` (2-3 faces with sunglasses, a mask or a hat drawn on), `crowd` (8
  faces of 60-90 px): faces found once, missed, and boxes on no face (or a second box on one);
- face-free pictures: textured backgrounds (640x480) and LFW's 100 non-face patches: pictures with a box;
- LFW's 100 faces (grown to 100 px): found once.
Times are medians per image on this machine. The numbers in benchmarks/RESULTS.md ("Face finding")
come from this script.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from aivsreal.faces import DETECTORS, make_finder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers_faces import background, lfw_faces  # noqa: E402  (the tests' textured background and LFW faces)

KINDS = ("plain", "small", "turned", "covered", "crowd")


def timed(finder, image: Image.Image, seconds: list[float]) -> list:
    started = time.perf_counter()
    boxes = finder.find(image)
    seconds.append(time.perf_counter() - started)
    return boxes


def crops_table(finder, facebench: Path) -> list[str]:
    rows = []
    for source in sorted(p for p in facebench.iterdir() if p.is_dir()):
        missed = {}
        for cls in ("ai", "real"):
            files = sorted((source / cls).glob("*.png"))
            seconds: list[float] = []
            counts = [len(timed(finder, Image.open(path).convert("RGB"), seconds)) for path in files]
            n = len(counts)
            one, none, many = (100 * sum(test(c) for c in counts) / n for test in (lambda c: c == 1, lambda c: c == 0,
                                                                                   lambda c: c > 1))  # fmt: skip
            missed[cls] = none
            gap = f"{missed['ai'] - missed['real']:+.1f}" if cls == "real" else ""
            rows.append(f"| {source.name}/{cls} | {n} | {one:.1f} % | {none:.1f} % | {many:.1f} % | {gap} | "
                        f"{1000 * statistics.median(seconds):.1f} ms |")  # fmt: skip
    return rows


def dress(face: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, Image.Image | None]:
    """The face changed as `kind` says: (RGB image, paste mask or None)."""
    if kind == "turned":
        rgba = face.convert("RGBA")
        if rng.random() < 0.5:
            turned = rgba.rotate(rng.choice((-1, 1)) * rng.uniform(20, 35), Image.BICUBIC, expand=True)
        else:
            shear = rng.choice((-1, 1)) * rng.uniform(0.25, 0.4)
            width = face.width + round(abs(shear) * face.height)
            offset = -shear * face.height if shear > 0 else 0
            turned = rgba.transform((width, face.height), Image.AFFINE, (1, shear, offset, 0, 1, 0), Image.BICUBIC)
        return turned.convert("RGB"), turned.getchannel("A")
    if kind == "covered":
        face = face.copy()
        draw, w, h = ImageDraw.Draw(face), face.width, face.height
        cover = rng.choice(("sunglasses", "mask", "hat"))
        if cover == "sunglasses":
            draw.rounded_rectangle((0.2 * w, 0.36 * h, 0.8 * w, 0.5 * h), radius=0.05 * w, fill=(15, 15, 20))
        elif cover == "mask":
            draw.rectangle((0.22 * w, 0.6 * h, 0.78 * w, 0.92 * h), fill=(170, 200, 225))
        else:
            draw.rectangle((0.05 * w, 0.0, 0.95 * w, 0.3 * h), fill=(90, 60, 40))
        return face, None
    return face, None


def compose_kind(kind: str, pool: list[Path], rng: random.Random, number: int):
    """A picture of `kind` and where each face was pasted: (picture, [(left, top, right, bottom)])."""
    count, sizes, width, height = {
        "plain": (rng.choice((2, 3)), (100, 200), None, 320),
        "small": (3, (40, 64), 640, 480),
        "turned": (rng.choice((2, 3)), (100, 180), None, 320),
        "covered": (rng.choice((2, 3)), (100, 180), None, 320),
        "crowd": (8, (60, 90), 640, 360),
    }[kind]
    faces = []
    for _ in range(count):
        size = rng.randint(*sizes)
        face = Image.open(rng.choice(pool)).convert("RGB").resize((size, size), Image.BICUBIC)
        faces.append(dress(face, kind, rng))
    columns = 4 if kind == "crowd" else count
    rows = 2 if kind == "crowd" else 1
    cell_w = (width or 260 * count) // columns
    cell_h = height // rows
    picture = background(cell_w * columns, height, seed=number)
    placed = []
    for i, (face, mask) in enumerate(faces):
        column, row = i % columns, i // columns
        left = column * cell_w + rng.randint(0, max(0, cell_w - face.width))
        top = row * cell_h + rng.randint(0, max(0, cell_h - face.height))
        picture.paste(face, (left, top), mask)
        placed.append((left, top, left + face.width, top + face.height))
    return picture, placed


def composed_row(finder, kind: str, pool: list[Path], pictures: int) -> str:
    rng = random.Random(f"{kind}-0")  # the same pictures for every detector
    found = missed = extra = total = 0
    seconds: list[float] = []
    for number in range(pictures):
        picture, placed = compose_kind(kind, pool, rng, number)
        boxes = timed(finder, picture, seconds)
        hits = [[b for b in boxes if x0 <= b.center[0] <= x1 and y0 <= b.center[1] <= y1] for x0, y0, x1, y1 in placed]
        total += len(placed)
        found += sum(len(h) == 1 for h in hits)
        missed += sum(len(h) == 0 for h in hits)
        extra += len(boxes) - sum(len(h) for h in hits) + sum(max(len(h) - 1, 0) for h in hits)
    return (f"| {kind} | {pictures} | {total} | {found} ({100 * found / total:.1f} %) | {missed} | {extra} | "
            f"{1000 * statistics.median(seconds):.0f} ms |")  # fmt: skip


def face_free_row(finder, pictures: int) -> str:
    walls = sum(bool(finder.find(background(640, 480, seed=1000 + i))) for i in range(pictures))
    _, non_faces = lfw_faces()
    patches = sum(bool(finder.find(patch)) for patch in non_faces)
    faces, _ = lfw_faces()
    once = sum(len(finder.find(face)) == 1 for face in faces)
    return (f"face-free: {walls}/{pictures} backgrounds and {patches}/{len(non_faces)} LFW non-face patches with a "
            f"box; LFW faces found once: {once}/{len(faces)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facebench", type=Path, default=ROOT.parent / "shared" / "facebench")
    parser.add_argument("--detector", choices=list(DETECTORS), action="append", help="default: both")
    parser.add_argument("--pictures", type=int, default=60, help="composed pictures per kind, and face-free ones")
    args = parser.parse_args()
    if not args.facebench.is_dir():
        raise SystemExit(f"{args.facebench} not found: pass --facebench (a folder of sources with ai/ and real/)")
    import cv2
    import torch

    print(f"# OpenCV {cv2.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    pool = sorted(args.facebench.glob("*/*/*.png"))
    for name in args.detector or list(DETECTORS):
        finder = make_finder(name)
        print(f"\n## {name}\n")
        print("| face crops | files | one face | none | more than one | AI none - real none (points) | median time |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(crops_table(finder, args.facebench)))
        print("\n| composed | pictures | faces | found once | missed | boxes on no face | median time |")
        print("|---|---|---|---|---|---|---|")
        for kind in KINDS:
            print(composed_row(finder, kind, pool, args.pictures), flush=True)
        print("\n" + face_free_row(finder, args.pictures))


if __name__ == "__main__":
    main()
