"""train.augment_on device and train.cache_images: the batch degraded where the model runs gives what the
Pillow loader path gives, follows train.* and the seed, and trains; caching decoded images changes nothing."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_hardware import CPU, needs_cuda
from test_training import brightness_rows, tiny_params
from torchvision.transforms.v2.functional import pil_to_tensor

from aivsreal import degradations
from aivsreal.device_augment import DeviceAugment, blur, decode_jpeg, jpeg_bytes, shrink
from aivsreal.hardware import StepSettings
from aivsreal.images import BadImageError
from aivsreal.training import decode_once, train, train_transform


def smooth_image(width: int = 96, height: int = 80, seed: int = 0) -> Image.Image:
    """A photo-like image: smooth colour waves with a little noise (pure noise exaggerates every resampling
    difference)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        127 + 90 * np.sin(x / rng.uniform(6, 14) + phase) * np.cos(y / rng.uniform(6, 14)) for phase in (0, 1, 2)
    ]
    array = np.stack(channels, -1) + rng.normal(0, 3, (height, width, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def as_image(tensor: torch.Tensor) -> Image.Image:
    return Image.fromarray(tensor.permute(1, 2, 0).numpy())


def loader_params(**overrides):
    """The tiny training params with the facebench preset's degradations (every probability on)."""
    preset = {"resize": 40, "image_size": 32, "downscale_prob": 0.5, "downscale_min": 0.5, "blur_prob": 0.2,
              "blur_sigma_max": 1.5, "jpeg_prob": 0.8, "jpeg_quality_min": 60}  # fmt: skip
    return tiny_params(**(preset | overrides))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_device_step_gives_what_the_pillow_step_gives(seed):
    image = smooth_image(seed=seed)
    tensor = pil_to_tensor(image)
    assert np.array_equal(  # JPEG: the very same pixels as Pillow's re-save (both libjpeg, same settings)
        np.asarray(degradations.jpeg(image, 70)), np.asarray(as_image(decode_jpeg(jpeg_bytes(tensor, 70))))
    )
    assert degradations.psnr(degradations.downscale(image, 0.6), as_image(shrink(tensor, 0.6))) > 60
    # the two blurs differ far less (measured ~51 dB) than blurring changes the image (~39 dB)
    blurred = degradations.blur(image, 1.2)
    assert degradations.psnr(blurred, as_image(blur(tensor, 1.2))) > degradations.psnr(image, blurred) + 8
    assert shrink(tensor, 0.6).shape == (3, 48, 58) and blur(tensor, 0.0) is tensor


def test_without_random_steps_the_device_batch_is_the_loader_batch():
    p = loader_params(downscale_prob=0.0, blur_prob=0.0, jpeg_prob=0.0, hflip=False, random_crop=False).train
    images = [smooth_image(96, 80, seed=i) for i in range(3)]
    on_device = DeviceAugment(p, CPU, seed=0)([pil_to_tensor(image) for image in images])
    loader = torch.stack([train_transform(p)(image) for image in images])
    assert on_device.shape == loader.shape == (3, 3, 32, 32)
    assert (on_device - loader).abs().max() < 3 / 255 / 0.22  # within ~2 grey levels after normalising


def test_the_device_batch_follows_the_seed_and_takes_any_sizes():
    p = loader_params(color_jitter=0.4, grayscale_prob=0.5).train
    sizes = [(96, 80), (50, 120), (20, 14), (33, 33)]  # (20, 14) and (33, 33): smaller than the crop after shrinking
    images = [pil_to_tensor(smooth_image(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]
    first, again, other = (DeviceAugment(p, CPU, seed)(images) for seed in (5, 5, 6))
    assert first.shape == (4, 3, 32, 32) and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_draws_follow_the_probabilities():
    """With the probabilities at 1, every image is shrunk, blurred and re-saved; at 0, none is."""
    images = [pil_to_tensor(smooth_image(seed=i)) for i in range(4)]
    plain = loader_params(downscale_prob=0.0, blur_prob=0.0, jpeg_prob=0.0, hflip=False, random_crop=False).train
    always = dataclasses.replace(plain, downscale_prob=1.0, blur_prob=1.0, jpeg_prob=1.0, jpeg_quality_min=30)
    untouched = DeviceAugment(plain, CPU, 0)(images)
    degraded = DeviceAugment(always, CPU, 0)(images)
    assert torch.equal(untouched, DeviceAugment(plain, CPU, 1)(images))  # nothing random left
    changed = (degraded - untouched).abs().mean(dim=(1, 2, 3))
    assert (changed > 0.05).all(), changed


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    all_rows = brightness_rows(tmp_path_factory.mktemp("tiny"), 12, 20)
    return all_rows[::2], all_rows[1::2]


def test_training_with_device_augmentation_runs_and_learns_on_the_cpu(rows):
    for cache in (False, True):
        result = train(loader_params(augment_on="device", cache_images=cache, epochs=6, lr=0.003), *rows)
        assert (result.augment_on, result.cache_images) == ("device", cache)
        losses = [row["train_loss"] for row in result.history]
        assert all(math.isfinite(row["val_loss"]) for row in result.history)
        # (validation on 12 images after batch-norm on batches of 8 swings from epoch to epoch on either path)
        assert losses[-1] < 0.5 * losses[0], losses  # brightness survives every degradation: it learns
    # weight averaging recomputes batch-norm statistics over device-augmented training batches
    averaged = train(loader_params(augment_on="device", epochs=3, swa_start=2), *rows)
    assert averaged.averaged_epochs == [2, 3] and averaged.augment_on == "device"


def test_caching_decoded_images_trains_the_same_weights(rows):
    """The loader path with cache_images true reads the same pixels as from the files: bit-for-bit the same model."""
    plain = train(loader_params(cache_images=False), *rows)
    cached = train(loader_params(cache_images=True), *rows)
    assert (plain.augment_on, plain.cache_images, cached.cache_images) == ("loader", False, True)
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, cached.model.state_dict()[key]), key


def test_on_the_cpu_auto_augments_in_the_loader_without_a_cache():
    steps = StepSettings.resolve("auto", "auto", CPU, augment_on="auto")
    assert steps.augment_on == "loader"
    assert steps.cache_images("auto", lambda: pytest.fail("auto on the loader path needs no size")) is False
    on_device = StepSettings.resolve("auto", "auto", CPU, augment_on="device")
    assert on_device.cache_images("auto", lambda: 10**6) is True  # a megabyte fits in half the free RAM
    assert on_device.cache_images("auto", lambda: 10**18) is False  # an exabyte does not


def test_a_bad_file_stops_the_cache_with_its_reason(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    smooth_image().save(good)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert decode_once([str(good)], 10**8, CPU)[0].shape == (3, 80, 96)
    with pytest.raises(BadImageError):
        decode_once([str(good), str(bad)], 10**8)


@needs_cuda
def test_device_augmentation_trains_on_a_gpu_with_the_images_cached_there(rows):
    steps = StepSettings.resolve("auto", "auto", torch.device("cuda"), augment_on="auto")
    assert steps.augment_on == "device"
    result = train(loader_params(device="cuda", augment_on="auto", cache_images="auto", epochs=2), *rows)
    assert (result.augment_on, result.cache_images) == ("device", True)
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    batch = DeviceAugment(loader_params().train, torch.device("cuda"), 0)([pil_to_tensor(smooth_image())] * 4)
    assert batch.is_cuda and batch.shape == (4, 3, 32, 32)


def test_without_torchcodec_image_codecs_torchvision_re_saves_the_same_jpeg():
    """An older torch has no TorchCodec that reads images: the JPEG step then uses torchvision.io, same pixels."""
    code = """
import sys
sys.modules["torchcodec"] = None  # import torchcodec now fails, as where it is missing
import numpy as np
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor
from aivsreal import degradations, device_augment
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
resaved = device_augment.decode_jpeg([device_augment.jpeg_bytes(pil_to_tensor(image), 70)])[0]
assert device_augment.decode_jpeg.__module__.startswith("torchvision"), device_augment.decode_jpeg.__module__
assert np.array_equal(np.asarray(degradations.jpeg(image, 70)), resaved.permute(1, 2, 0).numpy())
"""
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
