"""Temperature scaling, threshold rules and ECE on hand-made scores."""

import numpy as np
import pytest
from scipy.special import softmax

from aivsreal.calibration import (
    choose_threshold,
    clip_confidence,
    expected_calibration_error,
    fit_temperature,
    reliability,
)

# Scores for 4 AI (positive) and 4 real images, hand-made so each rule has one right answer.
P_AI = np.array([0.95, 0.80, 0.60, 0.30, 0.70, 0.40, 0.20, 0.10])
IS_AI = np.array([True, True, True, True, False, False, False, False])


def youden(threshold: float) -> float:
    predicted = P_AI >= threshold
    return predicted[IS_AI].mean() - predicted[~IS_AI].mean()


def test_youden_picks_the_point_with_the_best_tpr_minus_fpr():
    threshold = choose_threshold(P_AI, IS_AI, "youden")
    assert youden(threshold) == max(youden(t) for t in P_AI) == 0.5
    assert threshold == pytest.approx((0.80 + 0.70) / 2)  # first best point from the top, halfway to the next score


def test_a_perfectly_separated_validation_split_gets_a_threshold_with_margin():
    p_ai = np.array([1.0, 1.0, 0.999, 0.9, 0.2, 0.1, 0.0])
    is_ai = np.array([True, True, True, True, False, False, False])
    for rule in ("youden", "max_accuracy", "fpr:0.0"):
        threshold = choose_threshold(p_ai, is_ai, rule)
        assert threshold == pytest.approx(0.55), rule  # between the lowest AI (0.9) and the highest real (0.2)
        assert ((p_ai >= threshold) == is_ai).all()


def test_max_accuracy_rule_maximises_accuracy():
    threshold = choose_threshold(P_AI, IS_AI, "max_accuracy")
    best = max(((P_AI >= t) == IS_AI).mean() for t in P_AI)
    assert ((P_AI >= threshold) == IS_AI).mean() == best == 0.75


def test_fpr_rule_respects_the_false_positive_budget():
    threshold = choose_threshold(P_AI, IS_AI, "fpr:0.0")
    assert threshold == pytest.approx(0.75)  # above the highest real score (0.70), catching 2 of 4 AI
    assert not (P_AI[~IS_AI] >= threshold).any()
    loose = choose_threshold(P_AI, IS_AI, "fpr:0.25")
    assert loose == pytest.approx(0.50) and (P_AI[~IS_AI] >= loose).mean() <= 0.25


def test_fixed_rule_and_bad_rules():
    assert choose_threshold(P_AI, IS_AI, "fixed:0.42") == 0.42
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(P_AI, IS_AI, "median")
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(P_AI[:4], IS_AI[:4], "youden")


def test_ece_of_a_perfectly_calibrated_toy_is_about_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    outcome = rng.uniform(0, 1, p.size) < p  # the event happens with exactly the predicted probability
    assert expected_calibration_error(p, outcome) < 0.01


def test_ece_of_an_overconfident_model_is_large_and_reliability_shows_it():
    rng = np.random.default_rng(1)
    true_p = rng.uniform(0.3, 0.7, 50_000)
    outcome = rng.uniform(0, 1, true_p.size) < true_p
    claimed = np.where(true_p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(claimed, outcome) > 0.3
    table = reliability(claimed, outcome)
    assert table["count"].sum() == claimed.size and table["count"][0] > 0 and table["count"][9] > 0
    assert table["observed"][9] == pytest.approx(0.6, abs=0.05)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (20_000, 2))
    true_temperature = 2.5
    labels = (rng.uniform(0, 1, len(logits)) < softmax(logits / true_temperature, axis=1)[:, 1]).astype(int)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_a_separable_split_cannot_sharpen_the_model_below_the_temperature_bound():
    """Perfectly separated validation logits: the unbounded fit runs to its floor (T 0.05 sharpened the
    facebench champion's answers to p = 1e-50); the bound keeps T where params.yaml puts it."""
    logits = np.array([[2.0, -2.0]] * 10 + [[-1.0, 1.0]] * 10)
    targets = np.array([0] * 10 + [1] * 10)
    assert fit_temperature(logits, targets) == pytest.approx(0.05, rel=0.1)
    for bound in (1.0, 0.5):
        fitted = fit_temperature(logits, targets, min_temperature=bound)
        assert bound <= fitted <= bound * 1.001


def test_clip_confidence_bounds_every_probability_and_keeps_rows_summing_to_one():
    p = np.array([[1.0, 0.0], [1e-30, 1.0 - 1e-30], [0.3, 0.7]])
    clipped = clip_confidence(p, 0.9999)
    assert clipped.min() >= 1e-4 - 1e-15 and clipped.max() <= 0.9999 + 1e-15
    assert np.allclose(clipped.sum(axis=1), 1.0)
    assert np.allclose(clipped[2], [0.3, 0.7])  # a moderate answer is left alone
    assert clip_confidence(p, 1.0) is p
