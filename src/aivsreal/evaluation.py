"""Everything the evaluate stage measures on the test split, as plain data (no file or MLflow I/O)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from aivsreal.calibration import clip_confidence, expected_calibration_error, probabilities, reliability
from aivsreal.metrics import classification_metrics, confusion, operating_points, roc_points
from aivsreal.params import EvaluateParams
from aivsreal.predictor import Predictor
from aivsreal.robustness import WILD_CONDITIONS, run_sweep, subset_rows, sweep_levels, wild_summary
from aivsreal.shortcut import metadata_classifier_scores


@dataclass
class Evaluation:
    metrics: dict
    confusion: np.ndarray
    roc: dict[str, np.ndarray]
    reliability_before: dict[str, np.ndarray]
    reliability_after: dict[str, np.ndarray]
    reliability_sweep: dict[str, np.ndarray]  # every robustness sweep level pooled, as served
    robustness: list[dict]
    predictions: list[dict] = field(default_factory=list)
    per_source: dict[str, dict] = field(default_factory=dict)  # metrics/per_source.json: worst source first


def evaluate(
    predictor: Predictor,
    test_rows: list[dict[str, str]],
    train_rows: list[dict[str, str]],
    settings: EvaluateParams,
    unseen_sources: Collection[str] = (),
) -> Evaluation:
    """Every test metric; with `unseen_sources` (split.test_sources, held out whole) also the
    `unseen_source_*` scores on their images and `seen_source_accuracy` on the rest."""
    class_names, config = predictor.class_names, predictor.config
    positive = class_names[0]
    sources = [row.get("source", "") for row in test_rows]
    unseen = np.array([source in unseen_sources for source in sources], dtype=bool)
    if unseen_sources and not unseen.any():
        raise ValueError(
            f"no test image comes from split.test_sources ({', '.join(unseen_sources)}): "
            "the manifests are older than the params, re-run `dvc repro split`"
        )
    images = predictor.load_many([row["path"] for row in test_rows])
    truth = [row["label"] for row in test_rows]
    is_positive = np.array([label == positive for label in truth])

    logits = predictor.predict_logits(images, settings.batch_size)
    calibrated = clip_confidence(probabilities(logits, config.temperature), config.max_confidence)  # as served
    raw_p_positive = probabilities(logits)[:, 0]
    p_positive = calibrated[:, 0]
    predicted = predictor.labels(calibrated)

    metrics = classification_metrics(truth, predicted, p_positive, class_names)
    metrics |= operating_points(
        is_positive, p_positive, np.array([label == positive for label in predicted]), class_names
    )
    metrics |= {
        "threshold": config.threshold,
        "temperature": config.temperature,
        "ece_uncalibrated": expected_calibration_error(raw_p_positive, is_positive),
        "ece_calibrated": expected_calibration_error(p_positive, is_positive),
    }
    shortcut = metadata_classifier_scores(
        [r["path"] for r in train_rows], [r["label"] for r in train_rows], [r["path"] for r in test_rows], truth,
        seed=settings.sweep_seed,
    )  # fmt: skip
    shortcut["warning"] = shortcut["balanced_accuracy"] >= settings.shortcut_warning
    metrics["metadata_shortcut"] = shortcut

    levels = sweep_levels(settings.jpeg_qualities, settings.blur_sigmas, settings.downscales)
    robustness, swept = run_sweep(
        lambda degraded: predictor.predict_proba(degraded, settings.batch_size)[:, 0],
        images, is_positive, config.threshold, levels, settings.sweep_seed,
    )  # fmt: skip
    metrics |= wild_summary(robustness)
    if unseen.any():
        on_unseen = subset_rows(robustness, swept, is_positive, config.threshold, unseen)
        metrics |= source_metrics(truth, predicted, p_positive, class_names, unseen, on_unseen)
        metrics["unseen_sources"] = sorted(set(unseen_sources))
    per_source = per_source_metrics(
        sources, truth, predicted, p_positive, class_names, subsets=lambda keep: subset_rows(
            robustness, swept, is_positive, config.threshold, keep), unseen_sources=unseen_sources,
    )  # fmt: skip
    pooled_p, pooled_truth = np.concatenate(swept), np.tile(is_positive, len(swept))
    metrics["ece_sweep_pooled"] = expected_calibration_error(pooled_p, pooled_truth)

    experts = [expert for expert, _ in predictor.experts(images)]  # who answered each image as stored
    if predictor.forensic is not None:
        metrics["experts_as_stored"] = {name: experts.count(name) for name in sorted(set(experts))}
    predictions = [
        {"path": row["path"], "source": source, "actual": actual, "predicted": guess, f"p_{positive}": float(p),
         "expert": expert}
        for row, source, actual, guess, p, expert in zip(test_rows, sources, truth, predicted, p_positive, experts)
    ]  # fmt: skip
    return Evaluation(
        metrics=metrics,
        confusion=confusion(truth, predicted, class_names),
        roc=roc_points(truth, p_positive, positive),
        reliability_before=reliability(raw_p_positive, is_positive),
        reliability_after=reliability(p_positive, is_positive),
        reliability_sweep=reliability(pooled_p, pooled_truth),
        robustness=robustness,
        predictions=predictions,
        per_source=per_source,
    )


def source_metrics(
    truth: list[str],
    predicted: list[str],
    p_positive: np.ndarray,
    class_names: list[str],
    unseen: np.ndarray,
    unseen_sweep: list[dict],
) -> dict[str, float]:
    """Accuracy, ROC AUC and wild accuracy on the test images of held-out sources (`unseen`, with their
    sweep rows), and accuracy on the rest of the test split (sources the model trained on)."""

    def scores(keep: np.ndarray) -> dict:
        picked = np.flatnonzero(keep)
        return classification_metrics(
            [truth[i] for i in picked], [predicted[i] for i in picked], p_positive[picked], class_names
        )

    on_unseen = scores(unseen)
    metrics = {
        "unseen_source_accuracy": on_unseen["accuracy"],
        "unseen_source_roc_auc": on_unseen["roc_auc"],
        "unseen_source_wild_accuracy": wild_summary(unseen_sweep)["wild_accuracy"],
        "unseen_source_images": int(unseen.sum()),
    }
    if not unseen.all():
        metrics["seen_source_accuracy"] = scores(~unseen)["accuracy"]
    return metrics


FLAT_SOURCE = "(all)"  # the name per_source.json gives the images of a flat class-per-folder tree (source "")


def per_source_metrics(
    sources: list[str],
    truth: list[str],
    predicted: list[str],
    p_positive: np.ndarray,
    class_names: list[str],
    subsets,
    unseen_sources: Collection[str] = (),
) -> dict[str, dict]:
    """Per source (the folder under data.dir, or under the split folder), as the field reports per generator:
    images, accuracy, ROC AUC (None with one class), each class's recall, and accuracy per wild condition
    (`subsets(keep)`: the robustness sweep rows rescored on those images) with their mean; `unseen` marks
    the sources split.test_sources held out. Ordered worst first (lowest accuracy, then wild accuracy)."""
    table = {}
    for source in sorted(set(sources)):
        keep = np.array([s == source for s in sources], dtype=bool)
        picked = np.flatnonzero(keep)
        scores = classification_metrics(
            [truth[i] for i in picked], [predicted[i] for i in picked], p_positive[picked], class_names
        )
        wild = {f"{row['kind']}_{row['level']:g}": row["accuracy"] for row in subsets(keep)
                if (row["kind"], row["level"]) in WILD_CONDITIONS}  # fmt: skip
        table[source or FLAT_SOURCE] = {
            "unseen": source in unseen_sources,
            "n_images": int(keep.sum()),
            "accuracy": scores["accuracy"],
            "roc_auc": None if np.isnan(scores["roc_auc"]) else scores["roc_auc"],
            **{f"{name}_recall": scores[name]["recall"] if scores[name]["support"] else None for name in class_names},
            "wild_accuracy": float(np.mean(list(wild.values()))),
            "wild": wild,
        }
    return dict(sorted(table.items(), key=lambda item: (item[1]["accuracy"], item[1]["wild_accuracy"], item[0])))


def confident_mistakes(predictions: list[dict], class_names: list[str], limit: int) -> dict[str, list[dict]]:
    """The most confident errors of each kind, titled from the class names (positive first): false
    alarms ("real called ai", highest p) and misses ("ai called real", lowest p)."""
    positive, negative = class_names[:2]
    key = f"p_{positive}"
    false_alarms = [p for p in predictions if p["actual"] != positive and p["predicted"] == positive]
    misses = [p for p in predictions if p["actual"] == positive and p["predicted"] != positive]
    return {
        f"{negative} called {positive}": sorted(false_alarms, key=lambda p: -p[key])[:limit],
        f"{positive} called {negative}": sorted(misses, key=lambda p: p[key])[:limit],
    }


def promotion_gate(settings: EvaluateParams, unseen_sources: bool = False) -> dict[str, float]:
    """The minimum test scores a model needs to become @champion; the held-out sources' wild accuracy
    (evaluate.min_unseen_wild_accuracy) counts only when the test split has some (split.test_sources)."""
    gate = {
        "min_accuracy": settings.min_accuracy,
        "min_roc_auc": settings.min_roc_auc,
        "min_wild_accuracy": settings.min_wild_accuracy,
    }
    if unseen_sources:
        gate["min_unseen_source_wild_accuracy"] = settings.min_unseen_wild_accuracy
    return gate


def describe_gate(gate: dict[str, float]) -> str:
    """The gate in words, as the report and the summary print it: `accuracy >= 0.75, ROC AUC >= 0.8, ...`."""
    names = {"roc_auc": "ROC AUC"}
    return ", ".join(
        f"{names.get(key.removeprefix('min_'), key.removeprefix('min_').replace('_', ' '))} >= {minimum:g}"
        for key, minimum in gate.items()
    )


def passes_gate(metrics: dict, gate: dict[str, float]) -> bool:
    """Every gated score (`min_<name>` needs `<name>`) at or above its minimum."""
    return all(metrics[name.removeprefix("min_")] >= minimum for name, minimum in gate.items())
