"""Params.load: the real params.yaml loads; every kind of mistake names the key."""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from aivsreal.params import Params, ParamsError, dvc_set_flags, load_overrides, main

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"
FACEBENCH_PRESET = PARAMS_YAML.parent / "params" / "facebench.yaml"


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
        pytest.param(_set("model", "input_filter", "srm"), "model.input_filter", id="bad input filter"),
        pytest.param(_set("model", "residual_clip", 0.0), "model.residual_clip", id="residual clip zero"),
        pytest.param(_set("train", "lr_schedule", "cosine"), "train.lr_schedule", id="bad lr schedule"),
        pytest.param(_set("train", "eval_size", 8), "train.eval_size", id="eval_size below image_size"),
    ],
)
def test_bad_params_raise_params_error_naming_the_key(tmp_path, raw_params, mutate, named):
    path = write_params(tmp_path, raw_params, mutate)
    with pytest.raises(ParamsError) as error:
        Params.load(path)
    assert named in str(error.value)


@pytest.mark.parametrize(
    ("section", "key", "bad", "allowed"),
    [
        ("model", "input_filter", "srm", "none, residual or npr"),
        ("train", "finetune", "everything", "head, layer4 or all"),
        ("train", "optimizer", "sgd", "adam or adamw"),
        ("train", "lr_schedule", "cosine", "constant or onecycle"),
        ("train", "launcher", "mpirun", "single or torchrun"),
        ("train", "device", "cuda:1", "auto, cpu or cuda"),
        ("train", "device", 0, "auto, cpu or cuda"),
        ("train", "precision", "fp8", "auto, fp32, bf16 or fp16"),
        ("train", "num_workers", "many", "int or auto"),
        ("train", "num_workers", 1.5, "int or auto"),
        ("data", "face_detector", "dlib", "mtcnn or haar"),
    ],
)
def test_a_value_outside_a_literal_names_the_key_the_value_and_the_choices(
    tmp_path, raw_params, section, key, bad, allowed
):
    with pytest.raises(ParamsError) as error:
        Params.load(write_params(tmp_path, raw_params, _set(section, key, bad)))
    assert str(error.value) == f"{section}.{key} must be {allowed}, got {bad!r}"


def literal_fields() -> dict[str, object]:
    """`{"train.finetune": Literal[...], ...}`: every field of Params with a closed set of choices."""
    fields = {}
    for section, section_type in typing.get_type_hints(Params).items():
        for key, hint in typing.get_type_hints(section_type).items():
            if typing.get_origin(hint) is typing.Literal:
                fields[f"{section}.{key}"] = hint
    return fields


def test_every_literal_field_accepts_each_of_its_choices():
    params = Params.load(PARAMS_YAML)
    # faces, face_detector, face_summary, split mode, input_filter, forensic_mix, finetune, optimizer,
    # lr_schedule, launcher, device, precision, augment_on
    assert len(literal_fields()) == 13
    for dotted, hint in literal_fields().items():
        for choice in typing.get_args(hint):
            assert params.with_overrides({dotted: choice}).flat()[dotted] == choice


@pytest.mark.parametrize("rule", ["youden", "max_accuracy", "fpr:0.05", "fixed:0.5", "fixed:1"])
def test_threshold_rules_are_accepted(tmp_path, raw_params, rule):
    params = Params.load(write_params(tmp_path, raw_params, _set("calibration", "threshold_rule", rule)))
    assert params.calibration.threshold_rule == rule


@pytest.mark.parametrize("rule", ["median", "fpr", "fpr:", "fpr:1.5", "fixed:half"])
def test_a_bad_threshold_rule_names_the_key_and_the_rules(tmp_path, raw_params, rule):
    with pytest.raises(ParamsError) as error:
        Params.load(write_params(tmp_path, raw_params, _set("calibration", "threshold_rule", rule)))
    assert "calibration.threshold_rule must be youden, max_accuracy, fpr:X or fixed:X" in str(error.value)
    assert repr(rule) in str(error.value)


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


def test_overrides_replace_dotted_keys_and_are_checked():
    params = Params.load(PARAMS_YAML)
    changed = params.with_overrides({"train.lr": 0.5, "model.input_filter": "residual", "train.epochs": 3})
    assert (changed.train.lr, changed.model.input_filter, changed.train.epochs) == (0.5, "residual", 3)
    assert params.train.epochs != 3 or params.train.lr != 0.5  # the original is untouched
    with pytest.raises(ParamsError, match="train.epochz"):
        params.with_overrides({"train.epochz": 3})
    with pytest.raises(ParamsError, match="train.epochs"):
        params.with_overrides({"train.epochs": "many"})
    with pytest.raises(ParamsError, match="model.input_filter"):
        params.with_overrides({"model.input_filter": "srm"})


