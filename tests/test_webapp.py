"""The Streamlit page's logic with Streamlit's own AppTest and a tiny real model."""

from __future__ import annotations

import pytest
from conftest import PROJECT, png_bytes
from helpers_images import png_header_only
from streamlit.testing.v1 import AppTest

APP = str(PROJECT / "webapp" / "app.py")


def start(monkeypatch, model: str, tracking_uri: str | None = None) -> AppTest:
    monkeypatch.setenv("AIVSREAL_MODEL", model)
    if tracking_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    app = AppTest.from_file(APP, default_timeout=120)
    app.run()
    assert not app.exception, app.exception
    return app


def upload(app: AppTest, files: list[tuple[str, bytes, str]]) -> AppTest:
    app.file_uploader[0].set_value(files).run()
    assert not app.exception, app.exception
    return app


def test_no_model_yet_says_how_to_make_one(monkeypatch, tmp_path):
    app = start(monkeypatch, "models:/ai-vs-real@champion", f"sqlite:///{tmp_path / 'empty.db'}")
    assert any("make pipeline" in w.value for w in app.warning)
    assert len(app.file_uploader) == 0  # nothing to upload to until there is a model


def test_one_image_gets_verdict_probabilities_and_heatmap(monkeypatch, tiny_model_dir):
    app = start(monkeypatch, str(tiny_model_dir))
    assert any(w.value.startswith("Upload one or more") for w in app.info)
    app = upload(app, [("face.png", png_bytes(1), "image/png")])
    assert len(app.subheader) == 1 and app.subheader[0].value.startswith("Verdict:")
    bars = app.get("progress")
    assert len(bars) == 2
    p_ai, p_real = (float(bar.proto.value) / 100 for bar in bars)
    assert p_ai + p_real == pytest.approx(1, abs=0.02)
    assert "Grad-CAM" in app.get("image")[0].captions[0]
    card = " ".join(m.value for m in app.sidebar.markdown)
    assert "Decision threshold" in card and "0.50" in card
    assert "Input: RGB, 32 px centre crop of 32 px" in card  # INPUT_FILTERS["none"].description
    assert "Runs on: PyTorch (eager)" in card  # the tiny model has no ONNX graph


def test_heatmap_toggle_off_shows_the_plain_image(monkeypatch, tiny_model_dir):
    app = start(monkeypatch, str(tiny_model_dir))
    app.sidebar.toggle[0].set_value(False).run()
    app = upload(app, [("face.png", png_bytes(1), "image/png")])
    assert app.get("image")[0].captions[0] == "face.png"


def test_several_images_and_a_bad_file_each_get_an_answer(monkeypatch, tiny_model_dir):
    app = start(monkeypatch, str(tiny_model_dir))
    files = [
        ("one.png", png_bytes(1), "image/png"),
        ("notes.jpg", b"this is text, not a JPEG", "image/jpeg"),
        ("empty.png", b"", "image/png"),
        ("truncated.png", png_bytes(3)[:200], "image/png"),
        ("bomb.png", png_header_only(100_000, 100_000), "image/png"),
        ("two.png", png_bytes(2), "image/png"),
    ]
    app = upload(app, files)
    assert len(app.subheader) == 2  # both good images answered
    errors = [e.value for e in app.error]
    assert len(errors) == 4
    assert "notes.jpg" in errors[0] and "not an image" in errors[0]
    assert "empty.png" in errors[1] and "empty" in errors[1]
    assert "truncated.png" in errors[2] and "truncated" in errors[2]
    assert "bomb.png" in errors[3] and "too large" in errors[3]


