"""Params.load: the real params.yaml loads; every kind of mistake names the key."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from aivsreal.params import Params, ParamsError

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return yaml.safe_load(PARAMS_YAML.read_text())


def write_params(tmp_path: Path, raw: dict, mutate) -> Path:
    """A copy of the real params with `mutate(copy)` applied, written to tmp."""
    changed = copy.deepcopy(raw)
    mutate(changed)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(changed))
    return path


def test_real_params_yaml_loads_into_typed_frozen_sections(raw_params):
    params = Params.load(PARAMS_YAML)
    for section, values in raw_params.items():
        loaded = getattr(params, section)
        for key, value in values.items():
            assert getattr(loaded, key) == value, f"{section}.{key}"
    assert isinstance(params.train.epochs, int)
    assert isinstance(params.train.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.lr = 1.0  # type: ignore[misc]


def test_missing_file_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        Params.load(tmp_path / "nope.yaml")


def _set(section: str, key: str, value):
    def mutate(raw):
        raw[section][key] = value

    return mutate


def _delete(section: str, key: str):
    def mutate(raw):
        del raw[section][key]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        pytest.param(_set("train", "epochz", 3), "train.epochz", id="unknown key"),
        pytest.param(lambda raw: raw.update(extra={"a": 1}), "extra", id="unknown section"),
        pytest.param(_delete("model", "dropout"), "model.dropout", id="missing key"),
        pytest.param(lambda raw: raw.pop("evaluate"), "evaluate", id="missing section"),
        pytest.param(_set("train", "epochs", "ten"), "train.epochs", id="str for int"),
        pytest.param(_set("train", "epochs", 10.5), "train.epochs", id="float for int"),
        pytest.param(_set("train", "epochs", True), "train.epochs", id="bool for int"),
        pytest.param(_set("train", "lr", "fast"), "train.lr", id="str for float"),
        pytest.param(_set("train", "lr", True), "train.lr", id="bool for float"),
        pytest.param(_set("train", "hflip", "yes"), "train.hflip", id="str for bool"),
        pytest.param(_set("train", "hflip", 1), "train.hflip", id="int for bool"),
        pytest.param(_set("data", "class_names", "ai"), "data.class_names", id="str for list"),
        pytest.param(_set("data", "class_names", ["ai", 3]), "data.class_names[1]", id="bad list item"),
        pytest.param(_set("data", "class_names", ["ai", "ai"]), "data.class_names", id="duplicate classes"),
        pytest.param(lambda raw: raw.update(train=5), "train", id="section not a mapping"),
        pytest.param(_set("split", "train", 0.8), "split.train", id="fractions sum above 1"),
        pytest.param(_set("split", "test", 0.05), "split.train", id="fractions sum below 1"),
        pytest.param(_set("train", "finetune", "everything"), "train.finetune", id="bad finetune"),
        pytest.param(_set("train", "optimizer", "sgd"), "train.optimizer", id="bad optimizer"),
        pytest.param(_set("model", "dropout", 1.0), "model.dropout", id="dropout out of range"),
        pytest.param(_set("train", "train_fraction", 0.0), "train.train_fraction", id="train_fraction zero"),
    ],
)
def test_bad_params_raise_params_error_naming_the_key(tmp_path, raw_params, mutate, named):
    path = write_params(tmp_path, raw_params, mutate)
    with pytest.raises(ParamsError) as error:
        Params.load(path)
    assert named in str(error.value)


def test_resize_smaller_than_image_size_is_rejected_with_advice(tmp_path, raw_params):
    def mutate(raw):
        raw["train"]["image_size"] = 64
        raw["train"]["resize"] = 32

    with pytest.raises(ParamsError, match="train.resize") as error:
        Params.load(write_params(tmp_path, raw_params, mutate))
    assert "train.image_size" in str(error.value)


def test_resize_zero_means_crop_only_and_is_accepted(tmp_path, raw_params):
    params = Params.load(write_params(tmp_path, raw_params, _set("train", "resize", 0)))
    assert params.train.resize == 0


def test_ints_are_accepted_where_floats_are_expected(tmp_path, raw_params):
    def mutate(raw):
        raw["train"]["lr"] = 1
        raw["model"]["dropout"] = 0
        raw["sample"]["noise_std"] = 8

    params = Params.load(write_params(tmp_path, raw_params, mutate))
    assert params.train.lr == 1.0 and isinstance(params.train.lr, float)
    assert params.model.dropout == 0.0 and isinstance(params.model.dropout, float)
    assert isinstance(params.sample.noise_std, float)


def test_flat_has_one_dotted_key_per_param(raw_params):
    params = Params.load(PARAMS_YAML)
    flat = params.flat()
    assert flat["train.lr"] == params.train.lr
    expected = {f"{section}.{key}" for section, values in raw_params.items() for key in values}
    assert set(flat) == expected
