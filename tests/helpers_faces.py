"""Real faces for the face-finding tests (issue 17): scikit-image's LFW subset, offline, and pictures
composed from them with known face positions."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from aivsreal.faces import FaceBox


@functools.cache
def lfw_faces() -> tuple[list[Image.Image], list[Image.Image]]:
    """(100 faces, 100 non-faces) from LFW as 100 px RGB images (25 px as shipped: too small to judge)."""
    from skimage.data import lfw_subset

    patches = [Image.fromarray((patch * 255).astype(np.uint8)).convert("RGB") for patch in lfw_subset()]
    grown = [patch.resize((100, 100), Image.BICUBIC) for patch in patches]
    return grown[:100], grown[100:]


def background(width: int, height: int, seed: int = 0) -> Image.Image:
    """A textured, face-free background: smooth colour noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 200, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


def compose(faces: list[Image.Image], width: int, height: int) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """The faces pasted side by side on a background; (picture, [(left, top, right, bottom) of each face])."""
    picture = background(width, height)
    placed, step = [], width // len(faces)
    for i, face in enumerate(faces):
        left, top = i * step + (step - face.width) // 2, (height - face.height) // 2 + (20 if i % 2 else -20)
        picture.paste(face, (left, top))
        placed.append((left, top, left + face.width, top + face.height))
    return picture, placed


def assert_one_box_per_face(boxes: list[FaceBox], placed: list[tuple[int, int, int, int]]) -> None:
    assert len(boxes) == len(placed), (boxes, placed)
    for left, top, right, bottom in placed:  # each pasted face holds the centre of exactly one box
        inside = [b for b in boxes if left <= b.center[0] <= right and top <= b.center[1] <= bottom]
        assert len(inside) == 1, (boxes, (left, top, right, bottom))
        assert inside[0].width >= 0.4 * (right - left)  # the face, not a detail of it


def group_and_wall(folder) -> tuple[object, list[tuple[int, int, int, int]], object]:
    """Two files in `folder`: group.png, 3 LFW faces on a background (with where each face was pasted),
    and wall.jpg, a picture with no face. (group path, face places, wall path)."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    faces, _ = lfw_faces()
    picture, placed = compose([faces[i] for i in (0, 5, 9)], 480, 220)
    picture.save(folder / "group.png")
    background(400, 300, seed=3).save(folder / "wall.jpg", quality=90)
    return folder / "group.png", placed, folder / "wall.jpg"
