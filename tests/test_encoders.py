"""A frozen timm encoder with a linear probe (UnivFD): trains on cached features, saves, reloads, exports to
ONNX (and int8), is served by a real `mlflow models serve`, and says which weights it used or why none.

The encoder is a randomly initialised ViT-Tiny built for 32 px inputs and saved to a local file: no
weights can be downloaded here, so these tests check the plumbing, never what a pretrained encoder learns.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from conftest import PROJECT, champion_store, free_port, isolated_env, running_server
from helpers_images import encode, random_image

from aivsreal.encoders import EncoderClassifier
from aivsreal.engines import ENGINE_ENV, export_onnx, quantize_int8
from aivsreal.model import ModelConfig, WeightsUnavailableError, build_model, load_saved_model, save_model
from aivsreal.params import Params
from aivsreal.predictor import Predictor
from aivsreal.training import train

timm = pytest.importorskip("timm")

ARCH = "vit_tiny_patch16_224"  # 5.5M parameters; at 32 px a 2x2 grid of patches: a second per forward of 24 images
SIDE = 32


def random_encoder(seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(ARCH, pretrained=False, num_classes=0, **({"img_size": SIDE} | kwargs))


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """A state_dict of the encoder, as a user would download one (here random: nothing can be downloaded)."""
    path = tmp_path_factory.mktemp("weights") / "encoder.pth"
    torch.save(random_encoder().state_dict(), path)
    return path


def encoder_params(pretrained: str, **overrides) -> Params:
    """params.yaml with the frozen-encoder recipe (arch, linear probe, finetune head) at a tiny size."""
    recipe = {"model.arch": ARCH, "model.pretrained": pretrained, "model.hidden": 0, "model.input_filter": "none",
              "train.finetune": "head", "train.image_size": SIDE, "train.resize": SIDE, "train.eval_size": 0,
              "train.epochs": 3, "train.batch_size": 8, "train.lr": 0.01, "train.num_workers": 0,
              "train.launcher": "single", "model.forensic": False}  # fmt: skip
    return Params.load(PROJECT / "params.yaml").with_overrides(recipe | overrides)


def brightness_rows(folder, per_class: int = 10) -> tuple[list[dict], list[dict]]:
    """Two classes that differ in brightness; (train rows, validation rows)."""
    rows = []
    for label, shift in (("ai", 60), ("real", -60)):
        for i in range(per_class):
            path = folder / f"{label}_{i}.png"
            image = random_image((40, 36), seed=i + (100 if label == "ai" else 0))
            image.point(lambda v, s=shift: max(0, min(255, v + s))).save(path)
            rows.append({"path": str(path), "label": label, "sha256": f"{label}{i}"})
    return rows[::2], rows[1::2]


def images(n: int = 6, seed: int = 50) -> list:
    return [random_image((34 + 4 * i, 44), seed=seed + i) for i in range(n)]  # min_side 32 in params.yaml


@pytest.fixture(scope="module")
def trained(tmp_path_factory, encoder_file):
    """The recipe trained on the encoder file and saved with its ONNX graph, the file then moved away:
    the saved model must not need it."""
    rows = brightness_rows(tmp_path_factory.mktemp("faces"))
    result = train(encoder_params(str(encoder_file)), *rows)
    folder = tmp_path_factory.mktemp("encoder_model")
    result.config.onnx_file = export_onnx(result.model, result.config.eval_crop, folder).name
    save_model(result.model, result.config, folder)
    return result, folder


def test_the_frozen_encoder_trains_only_its_linear_probe_and_says_which_weights_it_used(trained, encoder_file):
    result, _ = trained
    config = result.config
    assert config.pretrained_used == f"file:{encoder_file}"
    assert (config.arch, config.timm_kwargs, config.hidden) == (ARCH, {"img_size": SIDE}, 0)
    assert config.mean == [0.5, 0.5, 0.5] and config.std == [0.5, 0.5, 0.5]  # the encoder's own, not ImageNet's
    assert isinstance(result.model, EncoderClassifier) and isinstance(result.model.fc[0], torch.nn.Linear)
    assert len(result.model.fc) == 1  # hidden 0: one Linear layer
    loaded = torch.load(encoder_file, weights_only=True)
    for key, value in result.model.encoder.state_dict().items():
        assert torch.equal(value, loaded[key]), key  # frozen: the encoder is the file's, untouched
    assert len(result.history) == 3 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_the_saved_model_rebuilds_from_its_folder_alone_with_the_same_predictions(
    trained, encoder_file, tmp_path, monkeypatch
):
    result, folder = trained
    moved = encoder_file.rename(tmp_path / "elsewhere.pth")  # serving never reads the original weights file
    try:
        monkeypatch.setenv(ENGINE_ENV, "torch")
        reloaded = Predictor.from_dir(folder)
        expected = Predictor(result.model, result.config).predict_proba(images())
        assert np.abs(reloaded.predict_proba(images()) - expected).max() < 1e-6
        model, config = load_saved_model(folder)
        assert config.pretrained_used == f"file:{encoder_file}" and isinstance(model, EncoderClassifier)
    finally:
        moved.rename(encoder_file)


def test_onnx_runtime_answers_like_pytorch_and_int8_quantisation_runs(trained, tmp_path, monkeypatch):
    import shutil

    pytest.importorskip("onnxruntime")
    _, folder = trained
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    fast = Predictor.from_dir(folder)
    monkeypatch.setenv(ENGINE_ENV, "torch")
    eager = Predictor.from_dir(folder)
    assert (fast.engine, eager.engine) == ("onnx", "torch")
    assert np.abs(fast.predict_proba(images()) - eager.predict_proba(images())).max() <= 1e-4

    copy = tmp_path / "int8"
    shutil.copytree(folder, copy)
    calibration = [batch.numpy() for batch in eager.input_batches(images(8, seed=200), batch_size=4)]
    config = ModelConfig.read(copy)
    config.int8_file = quantize_int8(copy, config.onnx_file, calibration).name
    save_model(eager.model, config, copy)
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    int8 = Predictor.from_dir(copy)
    p_int8 = int8.predict_proba(images())
    assert int8.engine == "onnx-int8" and np.isfinite(p_int8).all()
    assert np.abs(p_int8 - eager.predict_proba(images())).max() <= 0.1  # a close, different computation


def test_a_real_mlflow_server_answers_like_the_predictor(trained, tmp_path, monkeypatch):
    import requests

    from aivsreal.serving.artifacts import pip_requirements

    _, folder = trained
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert any(pin.startswith("timm==") for pin in pip_requirements(ARCH))  # a served copy installs timm
    files = [encode(image, "PNG") for image in images(3)]
    predictor = Predictor.from_dir(folder)
    expected = predictor.predict_records([predictor.load(data) for data in files])
    uri = champion_store(tmp_path, folder)
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", "models:/ai-vs-real@champion", "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    rows = [[base64.b64encode(data).decode()] for data in files]
    with running_server(command, port, "/ping", tmp_path, isolated_env(MLFLOW_TRACKING_URI=uri), timeout=120) as url:
        reply = requests.post(f"{url}/invocations", json={"dataframe_split": {"columns": ["image"], "data": rows}},
                              timeout=60)  # fmt: skip
    assert reply.status_code == 200, reply.text
    served = reply.json()["predictions"]
    assert [answer["label"] for answer in served] == [record["label"] for record in expected]
    for answer, record in zip(served, expected):
        assert abs(answer["p_ai"] - record["p_ai"]) < 1e-4 and answer["engine"] == "onnx"


def test_grad_cam_runs_on_the_encoders_patch_embedding(trained, monkeypatch):
    from aivsreal.explain import grad_cam

    _, folder = trained
    monkeypatch.setenv(ENGINE_ENV, "torch")
    heatmap, seen = grad_cam(Predictor.from_dir(folder), images(1)[0], class_index=0)
    assert heatmap.shape == (SIDE, SIDE) and np.isfinite(heatmap).all() and seen.size == (SIDE, SIDE)


def test_a_safetensors_file_loads_too(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "encoder.safetensors"
    save_file(random_encoder(seed=3).state_dict(), str(path))
    config = ModelConfig.from_params(encoder_params(str(path)))
    model, used = build_model(config, str(path))
    assert used == f"file:{path}"
    assert torch.equal(model.encoder.cls_token, random_encoder(seed=3).cls_token)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        pytest.param("resnet18", "does not fit the timm encoder", id="another network's state_dict"),
        pytest.param("wider", "(?s)not a state_dict of the timm encoder.*size mismatch", id="same keys, other shapes"),
        pytest.param("text", "not a state_dict of the timm encoder", id="not a weights file"),
        pytest.param("missing", "neither hub, auto, none nor an existing weights file", id="no such file"),
    ],
)
def test_a_weights_file_that_does_not_fit_the_encoder_is_a_clear_error(weights, message, tmp_path):
    from torchvision.models import resnet18

    path = tmp_path / "weights.pth"
    if weights == "resnet18":
        torch.save(resnet18(weights=None).state_dict(), path)
    elif weights == "wider":
        torch.save(timm.create_model("vit_small_patch16_224", num_classes=0, img_size=SIDE).state_dict(), path)
    elif weights == "text":
        path.write_text("not weights")
    config = ModelConfig.from_params(encoder_params("none"))
    with pytest.raises(WeightsUnavailableError, match=message):
        build_model(config, str(path))


def test_hub_weights_that_cannot_be_had_offline_are_a_clear_error_not_a_random_encoder(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here: the cache only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = ModelConfig.from_params(encoder_params("none"))
    for policy in ("hub", "auto"):
        with pytest.raises(WeightsUnavailableError, match="could not be loaded from the Hugging Face cache"):
            build_model(config, policy)
    with pytest.raises(WeightsUnavailableError, match="torchvision's ResNet18 weights"):
        build_model(config, "imagenet")


def test_an_unknown_arch_name_is_a_params_error():
    from aivsreal.params import ParamsError

    with pytest.raises(ParamsError, match="neither resnet18 nor a timm model name"):
        ModelConfig.from_params(encoder_params("none", **{"model.arch": "vit_no_such_model"}))
