"""Matplotlib figures for the report, MLflow and `dvc plots` (PNG: they render offline)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str = "Test confusion matrix"):
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=110)
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(ax=axes, cmap="Blues", colorbar=False)
    axes.set_title(title)
    figure.tight_layout()
    return figure


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, positive: str):
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=110)
    axes.plot(fpr, tpr, lw=2, label=f"model (AUC = {auc:.3f})")
    axes.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, positive class: {positive}")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def training_curves_figure(history: list[dict], best_epoch: int):
    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(8.4, 3.4), dpi=110)
    for split in ("train", "val"):
        loss_axes.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
        accuracy_axes.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker="o", label=split)
    for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.axvline(best_epoch, color="grey", ls=":", label=f"best epoch ({best_epoch})")
        axes.set(xlabel="epoch", ylabel=name, title=f"{name} per epoch")
        axes.legend()
    figure.tight_layout()
    return figure


def save(figure, path) -> None:
    figure.savefig(path)
    plt.close(figure)
