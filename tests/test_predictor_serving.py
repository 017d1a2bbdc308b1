"""Predictor (saved model -> probabilities and labels) and the MLflow pyfunc wrapper around it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_images import encode, random_image
from mlflow.exceptions import MlflowException
from mlflow.types import DataType
from mlflow.types.schema import Array

from aivsreal.images import load_image
from aivsreal.model import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, build_model, save_model
from aivsreal.predictor import Predictor
from aivsreal.serving.pyfunc import AiVsRealModel, encode_image, signature

CLASSES = ["ai", "real"]


def assert_same_records(actual: list[dict], expected: list[dict]) -> None:
    """Same labels and warnings in the same order, probabilities equal up to float32 noise."""
    assert [r["label"] for r in actual] == [r["label"] for r in expected]
    assert [list(r["warnings"]) for r in actual] == [list(r["warnings"]) for r in expected]
    for got, want in zip(actual, expected, strict=True):
        assert set(got) == set(want)
        probabilities = [k for k in got if k.startswith("p_")]
        assert {k: got[k] for k in probabilities} == pytest.approx({k: want[k] for k in probabilities})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny untrained model saved the way the train stage saves one."""
    torch.manual_seed(0)
    config = ModelConfig(CLASSES, hidden=8, dropout=0.0, image_size=32, resize=32)
    model, config.pretrained_used = build_model(config)
    folder = tmp_path_factory.mktemp("model")
    save_model(model, config, folder)
    return folder


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor.from_dir(model_dir)


@pytest.fixture(scope="module")
def images():
    # different sizes and modes: the eval transform must bring all of them to one tensor shape
    return [
        random_image((20, 30), seed=1),
        random_image((40, 40), seed=2),
        random_image((8, 8), seed=3, mode="L").convert("RGB"),
    ]


@pytest.fixture(scope="module")
def pyfunc(model_dir) -> AiVsRealModel:
    wrapper = AiVsRealModel()
    context = SimpleNamespace(
        artifacts={"config": str(model_dir / CONFIG_FILE), "weights": str(model_dir / WEIGHTS_FILE)}
    )
    wrapper.load_context(context)
    return wrapper


def test_predict_proba_gives_one_probability_row_per_image(predictor, images):
    probabilities = predictor.predict_proba(images)
    assert probabilities.shape == (len(images), len(CLASSES))
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_predict_proba_does_not_depend_on_batching(predictor, images):
    one_by_one = predictor.predict_proba(images, batch_size=1)
    np.testing.assert_allclose(one_by_one, predictor.predict_proba(images), atol=1e-5)


def test_predict_proba_of_no_images_is_empty(predictor):
    assert predictor.predict_proba([]).shape == (0, len(CLASSES))


def test_labels_follow_the_threshold_in_the_config(predictor, images):
    probabilities = predictor.predict_proba(images)
    low = Predictor(predictor.model, dataclasses.replace(predictor.config, threshold=0.0))
    high = Predictor(predictor.model, dataclasses.replace(predictor.config, threshold=1.01))
    assert low.labels(probabilities) == [CLASSES[0]] * len(images)
    assert high.labels(probabilities) == [CLASSES[1]] * len(images)
    middle = float(np.median(probabilities[:, 0]))
    at_median = Predictor(predictor.model, dataclasses.replace(predictor.config, threshold=middle))
    expected = [CLASSES[0] if p >= middle else CLASSES[1] for p in probabilities[:, 0]]
    assert at_median.labels(probabilities) == expected


def test_temperature_softens_probabilities(predictor, images):
    hot = Predictor(predictor.model, dataclasses.replace(predictor.config, temperature=1000.0))
    sharp = np.abs(predictor.predict_proba(images)[:, 0] - 0.5)
    soft = np.abs(hot.predict_proba(images)[:, 0] - 0.5)
    assert (soft <= sharp).all() and soft.max() < 0.01


def test_predict_records_keeps_input_order_and_names_classes(predictor, images):
    records = predictor.predict_records(images)
    probabilities = predictor.predict_proba(images)
    assert [set(r) for r in records] == [
        {"label", "p_ai", "p_real", "warnings", "engine", "expert", "expert_reason"}
    ] * len(images)
    for record, row, label in zip(records, probabilities, predictor.labels(probabilities), strict=True):
        assert record["label"] == label
        assert record["p_ai"] == pytest.approx(row[0]) and record["p_real"] == pytest.approx(row[1])
    assert_same_records(predictor.predict_records(images[::-1]), records[::-1])


def test_pyfunc_predicts_base64_png_and_jpeg_in_order(pyfunc, predictor):
    files = [encode(random_image((24, 24), seed=5), "PNG"), encode(random_image((30, 20), seed=6), "JPEG")]
    result = pyfunc.predict(None, pd.DataFrame({"image": [encode_image(data) for data in files]}))
    assert isinstance(result, pd.DataFrame)
    assert list(result.columns) == ["label", "p_ai", "p_real", "warnings", "engine", "expert", "expert_reason"]
    expected = predictor.predict_records([load_image(data) for data in files])
    assert_same_records(result.to_dict("records"), expected)


