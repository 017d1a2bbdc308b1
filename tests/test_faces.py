"""Face finding: both detectors (data.face_detector: MTCNN from facenet-pytorch's wheel, OpenCV's bundled
Haar cascade) on real faces, offline.

The faces are scikit-image's LFW subset (real photos that ship inside the scikit-image wheel, with
100 non-face patches beside them), and facebench's faces when ../shared/facebench is present.
"""

from __future__ import annotations

import pytest
from conftest import PROJECT
from helpers_faces import assert_one_box_per_face, background, compose, group_and_wall, lfw_faces
from PIL import Image

from aivsreal.faces import DETECTORS, FaceBox, make_finder, square_crop

FACEBENCH = PROJECT.parent / "shared" / "facebench"


@pytest.fixture(scope="module", params=list(DETECTORS))
def finder(request):
    return make_finder(request.param)


@pytest.fixture(scope="module")
def lfw() -> tuple[list[Image.Image], list[Image.Image]]:
    return lfw_faces()


def test_finds_real_faces_and_not_the_non_face_patches(finder, lfw):
    faces, non_faces = lfw
    found = [len(finder.find(face)) for face in faces]
    assert sum(n == 1 for n in found) >= 90  # measured 98 (MTCNN) and 97 (Haar) of 100
    assert sum(len(finder.find(patch)) > 0 for patch in non_faces) <= 2  # measured 0 of 100 with both


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
def test_facebench_faces_composed_into_one_picture_are_each_found_and_judged(finder, tiny_crop_model_dir):
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
    from aivsreal.predictor import Predictor

    (answer,) = Predictor.from_dir(tiny_crop_model_dir).answer([picture])  # a crop-mode model: one answer per face
    assert_one_box_per_face([FaceBox(**face["box"]) for face in answer["faces"]], placed)
    assert all(face["label"] in ("ai", "real") for face in answer["faces"]) and answer["label"] in ("ai", "real")


@pytest.mark.skipif(not FACEBENCH.is_dir(), reason="../shared/facebench not present")
def test_mtcnn_finds_the_face_of_every_facebench_source_and_class_alike():
    """The default detector finds one face in (nearly) every face crop of each source, AI and real alike:
    a crop-mode split leaves out files without a face, so a class it misses more would be a shortcut
    (the Haar cascade missed 23 % of sd21/'s AI faces and 5 % of its real ones). 25 files per folder."""
    finder = make_finder("mtcnn")
    for source in ("dev", "extra", "sd21", "sd15"):
        found = {}
        for cls in ("ai", "real"):
            files = sorted((FACEBENCH / source / cls).glob("*.png"))[:25]
            found[cls] = sum(len(finder.find(Image.open(path))) == 1 for path in files) / len(files)
        assert min(found.values()) >= 0.92 and abs(found["ai"] - found["real"]) <= 0.08, (source, found)


def test_a_whole_picture_warning_only_when_the_picture_is_not_a_face():
    from aivsreal.faces import whole_picture_warning

    picture = Image.new("RGB", (400, 300))
    assert whole_picture_warning(picture, [FaceBox(0, 0, 200, 60)], 0.1) is None  # exactly 10 %: no warning
    small = whole_picture_warning(picture, [FaceBox(0, 0, 100, 100), FaceBox(0, 0, 10, 10)], 0.1)
    assert small.startswith("the largest face fills 8% of the picture") and "warned below 10%" in small
    assert whole_picture_warning(picture, [], 0.1).startswith("no face found")


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


