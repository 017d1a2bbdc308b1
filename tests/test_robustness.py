"""Degradations really degrade, sweeps are deterministic, and a no-op sweep cannot pass silently."""

import math
import random

import numpy as np
import pytest
import torch
from helpers_images import random_image
from PIL import Image

from aivsreal.degradations import RandomBlurJPEG, blur, jpeg, psnr, rescale, social_media
from aivsreal.robustness import Level, run_sweep, sweep_levels


def smooth_face_like(seed: int) -> Image.Image:
    """Structured content (gradients plus noise), where blur and JPEG act like on photos."""
    y, x = np.mgrid[0:64, 0:64]
    rng = np.random.default_rng(seed)
    base = 128 + 60 * np.sin(x / 7 + seed) * np.cos(y / 9) + rng.normal(0, 12, (64, 64))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), mode="L").convert("RGB")


def test_each_degradation_changes_pixels_and_more_severe_means_lower_psnr():
    image = smooth_face_like(0)
    assert psnr(image, image) == math.inf
    assert psnr(image, jpeg(image, 30)) < psnr(image, jpeg(image, 90)) < math.inf
    assert psnr(image, blur(image, 3)) < psnr(image, blur(image, 1)) < math.inf
    assert psnr(image, rescale(image, 0.25)) < psnr(image, rescale(image, 0.5)) < math.inf
    assert psnr(image, social_media(image, random.Random(0))) < math.inf
    assert blur(image, 0).tobytes() == image.tobytes() and rescale(image, 0.5).size == image.size


def test_sweep_rows_cover_every_level_and_repeat_exactly_for_a_seed():
    images = [smooth_face_like(i) for i in range(6)]
    is_positive = np.array([True, False] * 3)

    def brightness_score(batch):  # a stand-in detector: deterministic and sensitive to the pixels
        return np.array([np.asarray(im, dtype=float).std() / 80 for im in batch])

    levels = sweep_levels([90, 30], [0.0, 2.0], [1.0, 0.5])
    first = run_sweep(brightness_score, images, is_positive, 0.5, levels, seed=3)
    assert [(r["kind"], r["level"]) for r in first] == [
        ("jpeg", 90), ("jpeg", 30), ("blur", 0.0), ("blur", 2.0), ("downscale", 1.0), ("downscale", 0.5), ("social", 1)
    ]  # fmt: skip
    assert first == run_sweep(brightness_score, images, is_positive, 0.5, levels, seed=3)
    clean = {(r["kind"], r["level"]): r for r in first}
    assert clean[("blur", 0.0)]["mean_psnr_db"] == math.inf and clean[("blur", 0.0)]["images_changed"] == 0
    assert clean[("blur", 2.0)]["images_changed"] == 6 and clean[("jpeg", 30)]["mean_psnr_db"] < 40


def test_a_degradation_that_changes_nothing_is_an_error():
    broken = Level("jpeg", 50, lambda image, rng: image.copy())  # claims to degrade, does not
    with pytest.raises(RuntimeError, match="unchanged"):
        run_sweep(lambda batch: np.zeros(len(batch)), [smooth_face_like(0)], np.array([True]), 0.5, [broken], 0)


def test_training_augmentation_follows_its_probabilities_and_the_torch_seed():
    image = smooth_face_like(1)
    never = RandomBlurJPEG(0.0, 3.0, 0.0, 30)
    assert never(image).tobytes() == image.tobytes()
    always = RandomBlurJPEG(1.0, 3.0, 1.0, 30)
    torch.manual_seed(0)
    once = always(image)
    torch.manual_seed(0)
    again = always(image)
    assert psnr(image, once) < math.inf and once.tobytes() == again.tobytes()


def test_jpeg_of_a_noise_image_keeps_size_and_mode():
    image = random_image((33, 17), seed=2)
    out = jpeg(image, 50)
    assert out.size == image.size and out.mode == "RGB"
