"""Test metrics from scikit-learn: the seed's per-class table plus threshold-free scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def classification_metrics(
    true_labels: list[str], predicted_labels: list[str], p_positive: np.ndarray, class_names: list[str]
) -> dict:
    """Accuracy, per-class precision/recall/F1/support, ROC AUC and AP for class_names[0] (AI)."""
    positive = class_names[0]
    is_positive = np.array([label == positive for label in true_labels])
    precision, recall, f1, support = precision_recall_fscore_support(
        true_labels, predicted_labels, labels=class_names, zero_division=0
    )
    both_present = 0 < is_positive.sum() < len(is_positive)
    metrics = {
        "accuracy": float(accuracy_score(true_labels, predicted_labels)),
        "roc_auc": float(roc_auc_score(is_positive, p_positive)) if both_present else float("nan"),
        "average_precision": float(average_precision_score(is_positive, p_positive)) if both_present else float("nan"),
        "n_images": len(true_labels),
    }
    for i, name in enumerate(class_names):
        metrics[name] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
    return metrics


def confusion(true_labels: list[str], predicted_labels: list[str], class_names: list[str]) -> np.ndarray:
    """Rows: true class, columns: predicted class, in class_names order."""
    return confusion_matrix(true_labels, predicted_labels, labels=class_names)


def roc_points(true_labels: list[str], p_positive: np.ndarray, positive: str) -> dict[str, np.ndarray]:
    fpr, tpr, thresholds = roc_curve([label == positive for label in true_labels], p_positive)
    return {"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0)}


def operating_points(
    is_positive: np.ndarray, p_positive: np.ndarray, predicted_positive: np.ndarray, class_names: list[str]
) -> dict:
    """What the detection literature reports beyond accuracy (positive class = class_names[0], AI);
    each class's accuracy is keyed `<class>_accuracy`.

    TPR at a fixed FPR: the share of AI images caught while at most that share of real photos
    is wrongly flagged; EER: the rate where misses and false alarms are equal.
    """
    is_positive = np.asarray(is_positive, dtype=bool)
    predicted_positive = np.asarray(predicted_positive, dtype=bool)
    fpr, tpr, _ = roc_curve(is_positive, p_positive, drop_intermediate=False)  # every threshold: exact EER
    points = {
        "balanced_accuracy": float(balanced_accuracy_score(is_positive, predicted_positive)),
        f"{class_names[0]}_accuracy": float(predicted_positive[is_positive].mean()),
        f"{class_names[1]}_accuracy": float((~predicted_positive[~is_positive]).mean()),
    }
    for target in (0.10, 0.05, 0.01):
        # The ROC is a step function: the best TPR reachable without exceeding the FPR budget.
        points[f"tpr_at_fpr_{round(target * 100)}pct"] = float(tpr[fpr <= target + 1e-12].max())
    fnr = 1 - tpr
    crossing = int(np.argmin(np.abs(fnr - fpr)))
    points["eer"] = float((fnr[crossing] + fpr[crossing]) / 2)
    return points