def test_a_crop_mode_model_answers_per_face_and_summarises_the_picture_by_its_rule(tiny_crop_model_dir, tmp_path):
    """Predictor.answer, the path every interface takes: a crop-mode model finds the faces itself."""
    from aivsreal.faces import NO_FACE_WARNING
    from aivsreal.predictor import Predictor

    group_file, placed, wall_file = group_and_wall(tmp_path)
    predictor = Predictor.from_dir(tiny_crop_model_dir)
    group, wall = predictor.load(group_file), predictor.load(wall_file)
    answer, empty = predictor.answer([group, wall])
    assert_one_box_per_face([FaceBox(**face["box"]) for face in answer["faces"]], placed)
    p_ai = [face["p_ai"] for face in answer["faces"]]
    alone = predictor.predict_records([square_crop(group, FaceBox(**answer["faces"][0]["box"]), 0.25)])[0]
    assert alone["p_ai"] == pytest.approx(p_ai[0], abs=1e-6)  # each face judged on its own square crop
    assert answer["p_ai"] == max(p_ai)  # "any": the picture's probabilities are its most AI-like face's
    assert answer["label"] == ("ai" if any(face["label"] == "ai" for face in answer["faces"]) else "real")
    assert empty == {"label": None, "p_ai": None, "p_real": None, "warnings": [NO_FACE_WARNING],
                     "engine": predictor.engine, "expert": None, "expert_reason": None, "faces": []}  # fmt: skip
    predictor.config.face_summary = "all"
    assert predictor.answer([group])[0]["p_ai"] == min(p_ai)
    whole = predictor.answer([group], faces="whole")[0]  # the whole picture, one answer, no faces
    assert "faces" not in whole and whole["label"] in ("ai", "real")


def test_the_served_model_of_a_crop_mode_model_answers_faces_and_null_without_one(tiny_crop_model_dir, tmp_path):
    """The pyfunc (what `mlflow models serve` runs): a `faces` column, and JSON null, not NaN, for no face."""
    import json
    from types import SimpleNamespace

    import pandas as pd

    from aivsreal.serving.pyfunc import AiVsRealModel, encode_image, signature

    group_file, placed, wall_file = group_and_wall(tmp_path)
    model = AiVsRealModel()
    model.load_context(SimpleNamespace(artifacts={"config": str(tiny_crop_model_dir / "config.json")}))
    frame = pd.DataFrame({"image": [encode_image(group_file.read_bytes()), encode_image(wall_file.read_bytes())]})
    answers = json.loads(json.dumps(model.predict(None, frame).to_dict(orient="records"), allow_nan=False))
    assert_one_box_per_face([FaceBox(**face["box"]) for face in answers[0]["faces"]], placed)
    assert answers[1]["label"] is None and answers[1]["p_ai"] is None and answers[1]["faces"] == []
    assert answers[1]["warnings"][0].startswith("no face found")
    outputs = signature(["ai", "real"], "crop").outputs.input_names()
    assert outputs == ["label", "p_ai", "p_real", "warnings", "engine", "expert", "expert_reason", "faces"]
    assert outputs == list(answers[0])
    assert "faces" not in signature(["ai", "real"]).outputs.input_names()


def test_the_cli_follows_the_models_face_mode_and_whole_overrides_it(tiny_crop_model_dir, tmp_path, capsys):
    import json

    from aivsreal.serving.cli import main

    group_file, placed, wall_file = group_and_wall(tmp_path)
    files = [str(group_file), str(wall_file)]
    assert main(["--json", "--model", str(tiny_crop_model_dir), *files]) == 0  # no --faces: the model says crop
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["face"] for line in lines] == [1, 2, 3, None]
    assert_one_box_per_face([FaceBox(**line["box"]) for line in lines[:3]], placed)
    assert lines[3]["warnings"][0].startswith("no face found") and lines[3]["image_label"] is None
    assert main(["--json", "--whole", "--model", str(tiny_crop_model_dir), *files]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all("face" not in line and line["label"] in ("ai", "real") for line in lines)


def test_each_face_carries_the_warnings_of_the_file_it_was_cut_from(lossless_only_model_dir, tmp_path):
    """A face cut from a JPEG is still a re-compressed JPEG: a model that failed on such validation
    copies warns on every face of it (the crop keeps the file's format), and not on a PNG's faces."""
    import json
    import shutil

    from aivsreal.predictor import Predictor

    folder = tmp_path / "model"
    shutil.copytree(lossless_only_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"faces": "crop"}))
    group_file, _, _ = group_and_wall(tmp_path)
    predictor = Predictor.from_dir(folder)
    png = predictor.load(group_file)
    png.save(tmp_path / "group.jpg", quality=92)
    jpeg_answer, png_answer = predictor.answer([predictor.load(tmp_path / "group.jpg"), png])
    assert len(jpeg_answer["faces"]) == 3 and len(png_answer["faces"]) == 3
    assert all(any(w.startswith("re-compressed JPEG") for w in face["warnings"]) for face in jpeg_answer["faces"])
    assert all(face["warnings"] == [] for face in png_answer["faces"])
