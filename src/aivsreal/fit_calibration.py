"""After training: fit temperature and threshold on the validation images and measure the validated range."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

from aivsreal.calibration import choose_threshold, expected_calibration_error, fit_temperature, probabilities
from aivsreal.params import CalibrationParams
from aivsreal.predictor import Predictor
from aivsreal.robustness import wild_levels

if TYPE_CHECKING:
    from aivsreal.training import TrainResult


def calibrate(result: TrainResult, val_rows: list[dict[str, str]], settings: CalibrationParams) -> dict:
    """Fit temperature and decision threshold on the validation split, and measure the model's range:
    accuracy on the validation images and on their wild copies (JPEG, WebP, shrunk, social), and the
    smallest side seen. All of it is stored in result.config and travels with the model."""
    config = result.config
    predictor = Predictor(result.model, config)
    images = [predictor.load(row["path"]) for row in val_rows]
    targets = np.array([config.class_names.index(row["label"]) for row in val_rows])
    copies = {("none", 0): (images, predictor.predict_logits(images))}  # (kind, value) -> (images, logits)
    for number, condition in enumerate(wild_levels()):
        rng = random.Random(f"calibration-{number}")  # the same copies on every run
        degraded = [condition.apply(image, rng) for image in images]
        copies[(condition.kind, condition.value)] = (degraded, predictor.predict_logits(degraded))
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
