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


def reliability_figure(before: dict, after: dict, temperature: float, positive: str, sweep: dict | None = None):
    """Reliability diagram: predicted p(positive) against the observed share, before and after scaling,
    and (`sweep`) over every robustness sweep level pooled."""
    figure, axes = plt.subplots(figsize=(4.6, 4.0), dpi=110)
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    curves = [(before, "test, T = 1", "o"), (after, f"test, T = {temperature:.2f}", "s")]
    if sweep is not None:
        curves.append((sweep, f"robustness sweep pooled, T = {temperature:.2f}", "^"))
    for table, name, marker in curves:
        used = table["count"] > 0
        axes.plot(table["predicted"][used], table["observed"][used], marker=marker, label=name)
    axes.set(xlabel=f"predicted p({positive})", ylabel=f"observed share of {positive}", xlim=(0, 1), ylim=(0, 1),
             title="Reliability")  # fmt: skip
    axes.legend(loc="upper left")
    figure.tight_layout()
    return figure


SWEEP_AXES = {"jpeg": "JPEG quality", "blur": "blur sigma (px)", "downscale": "downscale factor"}


def robustness_figure(rows: list[dict]):
    """Accuracy and ROC AUC per degradation level, one panel per kind of degradation."""
    kinds = [kind for kind in SWEEP_AXES if any(row["kind"] == kind for row in rows)]
    figure, panels = plt.subplots(1, len(kinds) + 1, figsize=(3.3 * (len(kinds) + 1), 3.2), dpi=110, sharey=True)
    for axes, kind in zip(panels, kinds):
        levels = [row for row in rows if row["kind"] == kind]
        for metric, marker in (("accuracy", "o"), ("roc_auc", "s")):
            axes.plot([r["level"] for r in levels], [r[metric] for r in levels], marker=marker, label=metric)
        if kind in ("jpeg", "downscale"):
            axes.invert_xaxis()  # left to right: worse images
        axes.set(xlabel=SWEEP_AXES[kind], ylim=(0, 1.02), title=kind)
    clean = next((row for row in rows if row["kind"] == "blur" and row["level"] == 0), None)
    names = {"webp": "WebP {:g}", "shrink": "shrink x{:g}", "social": "social"}
    bars = ([("clean", clean)] if clean else []) + [
        (names[row["kind"]].format(row["level"]), row) for row in rows if row["kind"] in names
    ]
    for offset, metric in ((-0.2, "accuracy"), (0.2, "roc_auc")):
        panels[-1].bar([i + offset for i in range(len(bars))], [row[metric] for _, row in bars], 0.4, label=metric)
    panels[-1].set_xticks(range(len(bars)), [name for name, _ in bars])
    panels[-1].set(title="as users' images arrive")
    panels[0].set_ylabel("score")
    panels[0].legend(loc="lower left")
    figure.tight_layout()
    return figure


def gallery_figure(groups: dict[str, list[tuple[object, str]]]):
    """Rows of (image, caption) per group, e.g. the most confident mistakes of each kind."""
    columns = max([len(items) for items in groups.values()] + [1])
    figure, grid = plt.subplots(len(groups), columns, figsize=(2.2 * columns, 2.5 * len(groups)), dpi=110,
                                squeeze=False)  # fmt: skip
    for row, (title, items) in enumerate(groups.items()):
        for column in range(columns):
            axes = grid[row][column]
            axes.axis("off")
            if column < len(items):
                image, caption = items[column]
                axes.imshow(image)
                axes.set_title(caption, fontsize=8)
            elif column == 0:
                axes.text(0.5, 0.5, "none", ha="center", va="center")
        grid[row][0].text(-0.1, 0.5, title, transform=grid[row][0].transAxes, rotation=90, ha="right", va="center")
    figure.tight_layout()
    return figure
