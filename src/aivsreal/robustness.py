"""Robustness sweeps on the test images: how accuracy and AUC fall as images are degraded.

Every level checks that the degradation really changed the pixels (PSNR < infinity for
any level but the identity), so a sweep can never silently do nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from aivsreal.degradations import blur, downscale, jpeg, psnr, rescale, social_media, webp


@dataclass(frozen=True)
class Level:
    kind: str  # none | jpeg | webp | blur | downscale (resized back) | shrink (kept small) | social
    value: float  # quality, sigma, factor, or repeat index
    apply: Callable[[Image.Image, random.Random], Image.Image]
    identity: bool = False  # the clean reference level: pixels must stay the same

    def degrade(self, images: list[Image.Image], seed: int = 0, key: str | None = None) -> list[Image.Image]:
        """The images in order, each degraded, with one generator per (seed, level), or per `key` when one
        is given (calibration's wild copies): the same draws every call."""
        rng = random.Random(key if key is not None else f"{seed}-{self.kind}-{self.value}")
        return [self.apply(image, rng) for image in images]


# How users' images arrive (issue 12), each applied to both classes alike: re-saved as JPEG or
# WebP, shrunk and fed at the smaller size, or a social-media chain (resize 0.6-0.9, JPEG 70-90).
# "Wild accuracy" is the mean accuracy over these conditions.
WILD_CONDITIONS = (("jpeg", 95), ("jpeg", 85), ("jpeg", 75), ("webp", 80), ("shrink", 0.5), ("social", 1))

DEGRADE = {
    "none": lambda im, rng, value: im.copy(),
    "jpeg": lambda im, rng, value: jpeg(im, int(value)),
    "webp": lambda im, rng, value: webp(im, int(value)),
    "blur": lambda im, rng, value: blur(im, value),
    "downscale": lambda im, rng, value: rescale(im, value),
    "shrink": lambda im, rng, value: downscale(im, value),
    "social": lambda im, rng, value: social_media(im, rng),
}


def level(kind: str, value: float) -> Level:
    """One sweep level; blur 0, downscale 1 and `none` are the identity."""
    identity = kind == "none" or (kind == "blur" and value == 0) or (kind == "downscale" and value == 1)
    return Level(kind, value, lambda im, rng: DEGRADE[kind](im, rng, value), identity=identity)


def wild_levels() -> list[Level]:
    return [level(kind, value) for kind, value in WILD_CONDITIONS]


def sweep_levels(jpeg_qualities: list[int], blur_sigmas: list[float], downscales: list[float]) -> list[Level]:
    """The evaluate stage's sweeps (params) plus every wild condition, each level once."""
    qualities = sorted(set(jpeg_qualities) | {q for kind, q in WILD_CONDITIONS if kind == "jpeg"}, reverse=True)
    levels = [level("jpeg", q) for q in qualities]
    levels += [level("blur", s) for s in blur_sigmas]
    levels += [level("downscale", f) for f in downscales]
    return levels + [level(kind, value) for kind, value in WILD_CONDITIONS if kind != "jpeg"]


def wild_summary(rows: list[dict]) -> dict[str, float]:
    """Mean accuracy and ROC AUC over the wild conditions among the sweep rows."""
    wild = [row for row in rows if (row["kind"], row["level"]) in WILD_CONDITIONS]
    if len(wild) != len(WILD_CONDITIONS):
        raise ValueError(f"the sweep lacks wild conditions: has {[(r['kind'], r['level']) for r in wild]}")
    return {
        "wild_accuracy": float(np.mean([row["accuracy"] for row in wild])),
        "wild_roc_auc": float(np.mean([row["roc_auc"] for row in wild])),
    }


def run_sweep(
    predict_positive: Callable[[list[Image.Image]], np.ndarray],
    images: list[Image.Image],
    is_positive: np.ndarray,
    threshold: float,
    levels: list[Level],
    seed: int,
) -> tuple[list[dict], list[np.ndarray]]:
    """One row per level: accuracy, ROC AUC and each class's recall on the degraded images, and
    their mean PSNR (a shrunk image is compared after scaling it back to the original size);
    and, per level, the scores `predict_positive` gave (for calibration and ensembles)."""
    rows, scores = [], []
    for level in levels:
        degraded = level.degrade(images, seed)
        same_size = [b if b.size == a.size else b.resize(a.size, Image.BICUBIC) for a, b in zip(images, degraded)]
        quality = [psnr(a, b) for a, b in zip(images, same_size)]
        changed = sum(math.isfinite(q) or a.size != b.size for q, a, b in zip(quality, images, degraded))
        if not level.identity and changed == 0:
            raise RuntimeError(f"degradation {level.kind}={level.value} left every image unchanged")
        p_positive = predict_positive(degraded)
        scores.append(p_positive)
        finite = [q for q in quality if math.isfinite(q)]
        rows.append(
            {
                "kind": level.kind,
                "level": level.value,
                **level_scores(p_positive, is_positive, threshold),
                "mean_psnr_db": float(np.mean(finite)) if finite else float("inf"),
                "images_changed": changed,
            }
        )
    return rows, scores


def level_scores(p_positive: np.ndarray, is_positive: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, ROC AUC and each class's recall of one sweep level's scores (NaN where a class is missing)."""
    both = 0 < is_positive.sum() < len(is_positive)
    called_positive = p_positive >= threshold
    nan = float("nan")
    return {
        "accuracy": float((called_positive == is_positive).mean()),
        "roc_auc": float(roc_auc_score(is_positive, p_positive)) if both else nan,
        "positive_recall": float(called_positive[is_positive].mean()) if is_positive.any() else nan,
        "negative_recall": float((~called_positive[~is_positive]).mean()) if not is_positive.all() else nan,
    }


def subset_rows(
    rows: list[dict], scores: list[np.ndarray], is_positive: np.ndarray, threshold: float, keep: np.ndarray
) -> list[dict]:
    """The sweep rows rescored on the images `keep` selects, from the scores run_sweep returned (no new predictions)."""
    return [
        {"kind": row["kind"], "level": row["level"], **level_scores(p[keep], is_positive[keep], threshold)}
        for row, p in zip(rows, scores, strict=True)
    ]
