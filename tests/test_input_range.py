"""Answers a person can trust: inputs too small to judge are refused, and inputs outside what the model
was validated on carry the same `warnings` from every interface: the library, the CLI, the real `mlflow
models serve`, the guarded server and Spark batch scoring (the app: test_webapp.py). Among them, a
whole-picture model's warning for a picture that is not a face: none found, or a small face in a large
picture (data.min_face_share); a face that fills the picture gets none."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from conftest import PROJECT, champion_store, free_port, isolated_env, running_server
from helpers_faces import background, lfw_faces
from helpers_images import encode, random_image, write_image
from PIL import Image

from aivsreal.images import SOURCE_FORMAT, load_image
from aivsreal.input_range import DEMO_NOTICE, TooSmallError, input_warnings, refuse_if_too_small
from aivsreal.model import ModelConfig

MODEL = "models:/ai-vs-real@champion"
PHOTO = lfw_faces()[0][0].resize((64, 64), Image.BICUBIC)  # a real face that fills the picture
FAR = background(320, 320, seed=5)
FAR.paste(PHOTO, (200, 40))  # the same face, in a picture it fills 3 % of
FILES = {  # name -> bytes: what a user may send
    "photo.jpg": encode(PHOTO, "JPEG", quality=90),
    "photo.png": encode(PHOTO, "PNG"),
    "photo.webp": encode(PHOTO, "WEBP", quality=80),
    "small.png": encode(random_image((40, 40), seed=2), "PNG"),
    "tiny.png": encode(random_image((16, 16), seed=3), "PNG"),
    "dot.png": encode(random_image((1, 1), seed=4), "PNG"),
    "far.png": encode(FAR, "PNG"),
    "wall.png": encode(background(200, 150, seed=3), "PNG"),
}
JPEG_WARNING = "re-compressed JPEG: this model scored 50% on such images in validation (100% on the originals)"
SMALL_WARNING = "smaller than 48 px (40x40): this model was not validated on images this small"
NO_FACE = ("no face found: this model judges pictures of one face, its answer here says little; "
           "find the faces first (CLI --faces, the app's 'Find the faces')")  # fmt: skip
FAR_FACE = ("the largest face fills 3% of the picture (this model judges pictures the face fills, warned below "
            "10%): its answer is about the picture, not the face; find the faces first (CLI --faces, the app's "
            "'Find the faces')")  # fmt: skip
EXPECTED = {"photo.jpg": [JPEG_WARNING], "photo.png": [], "small.png": [SMALL_WARNING, NO_FACE], "far.png": [FAR_FACE],
            "wall.png": [NO_FACE]}  # fmt: skip


@pytest.fixture(scope="module")
def face_aware_model_dir(lossless_only_model_dir, tmp_path_factory) -> Path:
    """The lossless-only model as a model trained now saves it: MTCNN, warned below 10 % of the picture."""
    folder = tmp_path_factory.mktemp("face_aware_model")
    shutil.copytree(lossless_only_model_dir, folder, dirs_exist_ok=True)
    saved = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(saved | {"face_detector": "mtcnn", "min_face_share": 0.1}))
    return folder


@pytest.fixture(scope="module")
def face_aware_store(face_aware_model_dir, tmp_path_factory) -> str:
    return champion_store(tmp_path_factory.mktemp("face_aware_store"), face_aware_model_dir)


def config(**fields) -> ModelConfig:
    """A lossless-only model's config (as conftest's lossless_only_model_dir), with `fields` changed."""
    validated = {"min_side": 48, "accuracy": {"none": 1.0, "jpeg": 0.5, "webp": 0.97}}
    base = {"class_names": ["ai", "real"], "hidden": 8, "dropout": 0.0, "image_size": 32, "resize": 32,
            "min_side": 32, "validated": validated}  # fmt: skip
    return ModelConfig(**(base | fields))


def test_decoding_remembers_the_file_format():
    assert load_image(FILES["photo.jpg"]).info[SOURCE_FORMAT] == "JPEG"
    assert load_image(FILES["photo.webp"]).info[SOURCE_FORMAT] == "WEBP"
    assert load_image(FILES["photo.png"]).info[SOURCE_FORMAT] == "PNG"


def test_warnings_follow_what_validation_measured():
    lossless_only = config()
    assert input_warnings(load_image(FILES["photo.jpg"]), lossless_only) == [JPEG_WARNING]
    assert input_warnings(load_image(FILES["photo.png"]), lossless_only) == []
    assert input_warnings(load_image(FILES["photo.webp"]), lossless_only) == []  # 97 %: within the allowed drop
    assert input_warnings(load_image(FILES["small.png"]), lossless_only) == [SMALL_WARNING]
    robust = config(validated={"min_side": 32, "accuracy": {"none": 0.7, "jpeg": 0.69, "webp": 0.7}})
    assert input_warnings(load_image(FILES["photo.jpg"]), robust) == []  # a model that holds on JPEG: no warning
    assert input_warnings(load_image(FILES["small.png"]), robust) == []
    assert input_warnings(load_image(FILES["photo.jpg"]), config(validated={})) == []  # nothing measured, no claim


@pytest.mark.parametrize("name, size", [("tiny.png", "16x16"), ("dot.png", "1x1")])
def test_too_small_images_are_refused_with_the_reason(name, size):
    with pytest.raises(TooSmallError, match=f"{size} px, too small to judge.*at least 32 px"):
        refuse_if_too_small(load_image(FILES[name]), config())
    refuse_if_too_small(load_image(FILES["small.png"]), config())  # 40 px: judged (with a warning)


def test_only_a_model_trained_on_the_built_in_sample_is_a_demo(monkeypatch):
    sys.path.insert(0, str(PROJECT))  # pipeline/ is the project's stage package, not installed
    from pipeline.paths import is_sample_data

    monkeypatch.chdir(PROJECT)
    assert (
        is_sample_data("data/sample") and is_sample_data("./data/sample/") and is_sample_data(PROJECT / "data/sample")
    )
    assert not is_sample_data("data/raw") and not is_sample_data("../shared/facebench")


def write_files(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in names]
    for path in paths:
        path.write_bytes(FILES[path.name])
    return paths


def predict_cli(model: Path, paths: list[Path], *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "aivsreal.serving.cli", "--model", str(model), *flags, *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=isolated_env())


def test_cli_warns_refuses_and_keeps_going(tmp_path, face_aware_model_dir):
    paths = write_files(tmp_path, ["photo.jpg", "photo.png", "small.png", "tiny.png", "dot.png", "far.png", "wall.png"])
    result = predict_cli(face_aware_model_dir, paths, "--json")
    assert result.returncode == 1  # some files skipped
    answers = {Path(row["path"]).name: row for row in map(json.loads, result.stdout.splitlines())}
    assert {name: answer["warnings"] for name, answer in answers.items()} == EXPECTED
    assert "tiny.png: skipped: image is 16x16 px, too small to judge" in result.stderr
    assert "dot.png: skipped: image is 1x1 px" in result.stderr
    assert DEMO_NOTICE not in result.stderr
    text = predict_cli(face_aware_model_dir, [paths[0], paths[-2]])
    assert f"    warning: {JPEG_WARNING}" in text.stdout.splitlines()
    assert f"    warning: {FAR_FACE}" in text.stdout.splitlines()


def test_cli_says_once_that_a_demo_model_is_a_demo(tmp_path, lossless_only_model_dir):
    demo = tmp_path / "demo"
    shutil.copytree(lossless_only_model_dir, demo)
    saved = json.loads((demo / "config.json").read_text())
    (demo / "config.json").write_text(json.dumps(saved | {"demo": True}))
    result = predict_cli(demo, write_files(tmp_path / "in", ["photo.png", "small.png"]))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(DEMO_NOTICE) == 1


def test_served_probabilities_are_never_more_extreme_than_max_confidence(lossless_only_model_dir):
    from aivsreal.predictor import Predictor

    predictor = Predictor.from_dir(lossless_only_model_dir)
    with torch_scaled(predictor.model, 1e4):  # a network a thousand times too sure of itself
        p = predictor.predict_proba([load_image(FILES["photo.png"]), load_image(FILES["small.png"])])
    assert p.min() >= 1e-4 - 1e-12 and p.max() <= 0.9999 + 1e-12
    assert np.allclose(p.sum(axis=1), 1.0)


class torch_scaled:
    """Multiply the network's output layer by `factor` inside the block (logits x factor)."""

    def __init__(self, model, factor: float):
        self.layer, self.factor = [m for m in model.modules() if hasattr(m, "weight")][-1], factor

    def __enter__(self):
        self.saved = (self.layer.weight.data.clone(), self.layer.bias.data.clone())
        self.layer.weight.data *= self.factor
        self.layer.bias.data *= self.factor

    def __exit__(self, *_):
        self.layer.weight.data, self.layer.bias.data = self.saved