def test_registered_model_shows_its_model_card(monkeypatch, tmp_path, tiny_model_dir):
    import mlflow
    import pandas as pd

    from aivsreal import tracking
    from aivsreal.serving.artifacts import log_pyfunc_model
    from aivsreal.serving.pyfunc import encode_image, signature

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure_tracking(uri)
    try:
        with mlflow.start_run(experiment_id=tracking.experiment_id("cards", tmp_path)):
            mlflow.log_params({"data.dir": "data/faces", "pretrained_used": "none"})
            mlflow.set_tags({"data_hash": "abc123", "git_commit": "f" * 40})
            mlflow.log_metrics({"test_accuracy": 0.875, "test_roc_auc": 0.93})
            example = pd.DataFrame({"image": [encode_image(png_bytes(5))]})
            info = log_pyfunc_model(tiny_model_dir, signature(["ai", "real"]), example, "faces")
        tracking.set_alias("faces", info.registered_model_version)
    finally:
        mlflow.set_tracking_uri(None)
    app = start(monkeypatch, "models:/faces@champion", uri)
    card = " ".join(m.value for m in app.sidebar.markdown)
    assert "**faces** version 1 (@champion)" in card
    assert "Test accuracy: 0.875" in card and "data/faces" in card and "Pretrained weights: none" in card
    app = upload(app, [("face.png", png_bytes(1), "image/png")])
    assert app.subheader[0].value.startswith("Verdict:")


def copy_with_config(model_dir, folder, **fields):
    """A copy of a saved model with some config.json fields changed."""
    import json
    import shutil

    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | fields))
    return folder


def test_uploads_outside_the_validated_range_are_flagged_and_tiny_ones_refused(monkeypatch, lossless_only_model_dir):
    """JPEG on a model that fails on JPEG, smaller than any validation image: warned; below min_side: refused."""
    import io

    from PIL import Image

    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(1, size=64))).save(jpeg, format="JPEG")
    app = start(monkeypatch, str(lossless_only_model_dir))
    files = [
        ("photo.jpg", jpeg.getvalue(), "image/jpeg"),
        ("small.png", png_bytes(2, size=40), "image/png"),
        ("fine.png", png_bytes(3, size=64), "image/png"),
        ("tiny.png", png_bytes(4, size=16), "image/png"),
        ("dot.png", png_bytes(5, size=1), "image/png"),
    ]
    app = upload(app, files)
    assert len(app.subheader) == 3  # every usable file still gets its verdict
    caveats = [c.value for c in app.caption if c.value.startswith("⚠️")]
    assert len(caveats) == 2
    assert "re-compressed JPEG" in caveats[0] and "50%" in caveats[0]
    assert "smaller than 48 px" in caveats[1]
    errors = [e.value for e in app.error]
    assert len(errors) == 2
    assert "tiny.png" in errors[0] and "16x16" in errors[0] and "at least 32 px" in errors[0]
    assert "dot.png" in errors[1] and "1x1" in errors[1]
    assert not any("demo model" in w.value for w in app.warning)


