"""Test metrics from scikit-learn: the seed's per-class table plus threshold-free scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
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
