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

from aivsreal.degradations import blur, jpeg, psnr, rescale, social_media


@dataclass(frozen=True)
class Level:
    kind: str  # jpeg | blur | downscale | social
    value: float  # quality, sigma, factor, or repeat index
    apply: Callable[[Image.Image, random.Random], Image.Image]
    identity: bool = False  # the clean reference level: pixels must stay the same


def sweep_levels(jpeg_qualities: list[int], blur_sigmas: list[float], downscales: list[float]) -> list[Level]:
    levels = [Level("jpeg", q, lambda im, rng, q=q: jpeg(im, q)) for q in jpeg_qualities]
    levels += [Level("blur", s, lambda im, rng, s=s: blur(im, s), identity=s == 0) for s in blur_sigmas]
    levels += [Level("downscale", f, lambda im, rng, f=f: rescale(im, f), identity=f == 1) for f in downscales]
    levels.append(Level("social", 1, social_media))
    return levels


def run_sweep(
    predict_positive: Callable[[list[Image.Image]], np.ndarray],
    images: list[Image.Image],
    is_positive: np.ndarray,
    threshold: float,
    levels: list[Level],
    seed: int,
) -> list[dict]:
    """One row per level: accuracy and ROC AUC on the degraded images, and their mean PSNR."""
    rows = []
    for level in levels:
        rng = random.Random(f"{seed}-{level.kind}-{level.value}")
        degraded = [level.apply(image, rng) for image in images]
        quality = [psnr(a, b) for a, b in zip(images, degraded)]
        changed = sum(math.isfinite(q) for q in quality)
        if not level.identity and changed == 0:
            raise RuntimeError(f"degradation {level.kind}={level.value} left every image unchanged")
        p_positive = predict_positive(degraded)
        both = 0 < is_positive.sum() < len(is_positive)
        finite = [q for q in quality if math.isfinite(q)]
        rows.append(
            {
                "kind": level.kind,
                "level": level.value,
                "accuracy": float(((p_positive >= threshold) == is_positive).mean()),
                "roc_auc": float(roc_auc_score(is_positive, p_positive)) if both else float("nan"),
                "mean_psnr_db": float(np.mean(finite)) if finite else float("inf"),
                "images_changed": changed,
            }
        )
    return rows