@pytest.fixture(scope="module")
def servers(face_aware_store, tmp_path_factory):
    """{"mlflow": url, "guarded": url}: both serving the lossless-only, face-aware champion."""
    env = isolated_env(MLFLOW_TRACKING_URI=face_aware_store)
    cwd = tmp_path_factory.mktemp("serve")
    stock_port, guarded_port = free_port(), free_port()
    stock = ["mlflow", "models", "serve", "-m", MODEL, "--env-manager", "local", "-h", "127.0.0.1",
             "-p", str(stock_port)]  # fmt: skip
    guarded = [sys.executable, "-m", "aivsreal.serving.server", "-m", MODEL, "-p", str(guarded_port)]
    with running_server(stock, stock_port, "/ping", cwd, env) as stock_url:
        with running_server(guarded, guarded_port, "/ping", cwd, env) as guarded_url:
            yield {"mlflow": stock_url, "guarded": guarded_url}


def invoke(url: str, names: list[str]) -> requests.Response:
    rows = [{"image": base64.b64encode(FILES[name]).decode()} for name in names]
    return requests.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=60)


@pytest.mark.parametrize("server", ["mlflow", "guarded"])
def test_server_answers_carry_the_same_warnings(servers, server):
    answer = invoke(servers[server], list(EXPECTED))
    assert answer.status_code == 200, answer.text[:500]
    predictions = answer.json()["predictions"]
    assert [p["warnings"] for p in predictions] == list(EXPECTED.values())
    assert all(1e-4 - 1e-12 <= p["p_ai"] <= 0.9999 + 1e-12 for p in predictions)


