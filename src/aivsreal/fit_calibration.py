"""After training: fit temperature and threshold on the validation images and measure the validated range."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aivsreal.calibration import choose_threshold, expected_calibration_error, fit_temperature, probabilities
from aivsreal.engines import quantize_int8
from aivsreal.params import CalibrationParams
from aivsreal.predictor import Predictor
from aivsreal.robustness import wild_levels

if TYPE_CHECKING:
    from aivsreal.training import TrainResult


def calibrate(
    result: TrainResult, val_rows: list[dict[str, str]], settings: CalibrationParams, wild: dict | None = None
) -> dict:
    """Fit temperature and decision threshold on the validation split, and measure the model's range:
    accuracy on the validation images and on their wild copies (JPEG, WebP, shrunk, social), and the
    smallest side seen. All of it is stored in result.config and travels with the model. `wild`:
    validation_copies(...) of these rows when the caller already made them (the train stage reuses
    them for its int8 check)."""
    config = result.config
    predictor = Predictor(result.model, config)
    wild = wild if wild is not None else validation_copies(predictor, val_rows)
    targets = np.array([config.class_names.index(row["label"]) for row in val_rows])
    # (kind, value) -> (images, logits)
    copies = {key: (copy, predictor.predict_logits(copy)) for key, copy in wild.items()}
    logits = copies[("none", 0)][1]
    fit_on = [c[1] for c in copies.values()] if settings.perturbed else [logits]
    temperature = 1.0
    if settings.temperature:
        temperature = fit_temperature(np.concatenate(fit_on), np.tile(targets, len(fit_on)), settings.min_temperature)
    calibrated = {key: probabilities(copy_logits, temperature) for key, (_, copy_logits) in copies.items()}
    p_positive = calibrated[("none", 0)][:, 0]
    is_positive = targets == 0
    config.temperature = temperature
    config.threshold = choose_threshold(p_positive, is_positive, settings.threshold_rule)
    config.validated = validated_range(predictor, copies, calibrated, targets)
    pooled = np.concatenate([p[:, 0] for p in calibrated.values()])
    return {
        "temperature": temperature,
        "threshold": config.threshold,
        "val_ece_uncalibrated": expected_calibration_error(probabilities(logits)[:, 0], is_positive),
        "val_ece_calibrated": expected_calibration_error(p_positive, is_positive),
        "val_ece_wild_pooled": expected_calibration_error(pooled, np.tile(is_positive, len(copies))),
    }


def wild_copies(images: list) -> dict[tuple[str, float], list]:
    """The validation images as they are, ("none", 0), and their copies under each wild condition
    (JPEG, WebP, shrunk, social), the same on every run."""
    copies = {("none", 0): images}
    for number, condition in enumerate(wild_levels()):
        copies[(condition.kind, condition.value)] = condition.degrade(images, key=f"calibration-{number}")
    return copies


def validation_copies(predictor: Predictor, val_rows: list[dict[str, str]]) -> dict[tuple[str, float], list]:
    """The validation images, read with the model's limits, and their wild copies (wild_copies)."""
    return wild_copies([predictor.load(row["path"]) for row in val_rows])


def quantize(predictor: Predictor, images: list, folder: Path) -> Path:
    """folder/model.int8.onnx from the predictor's float graph (engines.quantize_int8), its activation
    ranges calibrated on `images` preprocessed as at inference; the model's input filter stays float."""
    batches = [batch.numpy() for batch in predictor.input_batches(images, batch_size=16)]
    return quantize_int8(folder, predictor.config.onnx_file, batches, predictor.config.input_filter)


def int8_accuracy_change(
    float_predictor: Predictor, int8_predictor: Predictor, wild: dict, val_rows: list[dict[str, str]]
) -> dict:
    """Validation accuracy of the float and int8 graphs (calibrated labels, the validation images and
    their wild copies pooled: `wild` is validation_copies(...) of `val_rows`) and the change in points:
    what decides whether the int8 graph is kept."""
    truth = [row["label"] for row in val_rows]
    accuracy = {}
    for name, predictor in (("float", float_predictor), ("int8", int8_predictor)):
        correct = [
            label == actual
            for copy in wild.values()
            for label, actual in zip(predictor.labels(predictor.predict_proba(copy)), truth)
        ]
        accuracy[name] = float(np.mean(correct))
    return {
        "float_val_accuracy_wild_pooled": accuracy["float"],
        "int8_val_accuracy_wild_pooled": accuracy["int8"],
        "int8_val_accuracy_drop_points": 100 * (accuracy["float"] - accuracy["int8"]),
    }


def validated_range(predictor: Predictor, copies: dict, calibrated: dict, targets: np.ndarray) -> dict:
    """{"min_side": smallest side among the validation images and copies, "accuracy": {kind: the
    lowest accuracy over that kind's conditions}}, labelled as the predictor labels (threshold set
    first); input_range.py reads it."""
    truth = [predictor.class_names[target] for target in targets]
    accuracy: dict[str, float] = {}
    for (kind, _), p in calibrated.items():
        correct = float(np.mean([label == actual for label, actual in zip(predictor.labels(p), truth)]))
        accuracy[kind] = min(accuracy.get(kind, 1.0), correct)
    smallest = min(min(image.size) for images, _ in copies.values() for image in images)
    return {"min_side": int(smallest), "accuracy": accuracy}