def test_facebench_preset_is_valid_and_prints_dvc_flags(capsys):
    overrides = load_overrides(FACEBENCH_PRESET)
    params = Params.load(PARAMS_YAML).with_overrides(overrides)
    assert params.model.input_filter == "none" and params.model.pretrained == "none"
    assert params.train.jpeg_prob >= 0.5 and params.train.downscale_prob >= 0.5  # both classes re-saved and shrunk
    assert params.evaluate.min_wild_accuracy > 0.5  # a model at chance after a JPEG re-save is never promoted

    main([str(FACEBENCH_PRESET), "--params", str(PARAMS_YAML)])

    flags = capsys.readouterr().out.split()
    assert flags.count("-S") == len(overrides)
    assert "model.input_filter=none" in flags and "train.eval_size=96" in flags


def test_set_adds_overrides_on_top_of_a_preset_and_they_are_checked(capsys):
    """`make facebench SET="data.faces=crop"`: each --set is one more override, read as YAML, checked as the
    preset's are."""
    overrides = load_overrides(FACEBENCH_PRESET)
    main([str(FACEBENCH_PRESET), "--params", str(PARAMS_YAML), "--set", "data.faces=crop", "--set", "train.epochs=3"])
    flags = capsys.readouterr().out.split()
    assert flags.count("-S") == len(overrides) + 1  # data.faces is new; train.epochs replaces the preset's 24
    assert "data.faces=crop" in flags and "train.epochs=3" in flags and "train.epochs=24" not in flags
    with pytest.raises(ParamsError, match="data.faces"):
        main([str(FACEBENCH_PRESET), "--params", str(PARAMS_YAML), "--set", "data.faces=sideways"])
    with pytest.raises(SystemExit):
        main([str(FACEBENCH_PRESET), "--params", str(PARAMS_YAML), "--set", "data.faces"])
    assert "--set takes KEY=VALUE" in capsys.readouterr().err


def test_lossless_preset_keeps_the_noise_residual_recipe():
    lossless = Params.load(PARAMS_YAML).with_overrides(
        load_overrides(FACEBENCH_PRESET.with_name("facebench-lossless.yaml"))
    )
    assert lossless.model.input_filter == "residual" and lossless.train.eval_size == 256
    assert lossless.train.jpeg_prob == 0 and lossless.evaluate.min_wild_accuracy == 0


def test_dvc_flags_quote_what_the_shell_would_split():
    flags = dvc_set_flags({"data.dir": "my faces/x", "train.hflip": False})
    assert flags == "-S 'data.dir=my faces/x' -S train.hflip=false"
    mapped = dvc_set_flags({"data.class_map": {"fake": "ai", "real": "real"}})  # a mapping replaces, keys and all
    assert mapped == """-S '++data.class_map={"fake": "ai", "real": "real"}'"""


def test_a_preset_without_dotted_keys_is_rejected(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("train:\n  lr: 0.1\n")
    with pytest.raises(ParamsError, match="dotted"):
        load_overrides(path)


def test_a_second_preset_resets_what_an_earlier_experiment_left_in_the_workspace(tmp_path, capsys, raw_params):
    """`dvc exp run` leaves its params in params.yaml: `make facebench PRESET=lossless` after `make facebench`
    must not inherit the wild preset's JPEG augmentation and gate (it did, silently)."""
    after_wild = Params.load(PARAMS_YAML).with_overrides(load_overrides(FACEBENCH_PRESET))
    workspace = tmp_path / "params.yaml"
    workspace.write_text(yaml.safe_dump(dataclasses.asdict(after_wild)))
    lossless = FACEBENCH_PRESET.with_name("facebench-lossless.yaml")

    main([str(lossless), "--params", str(workspace), "--base", str(PARAMS_YAML)])

    flags = capsys.readouterr().out.split()
    assert "train.jpeg_prob=0.0" in flags and "evaluate.min_wild_accuracy=0.0" in flags
    assert "model.input_filter=residual" in flags
    assert not any(flag.startswith("train.hflip=") for flag in flags)  # unchanged keys are left alone
    main([str(lossless), "--params", str(workspace)])  # without --base: only the preset's own keys
    assert "evaluate.min_wild_accuracy=0.0" not in capsys.readouterr().out.split()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"train.finetune": "all"}, "used frozen: set train.finetune: head", id="finetune all"),
        pytest.param({"model.input_filter": "residual"}, "input_filter residual is for resnet18", id="input filter"),
        pytest.param({"train.eval_size": 96}, "train.eval_size .96. must be 0 or train.image_size", id="eval size"),
    ],
)
def test_a_timm_encoder_is_used_frozen_and_at_one_size(changes, message):
    base = Params.load(PARAMS_YAML)
    frozen = {"model.arch": "vit_small_patch14_dinov2.lvd142m", "train.finetune": "head", "model.input_filter": "none",
              "train.eval_size": 0, "model.hidden": 0}  # fmt: skip
    assert base.with_overrides(frozen).model.arch == "vit_small_patch14_dinov2.lvd142m"  # the recipe itself is valid
    with pytest.raises(ParamsError, match=message):
        base.with_overrides(frozen | changes)
    with pytest.raises(ParamsError, match="model.hidden must be >= 0"):
        base.with_overrides({"model.hidden": -1})