@pytest.mark.parametrize("server", ["mlflow", "guarded"])
@pytest.mark.parametrize("name, size", [("tiny.png", "16x16"), ("dot.png", "1x1")])
def test_server_refuses_images_too_small_to_judge(servers, server, name, size):
    answer = invoke(servers[server], ["photo.png", name])
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert message.startswith(f"row 1: image is {size} px, too small to judge"), message[:300]  # the problem first
    assert "at least 32 px" in message and "DataFrame" not in message and "Failed to predict" not in message


@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java (install Java 17)")
def test_batch_scoring_writes_the_warnings_and_refuses_tiny_files(face_aware_store, tmp_path):
    folder = tmp_path / "photos"
    write_files(folder, [*EXPECTED, "tiny.png"])
    write_image(folder / "more" / "other.png", size=(64, 64), seed=9)
    command = [sys.executable, "-m", "aivsreal.serving.batch", "--input", str(folder), "--output", "out.parquet",
               "--model", MODEL, "--master", "local[2]"]  # fmt: skip
    env = isolated_env(MLFLOW_TRACKING_URI=face_aware_store)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {Path(r["path"]).name: r for r in pd.read_parquet(tmp_path / "out.parquet").to_dict("records")}
    assert {name: list(rows[name]["warnings"]) for name in EXPECTED} == EXPECTED
    assert list(rows["other.png"]["warnings"]) == [NO_FACE]  # random pixels
    assert pd.isna(rows["tiny.png"]["label"]) and "16x16 px, too small to judge" in rows["tiny.png"]["error"]
