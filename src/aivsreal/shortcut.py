"""Shortcut check: can the label be guessed from file metadata alone?

If a trivial classifier on file size, format, dimensions and JPEG quantisation beats chance
by far, the dataset leaks the label through how the files were stored, and a CNN's score
may measure that rather than the faces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.tree import DecisionTreeClassifier

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
FEATURES = ("file_bytes", "bytes_per_pixel", "width", "height", *(f"is_{f.lower()}" for f in FORMATS), "jpeg_q_mean")


def file_metadata(path: str | Path) -> list[float]:
    """The FEATURES of one file, read from its header without decoding pixels."""
    size = Path(path).stat().st_size
    with Image.open(path) as image:
        width, height = image.size
        fmt = image.format or ""
        tables = getattr(image, "quantization", None) or {}
    jpeg_q_mean = float(np.mean([np.mean(t) for t in tables.values()])) if tables else 0.0
    return [size, size / max(width * height, 1), width, height, *(float(fmt == f) for f in FORMATS), jpeg_q_mean]


def metadata_classifier_scores(
    train_paths: list[str], train_labels: list[str], test_paths: list[str], test_labels: list[str], seed: int
) -> dict:
    """Fit a depth-3 decision tree on train metadata; score it on test."""
    model = DecisionTreeClassifier(max_depth=3, random_state=seed)
    model.fit(np.array([file_metadata(p) for p in train_paths]), train_labels)
    predicted = model.predict(np.array([file_metadata(p) for p in test_paths]))
    importances = dict(zip(FEATURES, model.feature_importances_.round(3).tolist()))
    return {
        "accuracy": float(accuracy_score(test_labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(test_labels, predicted)),
        "top_feature": max(importances, key=importances.get),
        "feature_importances": importances,
    }