def test_a_picture_that_is_not_a_face_is_flagged_by_a_whole_picture_model(
    monkeypatch, tmp_path, lossless_only_model_dir
):
    """A whole-picture model (data.min_face_share 0.1, MTCNN) judges each upload but says so when no face is
    found or the face is small in the picture, and points to 'Find the faces'; a face that fills it: no caveat."""
    import io

    from helpers_faces import background, lfw_faces
    from PIL import Image

    def png(image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    face = lfw_faces()[0][0].resize((64, 64), Image.BICUBIC)
    far = background(320, 320, seed=5)
    far.paste(face, (200, 40))
    model = copy_with_config(lossless_only_model_dir, tmp_path / "whole", face_detector="mtcnn", min_face_share=0.1)
    app = start(monkeypatch, str(model))
    files = [(name, png(image), "image/png") for name, image in
             (("face.png", face), ("far.png", far), ("wall.png", background(200, 150, seed=3)))]  # fmt: skip
    app = upload(app, files)
    assert len(app.subheader) == 3  # each still gets its verdict
    caveats = [c.value for c in app.caption if c.value.startswith("⚠️")]
    assert len(caveats) == 2
    assert "the largest face fills 3% of the picture" in caveats[0] and "no face found" in caveats[1]
    assert all("the app's 'Find the faces'" in caveat for caveat in caveats)


def test_demo_model_says_so_on_the_page_and_in_the_card(monkeypatch, tmp_path, lossless_only_model_dir):
    app = start(monkeypatch, str(copy_with_config(lossless_only_model_dir, tmp_path / "demo", demo=True)))
    assert any("demo model trained on the built-in sample faces" in w.value for w in app.warning)
    assert "Demo model" in " ".join(m.value for m in app.sidebar.markdown)


def group_and_wall_uploads(folder) -> tuple[list[tuple[str, bytes, str]], list[tuple[int, int, int, int]]]:
    """group.png (3 real faces) and wall.jpg (no face) as uploads, and where the faces were pasted."""
    from helpers_faces import group_and_wall

    group, placed, wall = group_and_wall(folder)
    return [("group.png", group.read_bytes(), "image/png"), ("wall.jpg", wall.read_bytes(), "image/jpeg")], placed


def test_crop_model_finds_each_face_and_warns_on_a_picture_without_one(monkeypatch, tmp_path, tiny_crop_model_dir):
    """Issue 17: a model trained on face crops answers per face by default: the picture with its boxes,
    one expander per face with its own Grad-CAM and verdict; a picture with no face gets a warning."""
    from aivsreal.faces import NO_FACE_WARNING

    app = start(monkeypatch, str(tiny_crop_model_dir))
    assert app.sidebar.toggle[1].label == "Find the faces" and app.sidebar.toggle[1].value is True
    assert "Trained on: the faces found in each picture" in " ".join(m.value for m in app.sidebar.markdown)
    files, _ = group_and_wall_uploads(tmp_path)
    app = upload(app, files)
    titles = [e.label for e in app.expander]
    assert len(titles) == 3 and [t.split(":")[0] for t in titles] == ["Face 1", "Face 2", "Face 3"]
    for title in titles:
        assert title.split(": ")[1].split(" ")[0] in ("ai", "real") and "%)" in title
    assert any(m.value.startswith("**3 face(s) found.**") for m in app.markdown)
    # the picture's verdict, then one per face; the face-free wall gets none
    verdicts = [s.value for s in app.subheader]
    assert len(verdicts) == 4 and all(v.startswith("Verdict:") for v in verdicts)
    captions = [caption for image in app.get("image") for caption in image.captions]
    assert captions == ["group.png", "face 1: Grad-CAM", "face 2: Grad-CAM", "face 3: Grad-CAM", "wall.jpg"]
    bars = app.get("progress")
    assert len(bars) == 2 * 4  # p(ai), p(real) for the picture and for each face
    for p_ai, p_real in zip(bars[::2], bars[1::2]):
        assert (p_ai.proto.value + p_real.proto.value) / 100 == pytest.approx(1, abs=0.02)
    no_face = [w.value for w in app.warning if "no face found" in w.value]
    assert no_face == [f"**wall.jpg**: {NO_FACE_WARNING}"]
    assert not app.error


def test_whole_picture_model_finds_faces_only_when_asked(monkeypatch, tmp_path, tiny_model_dir):
    app = start(monkeypatch, str(tiny_model_dir))
    assert app.sidebar.toggle[1].label == "Find the faces" and app.sidebar.toggle[1].value is False
    files, _ = group_and_wall_uploads(tmp_path)
    app = upload(app, files)
    assert len(app.subheader) == 2 and not app.expander  # one verdict per picture, faces or not
    assert not any("no face found" in w.value for w in app.warning)
    app.sidebar.toggle[1].set_value(True).run()
    assert not app.exception, app.exception
    assert [e.label.split(":")[0] for e in app.expander] == ["Face 1", "Face 2", "Face 3"]
    assert any("wall.jpg" in w.value and "no face found" in w.value for w in app.warning)
