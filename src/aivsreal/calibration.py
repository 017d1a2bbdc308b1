"""Calibration on the validation split: temperature scaling, the decision threshold, and ECE.

The temperature and threshold are saved in the model's config.json, so the evaluate stage,
the served model, the CLI and the web app all use them.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

from aivsreal.params import describe_threshold_rules

MAX_TEMPERATURE = 20.0  # softer than this is as good as "no idea"; the search needs an upper end


def fit_temperature(logits: np.ndarray, targets: np.ndarray, min_temperature: float = 0.05) -> float:
    """The T in [min_temperature, 20] minimising the negative log-likelihood of softmax(logits / T)
    (Guo et al., 2017). On a perfectly separated split the likelihood keeps rising as T falls, so
    without a sensible lower bound the fit sharpens every answer to 0 or 1."""

    from scipy.optimize import minimize_scalar  # here, not at the top: the CLI's start-up only needs softmax

    def nll(log_t: float) -> float:
        log_probs = log_softmax(logits / np.exp(log_t), axis=1)
        return float(-log_probs[np.arange(len(targets)), targets].mean())

    bounds = (np.log(min_temperature), np.log(MAX_TEMPERATURE))
    if bounds[0] >= bounds[1]:
        return float(min_temperature)
    result = minimize_scalar(nll, bounds=bounds, method="bounded")
    return float(np.clip(np.exp(result.x), min_temperature, MAX_TEMPERATURE))


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return softmax(logits / temperature, axis=1)


def clip_confidence(probabilities: np.ndarray, max_confidence: float) -> np.ndarray:
    """Each probability clipped to [1 - max_confidence, max_confidence], rows summing to 1 again."""
    if max_confidence >= 1.0:
        return probabilities
    clipped = np.clip(probabilities, 1.0 - max_confidence, max_confidence)
    return clipped / clipped.sum(axis=1, keepdims=True)


def choose_threshold(p_positive: np.ndarray, is_positive: np.ndarray, rule: str) -> float:
    """Threshold on p(positive) per `rule`:

    - `youden`: maximises TPR - FPR (balanced accuracy);
    - `max_accuracy`: maximises accuracy on these scores;
    - `fpr:X`: the lowest threshold whose false-positive rate is at most X (e.g. `fpr:0.05`);
    - `fixed:X`: X itself.
    Predictions are positive when p >= threshold. The rules pick an operating point among the
    validation scores; the threshold returned lies halfway between that score and the next
    lower one, which gives the same validation predictions with a margin on both sides (on
    a perfectly separated validation split, the top-scoring point would otherwise make the
    threshold the lowest AI score seen, e.g. p >= 1.0).
    """
    p_positive, is_positive = np.asarray(p_positive, dtype=float), np.asarray(is_positive, dtype=bool)
    name, _, value = rule.partition(":")
    if name == "fixed":
        return float(value)
    if is_positive.all() or not is_positive.any():
        raise ValueError("choosing a threshold needs scores of both classes")
    from sklearn.metrics import roc_curve  # here, not at the top: the CLI's start-up only needs softmax

    fpr, tpr, thresholds = roc_curve(is_positive, p_positive)
    thresholds = np.minimum(thresholds, 1.0)  # sklearn's first threshold is +inf
    if name == "youden":
        return _with_margin(thresholds[np.argmax(tpr - fpr)], p_positive)
    if name == "max_accuracy":
        candidates = np.unique(p_positive)
        accuracy = [((p_positive >= t) == is_positive).mean() for t in candidates]
        return _with_margin(candidates[int(np.argmax(accuracy))], p_positive)
    if name == "fpr":
        allowed = fpr <= float(value) + 1e-12
        return _with_margin(thresholds[allowed][np.argmax(tpr[allowed])], p_positive)
    raise ValueError(f"unknown threshold rule {rule!r}: use {describe_threshold_rules()}")


def _with_margin(threshold: float, scores: np.ndarray) -> float:
    """Halfway down to the next lower score: same decisions on `scores`, more room for new ones."""
    below = scores[scores < threshold]
    return float((threshold + below.max()) / 2) if below.size else float(threshold)


def reliability(p_positive: np.ndarray, is_positive: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Per equal-width bin of p(positive): mean predicted probability, observed frequency, count."""
    p_positive, is_positive = np.asarray(p_positive, dtype=float), np.asarray(is_positive, dtype=float)
    bins = np.minimum((p_positive * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    predicted = np.bincount(bins, weights=p_positive, minlength=n_bins) / np.maximum(count, 1)
    observed = np.bincount(bins, weights=is_positive, minlength=n_bins) / np.maximum(count, 1)
    return {"predicted": predicted, "observed": observed, "count": count}


def expected_calibration_error(p_positive: np.ndarray, is_positive: np.ndarray, n_bins: int = 10) -> float:
    """Count-weighted mean |predicted - observed| over the reliability bins (0 = perfectly calibrated)."""
    table = reliability(p_positive, is_positive, n_bins)
    weights = table["count"] / max(table["count"].sum(), 1)
    return float(np.sum(weights * np.abs(table["predicted"] - table["observed"])))
