"""Face finding (issue 17): OpenCV's bundled Haar cascade on real faces, offline.

The faces are scikit-image's LFW subset (real photos that ship inside the scikit-image wheel, with
100 non-face patches beside them), and facebench's faces when ../shared/facebench is present.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PROJECT
from PIL import Image

from aivsreal.faces import FaceBox, FaceFinder, square_crop

FACEBENCH = PROJECT.parent / "shared" / "facebench"


@pytest.fixture(scope="module")
def finder() -> FaceFinder:
    return FaceFinder()


@pytest.fixture(scope="module")
def lfw() -> tuple[list[Image.Image], list[Image.Image]]:
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


def test_finds_real_faces_and_not_the_non_face_patches(finder, lfw):
    faces, non_faces = lfw
    found = [len(finder.find(face)) for face in faces]
    assert sum(n == 1 for n in found) >= 90  # measured 97 of 100
    assert sum(len(finder.find(patch)) > 0 for patch in non_faces) <= 2  # measured 0 of 100


def test_a_composed_picture_gives_one_box_on_each_face(finder, lfw):
    faces = [lfw[0][i] for i in (0, 5, 9)]
    picture, placed = compose(faces, 480, 220)
    assert_one_box_per_face(finder.find(picture), placed)


def test_a_picture_without_a_face_gives_no_box(finder):
    assert finder.find(background(400, 300, seed=3)) == []
    assert finder.find(Image.new("RGB", (64, 64), (128, 128, 128))) == []


def test_boxes_are_in_the_pixels_of_a_large_photo(finder, lfw):
    """A 4000 px photo is shrunk for detection; its boxes come back in its own pixels."""
    big_face = lfw[0][0].resize((600, 600), Image.BICUBIC)
    picture = background(4000, 2400)
    picture.paste(big_face, (2900, 1500))
    (box,) = finder.find(picture)
    assert 2900 <= box.center[0] <= 3500 and 1500 <= box.center[1] <= 2100 and box.width >= 250


def test_square_crop_is_square_holds_the_face_and_stays_inside():
    image = background(300, 200)
    for box in (FaceBox(10, 20, 60, 80), FaceBox(250, 150, 40, 40), FaceBox(100, 50, 80, 60)):
        crop = square_crop(image, box, margin=0.25)
        assert crop.width == crop.height == round(max(box.width, box.height) * 1.5)
    whole = square_crop(image, FaceBox(0, 0, 300, 200), margin=0.5)  # larger than the picture: its larger side
    assert whole.size == (300, 300)


@pytest.mark.skipif(not FACEBENCH.is_dir(), reason="../shared/facebench not present")
def test_facebench_faces_composed_into_one_picture_are_each_found(finder):
    """Three faces the detector finds on their own (an AI face among them) are all found, once each,
    side by side in one picture."""
    chosen = []
    for cls in ("real", "ai", "real"):
        for path in sorted((FACEBENCH / "dev" / cls).glob("*.png")):
            face = Image.open(path).convert("RGB").resize((160, 160), Image.BICUBIC)
            if path.name not in {name for name, _ in chosen} and len(finder.find(face)) == 1:
                chosen.append((path.name, face))
                break
    picture, placed = compose([face for _, face in chosen], 720, 300)
    assert_one_box_per_face(finder.find(picture), placed)


def test_image_verdict_follows_the_documented_rule():
    from aivsreal.faces import image_verdict

    faces = [{"label": "real"}, {"label": "ai"}, {"label": "real"}]
    assert image_verdict(faces, ["ai", "real"], "any") == "ai"  # one AI face makes the picture AI
    assert image_verdict(faces, ["ai", "real"], "all") == "real"
    assert image_verdict([{"label": "ai"}] * 2, ["ai", "real"], "all") == "ai"
    assert image_verdict([], ["ai", "real"]) is None  # no face: no verdict, never a guess
    with pytest.raises(ValueError, match="any, all"):
        image_verdict(faces, ["ai", "real"], "most")


def test_the_cli_answers_per_face_with_its_box_and_warns_when_there_is_none(tiny_model_dir, lfw, tmp_path, capsys):
    import csv
    import io
    import json

    from aivsreal.faces import NO_FACE_WARNING
    from aivsreal.serving.cli import main

    picture, placed = compose([lfw[0][i] for i in (0, 5, 9)], 480, 220)
    picture.save(tmp_path / "group.png")
    background(400, 300, seed=3).save(tmp_path / "wall.jpg", quality=90)
    files = [str(tmp_path / "group.png"), str(tmp_path / "wall.jpg")]

    assert main(["--faces", "--json", "--model", str(tiny_model_dir), *files]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    group = [line for line in lines if line["path"].endswith("group.png")]
    assert [line["face"] for line in group] == [1, 2, 3]
    boxes = [FaceBox(**line["box"]) for line in group]
    assert_one_box_per_face(boxes, placed)
    assert all(line["label"] in ("ai", "real") and abs(line["p_ai"] + line["p_real"] - 1) < 1e-6 for line in group)
    assert {line["image_label"] for line in group} == {"ai" if any(x["label"] == "ai" for x in group) else "real"}
    (wall,) = [line for line in lines if line["path"].endswith("wall.jpg")]
    assert wall["label"] is None and wall["box"] is None and wall["warnings"] == [NO_FACE_WARNING]

    assert main(["--faces", "--csv", "--model", str(tiny_model_dir), *files]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["face"] for row in rows] == ["1", "2", "3", ""] and rows[0]["left"] and rows[3]["left"] == ""

    assert main(["--faces", "--model", str(tiny_model_dir), *files]) == 0
    text = capsys.readouterr().out
    assert "group.png: 3 face(s) -> " in text and text.count("    face ") == 3 and "wall.jpg: no face found" in text
