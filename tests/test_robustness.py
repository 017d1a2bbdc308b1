"""Degradations really degrade, sweeps are deterministic, and a no-op sweep cannot pass silently."""

import math
import random

import numpy as np
import pytest
import torch
from helpers_images import random_image
from PIL import Image

from aivsreal.degradations import RandomDegrade, blur, downscale, jpeg, psnr, rescale, social_media, webp
from aivsreal.robustness import WILD_CONDITIONS, Level, level, run_sweep, sweep_levels, wild_levels, wild_summary


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
    assert psnr(image, webp(image, 50)) < psnr(image, webp(image, 90)) < math.inf
    assert blur(image, 0).tobytes() == image.tobytes() and rescale(image, 0.5).size == image.size


def test_wild_conditions_change_pixels_and_keep_the_size_they_should():
    image = smooth_face_like(0).resize((256, 256))
    for wild in wild_levels():
        out = wild.apply(image, random.Random(0))
        assert out.mode == "RGB" and out.tobytes() != image.tobytes(), wild.kind
        if wild.kind in ("jpeg", "webp"):  # re-saved: same size, new pixels
            assert out.size == image.size and psnr(image, out) < math.inf
    assert downscale(image, 0.5).size == (128, 128)  # fed at the smaller size, not resized back
    sizes = {social_media(image, random.Random(seed)).size for seed in range(20)}
    assert all(154 <= width <= 231 and width == height for width, height in sizes) and len(sizes) > 5
    assert social_media(image, random.Random(3)).tobytes() == social_media(image, random.Random(3)).tobytes()


def test_sweep_rows_cover_every_level_and_repeat_exactly_for_a_seed():
    images = [smooth_face_like(i) for i in range(6)]
    is_positive = np.array([True, False] * 3)

    def brightness_score(batch):  # a stand-in detector: deterministic and sensitive to the pixels
        return np.array([np.asarray(im, dtype=float).std() / 80 for im in batch])

    levels = sweep_levels([90, 30, 75], [0.0, 2.0], [1.0, 0.5])
    first, scores = run_sweep(brightness_score, images, is_positive, 0.5, levels, seed=3)
    assert [(r["kind"], r["level"]) for r in first] == [
        ("jpeg", 95), ("jpeg", 90), ("jpeg", 85), ("jpeg", 75), ("jpeg", 30), ("blur", 0.0), ("blur", 2.0),
        ("downscale", 1.0), ("downscale", 0.5), ("webp", 80), ("shrink", 0.5), ("social", 1),
    ]  # fmt: skip
    again, scores_again = run_sweep(brightness_score, images, is_positive, 0.5, levels, seed=3)
    assert first == again and all(np.array_equal(a, b) for a, b in zip(scores, scores_again))
    assert len(scores) == len(levels) and all(len(level_scores) == 6 for level_scores in scores)
    clean = {(r["kind"], r["level"]): r for r in first}
    assert clean[("blur", 0.0)]["mean_psnr_db"] == math.inf and clean[("blur", 0.0)]["images_changed"] == 0
    assert clean[("blur", 2.0)]["images_changed"] == 6 and clean[("jpeg", 30)]["mean_psnr_db"] < 40


def test_every_condition_treats_both_classes_alike_and_wild_accuracy_is_their_mean():
    images = [smooth_face_like(i).resize((96, 96)) for i in range(8)]
    is_positive = np.array([True, False] * 4)
    seen = []

    def record(batch):  # a stand-in detector that remembers what it was given
        seen.append([(im.size, im.tobytes()) for im in batch])
        return np.array([0.9, 0.1] * 4) if batch[0].size == (96, 96) else np.array([0.9] * 8)

    rows, _ = run_sweep(record, images, is_positive, 0.5, [level("none", 0)] + wild_levels(), seed=0)
    for (kind, value), batch in zip([("none", 0), *WILD_CONDITIONS], seen):
        rng = random.Random(f"0-{kind}-{value}")  # one draw sequence per condition, blind to the labels
        fresh = [level(kind, value).apply(im, rng) for im in images]
        assert batch == [(im.size, im.tobytes()) for im in fresh], kind
    with_true_labels = list(seen)
    seen.clear()
    run_sweep(record, images, ~is_positive, 0.5, [level("none", 0)] + wild_levels(), seed=0)
    assert seen == with_true_labels  # flipping every label changes nothing about the images
    assert rows[0]["accuracy"] == 1.0 and rows[0]["positive_recall"] == 1.0 and rows[0]["negative_recall"] == 1.0
    shrink = next(r for r in rows if r["kind"] == "shrink")
    assert shrink["accuracy"] == 0.5 and shrink["positive_recall"] == 1.0 and shrink["negative_recall"] == 0.0
    expected = np.mean([r["accuracy"] for r in rows[1:]])
    assert wild_summary(rows)["wild_accuracy"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="lacks wild conditions"):
        wild_summary(rows[:3])


def test_a_degradation_that_changes_nothing_is_an_error():
    broken = Level("jpeg", 50, lambda image, rng: image.copy())  # claims to degrade, does not
    with pytest.raises(RuntimeError, match="unchanged"):
        run_sweep(lambda batch: np.zeros(len(batch)), [smooth_face_like(0)], np.array([True]), 0.5, [broken], 0)


def test_training_augmentation_follows_its_probabilities_and_the_torch_seed():
    image = smooth_face_like(1)
    never = RandomDegrade(0.0, 3.0, 0.0, 30)
    assert never(image).tobytes() == image.tobytes()
    always = RandomDegrade(1.0, 3.0, 1.0, 30, downscale_prob=1.0, downscale_min=0.5)
    torch.manual_seed(0)
    once = always(image)
    torch.manual_seed(0)
    again = always(image)
    assert once.tobytes() == again.tobytes() and 32 <= once.width < 64 and once.size == (once.width, once.width)


def test_jpeg_of_a_noise_image_keeps_size_and_mode():
    image = random_image((33, 17), seed=2)
    out = jpeg(image, 50)
    assert out.size == image.size and out.mode == "RGB"
