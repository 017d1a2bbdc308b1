"""ONNX Runtime behind Predictor: the exported graph answers like PyTorch, is chosen by default when
present, and AIVSREAL_ENGINE forces either engine."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers_images import random_image

from aivsreal.engines import ENGINE_ENV, ONNX_FILE, quantize_int8
from aivsreal.model import ModelConfig, save_model
from aivsreal.predictor import Predictor

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tiny_onnx_model_dir):
    """The tiny saved model with its ONNX graph beside it, as the train stage leaves it (conftest)."""
    return tiny_onnx_model_dir


def faces(n: int = 12, seed: int = 0):
    return [random_image((40 + 3 * i, 36 + 2 * i), seed=seed + i) for i in range(n)]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, exported):
    """The exported model with an int8 graph too, calibrated on other images than the tests score
    (what the train stage does with `model.int8: true`, on validation images)."""
    folder = tmp_path_factory.mktemp("int8")
    shutil.copytree(exported, folder, dirs_exist_ok=True)
    predictor = Predictor.from_dir(folder)
    calibration = [batch.numpy() for batch in predictor.input_batches(faces(16, seed=100), batch_size=4)]
    config = ModelConfig.read(folder)
    config.int8_file = quantize_int8(folder, config.onnx_file, calibration).name
    save_model(predictor.model, config, folder)
    return folder


def test_onnx_runtime_answers_like_pytorch_and_is_the_default(exported, monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    fast = Predictor.from_dir(exported)
    monkeypatch.setenv(ENGINE_ENV, "torch")
    eager = Predictor.from_dir(exported)
    assert (fast.engine, eager.engine) == ("onnx", "torch")
    images = faces()
    p_fast, p_eager = fast.predict_proba(images, batch_size=5), eager.predict_proba(images, batch_size=5)
    assert np.abs(p_fast - p_eager).max() <= 1e-4  # the bar: same answers
    assert fast.labels(p_fast) == eager.labels(p_eager)


def test_a_model_without_a_graph_runs_on_pytorch_and_forcing_onnx_says_why(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert ModelConfig.read(tiny_model_dir).onnx_file == "" and Predictor.from_dir(tiny_model_dir).engine == "torch"
    monkeypatch.setenv(ENGINE_ENV, "onnx")
    with pytest.raises(RuntimeError, match="no exported ONNX graph"):
        Predictor.from_dir(tiny_model_dir)
    monkeypatch.setenv(ENGINE_ENV, "fastest")
    with pytest.raises(ValueError, match="auto, torch, onnx, onnx-int8"):
        Predictor.from_dir(tiny_model_dir)


def test_an_int8_graph_is_the_default_when_present_and_either_float_engine_can_be_forced(
    quantized, exported, monkeypatch
):
    from aivsreal.serving.artifacts import model_files

    monkeypatch.delenv(ENGINE_ENV, raising=False)
    int8 = Predictor.from_dir(quantized)
    assert int8.engine == "onnx-int8" and Predictor.from_dir(exported).engine == "onnx"
    monkeypatch.setenv(ENGINE_ENV, "onnx")
    fp32 = Predictor.from_dir(quantized)
    monkeypatch.setenv(ENGINE_ENV, "torch")
    eager = Predictor.from_dir(quantized)
    assert (fp32.engine, eager.engine) == ("onnx", "torch")
    images = faces()
    p_int8, p_fp32, p_eager = (p.predict_proba(images, batch_size=5) for p in (int8, fp32, eager))
    assert np.abs(p_fp32 - p_eager).max() <= 1e-4  # forcing the float graph still gives PyTorch's answers
    assert 0 < np.abs(p_int8 - p_fp32).max() <= 0.05  # int8 is a different, close computation
    # the MLflow model carries the int8 graph, so a served copy answers with it too
    assert set(model_files(quantized)) == {"weights", "config", "onnx", "int8"}
    assert set(model_files(exported)) == {"weights", "config", "onnx"}
    monkeypatch.setenv(ENGINE_ENV, "onnx-int8")
    with pytest.raises(RuntimeError, match="no int8 graph"):
        Predictor.from_dir(exported)


def test_a_config_naming_a_missing_graph_falls_back_to_pytorch(exported, tmp_path, monkeypatch):
    """A copy that lost model.onnx (copied by hand, an older download) still answers, on PyTorch."""
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    (copy / ONNX_FILE).unlink()
    assert Predictor.from_dir(copy).engine == "torch"


def test_grad_cam_still_runs_on_pytorch_when_predictions_use_onnx(exported, monkeypatch):
    from aivsreal.explain import grad_cam

    monkeypatch.delenv(ENGINE_ENV, raising=False)
    predictor = Predictor.from_dir(exported)
    heatmap, _ = grad_cam(predictor, faces(1)[0], class_index=0)
    assert predictor.engine == "onnx" and np.isfinite(heatmap).all() and heatmap.max() <= 1.0


def test_the_app_answers_through_onnx_runtime_and_says_so(exported, monkeypatch):
    from conftest import PROJECT, png_bytes
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv(ENGINE_ENV, raising=False)
    monkeypatch.setenv("AIVSREAL_MODEL", str(exported))
    app = AppTest.from_file(str(PROJECT / "webapp" / "app.py"), default_timeout=120)
    app.run()
    app.file_uploader[0].set_value([("face.png", png_bytes(1), "image/png")]).run()
    assert not app.exception, app.exception
    assert "Runs on: ONNX Runtime" in " ".join(m.value for m in app.sidebar.markdown)
    assert app.subheader[0].value.startswith("Verdict:") and "Grad-CAM" in app.get("image")[0].captions[0]


def test_the_cli_and_a_real_mlflow_server_answer_through_onnx_and_forcing_pytorch_agrees(
    exported, tmp_path, monkeypatch
):
    import base64
    import json
    import subprocess
    import sys

    import requests
    from conftest import champion_store, free_port, isolated_env, png_bytes, running_server

    monkeypatch.delenv(ENGINE_ENV, raising=False)
    image = tmp_path / "face.png"
    image.write_bytes(png_bytes(3))
    answers = {}
    for engine in ("auto", "torch"):
        env = isolated_env(**{ENGINE_ENV: engine})
        done = subprocess.run(
            [sys.executable, "-m", "aivsreal.serving.cli", "--json", "--model", str(exported), str(image)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        answers[f"cli-{engine}"] = json.loads(done.stdout.splitlines()[0])

    uri = champion_store(tmp_path, exported)
    payload = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png_bytes(3)).decode()]]}}
    for engine in ("auto", "torch"):
        port = free_port()
        command = ["mlflow", "models", "serve", "-m", "models:/ai-vs-real@champion", "--env-manager", "local",
                   "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
        env = isolated_env(MLFLOW_TRACKING_URI=uri, **{ENGINE_ENV: engine})
        with running_server(command, port, "/ping", tmp_path, env, timeout=120) as url:
            reply = requests.post(f"{url}/invocations", json=payload, timeout=60)
            assert reply.status_code == 200, reply.text
            answers[f"server-{engine}"] = reply.json()["predictions"][0]

    assert answers["cli-auto"]["engine"] == answers["server-auto"]["engine"] == "onnx"
    assert answers["cli-torch"]["engine"] == answers["server-torch"]["engine"] == "torch"
    for where in ("cli", "server"):
        fast, eager = answers[f"{where}-auto"], answers[f"{where}-torch"]
        assert abs(fast["p_ai"] - eager["p_ai"]) <= 1e-4 and fast["label"] == eager["label"], where


@pytest.mark.parametrize(("input_filter", "reads_pixels_first"), [("residual", ["Conv"]), ("npr", ["Slice", "Sub"])])
def test_int8_keeps_the_input_filter_in_float(tmp_path, input_filter, reads_pixels_first):
    """The noise residual and NPR read differences of one grey level: quantising the filter's input to 8
    bits would erase them (a trained residual model fell from 97 % to 60 % test accuracy), so the filter's
    nodes stay float and only the backbone after it is int8."""
    import onnx

    from aivsreal.engines import export_onnx
    from aivsreal.model import build_model

    config = ModelConfig(class_names=["ai", "real"], hidden=8, dropout=0.0, image_size=32, resize=32,
                         input_filter=input_filter)  # fmt: skip
    model, config.pretrained_used = build_model(config)
    config.onnx_file = export_onnx(model, config.eval_crop, tmp_path).name
    save_model(model, config, tmp_path)
    predictor = Predictor(model, config)
    calibration = [batch.numpy() for batch in predictor.input_batches(faces(8, seed=100), batch_size=4)]
    graph = onnx.load(str(quantize_int8(tmp_path, config.onnx_file, calibration, config.input_filter)))
    reads_pixels = [node for node in graph.graph.node if "pixels" in node.input]
    assert sorted(node.op_type for node in reads_pixels) == reads_pixels_first  # the filter, in float
    assert any(node.op_type == "QLinearConv" for node in graph.graph.node)  # the backbone is int8
