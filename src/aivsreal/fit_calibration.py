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
    # (kind, value) -> (images, logits)
    copies = {key: (copy, predictor.predict_logits(copy)) for key, copy in wild_copies(images).items()}
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
        rng = random.Random(f"calibration-{number}")  # the same copies on every run
        copies[(condition.kind, condition.value)] = [condition.apply(image, rng) for image in images]
    return copies


def int8_accuracy_change(float_predictor: Predictor, int8_predictor: Predictor, val_rows: list[dict]) -> dict:
    """Validation accuracy of the float and int8 graphs (calibrated labels, the validation images and
    their wild copies pooled) and the change in points: what decides whether the int8 graph is kept."""
    images = [float_predictor.load(row["path"]) for row in val_rows]
    truth = [row["label"] for row in val_rows]
    copies = wild_copies(images)
    accuracy = {}
    for name, predictor in (("float", float_predictor), ("int8", int8_predictor)):
        correct = [
            label == actual
            for copy in copies.values()
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