def test_pyfunc_accepts_raw_bytes(pyfunc):
    files = [encode(random_image((16, 16), seed=7), "PNG"), encode(random_image((16, 16), seed=8), "PNG")]
    from_bytes = pyfunc.predict(None, pd.DataFrame({"image": files}))
    from_base64 = pyfunc.predict(None, pd.DataFrame({"image": [encode_image(d) for d in files]}))
    pd.testing.assert_frame_equal(from_bytes, from_base64)


def test_pyfunc_accepts_base64_wrapped_at_76_columns(pyfunc):
    """GNU `base64` wraps its output by default; a curl user should not have to know about -w0."""
    text = encode_image(encode(random_image((40, 40), seed=10), "PNG"))
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert "\n" in wrapped
    pd.testing.assert_frame_equal(
        pyfunc.predict(None, pd.DataFrame({"image": [wrapped]})), pyfunc.predict(None, pd.DataFrame({"image": [text]}))
    )


GOOD = encode_image(encode(random_image((16, 16), seed=9), "PNG"))


# The entry file of every model registered before the serving package (issue 15): it still runs when such a model loads.
ENTRY_FILE_BEFORE_THE_PACKAGE = """import mlflow

from aivsreal.serving import AiVsRealModel

mlflow.models.set_model(AiVsRealModel())
"""


def test_models_logged_before_and_after_the_serving_package_load_beside_it(model_dir, predictor, tmp_path):
    """The guarded server loads a model in a process that has already imported `aivsreal`, so an old
    model's entry file finds this package, not the model's own code copy."""
    import mlflow.pyfunc

    from aivsreal.serving.artifacts import ENTRY_FILE, PACKAGE

    old_entry = tmp_path / "mlflow_model.py"
    old_entry.write_text(ENTRY_FILE_BEFORE_THE_PACKAGE)
    artifacts = {"config": str(model_dir / CONFIG_FILE), "weights": str(model_dir / WEIGHTS_FILE)}
    data = encode(random_image((24, 24), seed=12), "PNG")
    expected = predictor.predict_records([load_image(data)])
    for entry in (old_entry, ENTRY_FILE):
        saved = tmp_path / entry.stem
        mlflow.pyfunc.save_model(saved, python_model=str(entry), artifacts=artifacts, code_paths=[str(PACKAGE)])
        loaded = mlflow.pyfunc.load_model(str(saved))
        assert_same_records(loaded.predict(pd.DataFrame({"image": [encode_image(data)]})).to_dict("records"), expected)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        pytest.param(pd.DataFrame({"picture": [GOOD]}), "column `image`", id="missing column"),
        pytest.param(pd.DataFrame({"image": []}, dtype=object), "no images", id="empty frame"),
        pytest.param(pd.DataFrame({"image": [GOOD, "not base64 at all!"]}), "row 1.*base64", id="bad base64"),
        pytest.param(
            pd.DataFrame({"image": [GOOD, GOOD, encode_image(b"plain text, no image")]}),
            "row 2.*not an image",
            id="base64 of non-image",
        ),
        pytest.param(pd.DataFrame({"image": [GOOD, ""]}), "row 1", id="empty string"),
        pytest.param(pd.DataFrame({"image": [GOOD] * 257}), "at most 256", id="too many images"),
    ],
)
def test_pyfunc_rejects_bad_requests_with_a_400_naming_the_problem(pyfunc, frame, message):
    with pytest.raises(MlflowException, match=message) as error:
        pyfunc.predict(None, frame)
    assert error.value.error_code == "INVALID_PARAMETER_VALUE"


def test_signature_declares_image_in_and_label_and_probabilities_out():
    sig = signature(CLASSES)
    assert sig.inputs.input_names() == ["image"]
    assert sig.inputs.inputs[0].type == DataType.string
    assert sig.outputs.input_names() == ["label", "p_ai", "p_real", "warnings", "engine", "expert", "expert_reason"]
    assert [spec.type for spec in sig.outputs.inputs[:3]] == [DataType.string, DataType.double, DataType.double]
    assert sig.outputs.inputs[3].type == Array(DataType.string)


def test_hflip_test_time_averaging_travels_in_the_config_and_sees_both_orientations(tiny_model_dir, tmp_path):
    """`tta_hflip`: a face and its mirror image get the same answer, the mean of the two plain logits."""
    from PIL import ImageOps

    plain = Predictor.from_dir(tiny_model_dir)
    config = dataclasses.replace(plain.config, tta_hflip=True)
    save_model(plain.model, config, tmp_path / "tta")
    averaged = Predictor.from_dir(tmp_path / "tta")
    assert averaged.config.tta_hflip is True
    image = random_image((32, 32), seed=4)
    mirror = ImageOps.mirror(image)
    expected = (plain.predict_logits([image]) + plain.predict_logits([mirror])) / 2
    assert not np.allclose(plain.predict_logits([image]), plain.predict_logits([mirror]))  # an asymmetric network
    assert averaged.predict_logits([image]) == pytest.approx(expected, abs=1e-5)
    assert averaged.predict_logits([mirror]) == pytest.approx(expected, abs=1e-5)
