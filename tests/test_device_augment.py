"""train.augment_on device and train.cache_images: the batch degraded where the model runs gives what the
Pillow loader path gives, follows train.* and the seed, and trains; caching decoded images changes nothing."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_hardware import CPU, needs_cuda
from test_training import brightness_rows, tiny_params
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional import pil_to_tensor

from aivsreal import degradations
from aivsreal.degradations import RandomDegrade
from aivsreal.device_augment import DeviceAugment, degrade, jpeg
from aivsreal.hardware import CudaGraphs, HardwareError, StepSettings
from aivsreal.images import BadImageError
from aivsreal.training import decode_once, train, train_transform
from aivsreal.transforms import IMAGENET_MEAN, IMAGENET_STD

FACEBENCH = Path(__file__).resolve().parents[2] / "shared" / "facebench"


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


def device_degrade(image: Image.Image, factor: float = 1.0, sigma: float = 0.0, quality: int = 0) -> Image.Image:
    """device_augment.degrade on one image with these draws, as a PIL image of its own size."""
    batch = pil_to_tensor(image).float().unsqueeze(0)
    canvas, heights, widths = degrade(batch, torch.tensor([factor]), torch.tensor([sigma]), torch.tensor([quality]))
    return as_image(canvas[0, :, : heights[0], : widths[0]].to(torch.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_device_step_gives_what_the_pillow_step_gives(seed):
    image = smooth_image(seed=seed)
    shrunk = np.asarray(device_degrade(image, factor=0.6), dtype=int)
    # Pillow's weights; Pillow rounds to uint8 between its two passes, the matrices once: at most 1 level apart
    assert shrunk.shape == (48, 58, 3)
    assert np.abs(np.asarray(degradations.downscale(image, 0.6), dtype=int) - shrunk).max() <= 1
    # the two blurs differ far less than blurring changes the image (~39 dB)
    blurred = degradations.blur(image, 1.2)
    assert degradations.psnr(blurred, device_degrade(image, sigma=1.2)) > degradations.psnr(image, blurred) + 8
    assert np.array_equal(np.asarray(device_degrade(image)), np.asarray(image))  # no draw, no change
    for size, quality in (((96, 80), 70), ((90, 70), 60), ((37, 21), 95)):  # 90 x 70, 37 x 21: not whole blocks
        original = image.resize(size)
        resaved = degradations.jpeg(original, quality)
        # libjpeg's steps in floating point: ~48 dB from libjpeg's integer arithmetic, where a re-save at
        # quality 60-95 itself changes the image by 33-40 dB
        ours = device_degrade(original, quality=quality)
        assert degradations.psnr(resaved, ours) > max(44, degradations.psnr(original, resaved) + 6)
    chain = degradations.jpeg(degradations.blur(degradations.downscale(image, 0.7), 0.8), 75)
    assert degradations.psnr(chain, device_degrade(image, 0.7, 0.8, 75)) > 42


def test_the_jpeg_step_re_saves_real_faces_as_libjpeg_does():
    """On facebench faces (skipped without ../shared): the batched JPEG of four faces, each at its quality,
    is within ~1 grey level (RMS) of Pillow's files."""
    faces = sorted(FACEBENCH.glob("*/*/*.png"))[::400][:4]
    if not faces:
        pytest.skip(f"no facebench faces under {FACEBENCH}")
    images = [Image.open(face).convert("RGB") for face in faces]
    qualities = torch.tensor([60, 75, 90, 100])
    batch = torch.stack([pil_to_tensor(image) for image in images]).float()
    for image, quality, ours in zip(images, qualities.tolist(), jpeg(batch, qualities)):
        assert degradations.psnr(degradations.jpeg(image, quality), as_image(ours.to(torch.uint8))) > 45


def test_without_random_steps_the_device_batch_is_the_loader_batch():
    p = loader_params(downscale_prob=0.0, blur_prob=0.0, jpeg_prob=0.0, hflip=False, random_crop=False).train
    images = [smooth_image(96, 80, seed=i) for i in range(3)]
    on_device = DeviceAugment(p, CPU, seed=0)([pil_to_tensor(image) for image in images])
    loader = torch.stack([train_transform(p)(image) for image in images])
    assert on_device.shape == loader.shape == (3, 3, 32, 32)
    assert (on_device - loader).abs().max() < 3 / 255 / 0.22  # within ~2 grey levels after normalising


@pytest.mark.parametrize("size, resize", [((96, 80), 40), ((30, 28), 0), ((20, 14), 0)])
def test_each_random_crop_is_a_window_of_the_resized_padded_image(size, resize):
    """RandomCrop(pad_if_needed) and the flip: every device crop is a 32 px window (mirrored or not) of the image
    resized by torchvision and padded as RandomCrop pads (reflect; 20 x 14: too small to reflect, edge)."""
    p = loader_params(downscale_prob=0.0, blur_prob=0.0, jpeg_prob=0.0, resize=resize).train
    image = pil_to_tensor(smooth_image(*size))
    resized = F.resize(image, [resize], antialias=True) if resize else image
    height, width = resized.shape[-2:]
    pad_x, pad_y = max(0, 32 - width), max(0, 32 - height)
    mode = "reflect" if pad_x < width and pad_y < height else "edge"
    windows = F.pad(resized, [pad_x, pad_y], padding_mode=mode).float().unfold(1, 32, 1).unfold(2, 32, 1)
    mean, std = (torch.tensor(values).view(3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))
    mirrored = set()
    for crop in DeviceAugment(p, CPU, seed=0)([image] * 8):
        levels = (crop * std + mean) * 255
        distance = {
            flipped: (windows - candidate[:, None, None]).abs().amax(dim=(0, 3, 4)).min().item()
            for flipped, candidate in ((False, levels), (True, levels.flip(-1)))
        }
        flipped = min(distance, key=distance.get)
        assert distance[flipped] < 1.5, distance  # the same window to within rounding
        mirrored.add(flipped)
    assert mirrored == {False, True}


def test_the_device_batch_follows_the_seed_and_takes_any_sizes():
    p = loader_params(color_jitter=0.4, grayscale_prob=0.5).train
    sizes = [(96, 80), (50, 120), (20, 14), (33, 33)]  # (20, 14) and (33, 33): smaller than the crop after shrinking
    images = [pil_to_tensor(smooth_image(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]
    first, again, other = (DeviceAugment(p, CPU, seed)(images) for seed in (5, 5, 6))
    assert first.shape == (4, 3, 32, 32) and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_with_the_same_draws_the_device_batch_is_the_pillow_chain():
    """Every image shrunk, blurred and re-saved (probabilities 1, quality down to 30): the device batch is the
    loader path's Pillow chain with the same draws to within ~1 grey level on average, and the degradations
    change it as much as they change Pillow's; at probability 0 nothing random is left."""
    plain = loader_params(downscale_prob=0.0, blur_prob=0.0, jpeg_prob=0.0, hflip=False, random_crop=False).train
    always = dataclasses.replace(plain, downscale_prob=1.0, blur_prob=1.0, jpeg_prob=1.0, jpeg_quality_min=30)
    images = [smooth_image(seed=i) for i in range(4)]
    tensors = [pil_to_tensor(image) for image in images]
    draws = RandomDegrade.from_train_params(always).draw_batch(4, torch.Generator().manual_seed(0))  # what seed 0 draws
    chains = [
        degradations.jpeg(degradations.blur(degradations.downscale(image, factor), sigma), quality)
        for image, factor, sigma, quality in zip(images, *(draw.tolist() for draw in draws))
    ]
    pillow = torch.stack([train_transform(plain)(chain) for chain in chains])
    degraded, untouched = DeviceAugment(always, CPU, 0)(tensors), DeviceAugment(plain, CPU, 0)(tensors)
    assert torch.equal(untouched, DeviceAugment(plain, CPU, 1)(tensors))  # nothing random left
    per_image = (1, 2, 3)
    assert ((degraded - pillow).abs().mean(per_image) < 0.03).all()  # 0.03 after normalising: ~1.7 grey levels
    effect, pillow_effect = ((batch - untouched).abs().mean(per_image) for batch in (degraded, pillow))
    assert ((effect - pillow_effect).abs() < 0.15 * pillow_effect).all(), (effect, pillow_effect)
    assert (pillow_effect > 0.03).all()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"random_crop": False}, {"resize": 0, "image_size": 48}, {"color_jitter": 0.4, "grayscale_prob": 0.5},
     {"downscale_prob": 1.0, "blur_prob": 1.0, "jpeg_prob": 1.0}, {"downscale_prob": 0.0, "blur_prob": 0.0,
     "jpeg_prob": 0.0}],
)  # fmt: skip
@pytest.mark.parametrize("shapes", ["exact", "fixed"])
def test_the_device_path_never_waits_for_the_device(overrides, shapes):
    """On PyTorch's meta device tensors have shapes but no values: any step that reads a device value on the
    host (`.item()`, `nonzero`, a maximum turned into a Python number) fails there. The whole batch runs, so
    on a GPU the host never waits for the device to queue the next step; the batch has the CPU batch's shape,
    and the sizes after the shrink stay on the host, as the crop needs them."""
    p = loader_params(**overrides).train
    images = [pil_to_tensor(smooth_image(w, h, seed=i)) for i, (w, h) in enumerate([(96, 80)] * 5 + [(20, 14)])]
    meta = torch.device("meta")
    for given in (images, [image.to(meta) for image in images]):  # from the host, or cached on the device
        batch = DeviceAugment(p, meta, 0, shapes=shapes)(given)
        assert batch.device == meta and batch.shape == DeviceAugment(p, CPU, 0)(images).shape
    canvas, heights, widths = degrade(torch.stack(images[:5]).float().to(meta), *torch.tensor(
        [[0.5, 1.0, 1.0, 0.7, 1.0], [0.0, 1.5, 0.0, 0.8, 0.0], [0, 0, 70, 90, 0]]).unbind())  # fmt: skip
    assert canvas.shape == (5, 3, 80, 96) and heights.tolist() == [40, 80, 80, 56, 80] and not heights.is_meta


SETTINGS = [{}, {"random_crop": False}, {"resize": 0, "image_size": 48}, {"color_jitter": 0.4, "grayscale_prob": 0.5},
            {"downscale_prob": 1.0, "blur_prob": 1.0, "jpeg_prob": 1.0},
            {"downscale_prob": 0.0, "blur_prob": 0.0, "jpeg_prob": 0.0}]  # fmt: skip
GREY_LEVEL = 1.0001 / 255 / min(IMAGENET_STD)  # one uint8 step after normalising


def mixed_images(count: int = 6, seed: int = 0) -> list[torch.Tensor]:
    sizes = [(96, 80)] * count + [(20, 14), (50, 120)]
    return [pil_to_tensor(smooth_image(w, h, seed=seed + i)) for i, (w, h) in enumerate(sizes)]


@pytest.mark.parametrize("overrides", SETTINGS)
def test_fixed_shapes_give_the_exact_batch(overrides):
    """shapes fixed (what CUDA graphs replay) sends every image through every step and puts the undrawn ones
    back: the same batches as the exact path, batch after batch, up to float rounding that can move a value
    by one grey level."""
    p = loader_params(**overrides).train
    exact, fixed = DeviceAugment(p, CPU, 0), DeviceAugment(p, CPU, 0, shapes="fixed")
    for seed in range(3):
        images = mixed_images(seed=seed)
        ours, theirs = exact(images), fixed(images)
        difference = (ours - theirs).abs()
        assert difference.max() <= GREY_LEVEL and (difference == 0).float().mean() > 0.999


def test_fixed_shapes_keep_the_work_the_same_for_every_batch():
    """A CUDA graph replays one set of shapes: with fixed shapes the planned work of a batch size and image size
    is the same whatever the draws, where the exact path sizes it for each batch's draws."""
    p = loader_params().train
    plans = {}
    for shapes in ("exact", "fixed"):
        augment, generator = DeviceAugment(p, CPU, 0, shapes=shapes), torch.Generator().manual_seed(1)
        works = set()
        for _ in range(12):
            draws = augment.degrade.draw_batch(8, generator)
            crops, flips = torch.rand(2, 8, generator=generator), torch.rand(8, generator=generator) < 0.5
            works.add(augment._plan((80, 96), list(draws), crops, flips)[0])
        plans[shapes] = works
    assert len(plans["fixed"]) == 1 and len(plans["exact"]) > 1
    (work,) = plans["fixed"]
    assert (work.changed, work.resaved, work.masked) == (8, 8, True)
    with pytest.raises(ValueError, match="shapes must be one of"):
        DeviceAugment(p, CPU, 0, shapes="static")


def test_cuda_graphs_need_a_gpu():
    with pytest.raises(HardwareError, match="CUDA GPU"):
        CudaGraphs(CPU)
    with pytest.raises(HardwareError, match="augment_graphs"):
        StepSettings.resolve("auto", "auto", CPU, augment_on="device", augment_graphs=True)
    for setting in ("auto", False):
        assert not StepSettings.resolve("auto", "auto", CPU, augment_on="device", augment_graphs=setting).augment_graphs
    # on the loader path there is nothing to capture: true is ignored rather than refused
    assert not StepSettings.resolve("auto", "auto", CPU, augment_on="loader", augment_graphs=True).augment_graphs


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


@needs_cuda
def test_the_gpu_gives_the_cpu_batch_for_the_same_seed():
    """The draws come from a CPU generator, so a seed gives the same shrink, blur, JPEG, crop and flip on either
    device; only float rounding differs (which can move a JPEG coefficient by one step here and there)."""
    images = [pil_to_tensor(smooth_image(96, 80, seed=i)) for i in range(8)]
    on_cpu = DeviceAugment(loader_params().train, CPU, 3)(images)
    on_gpu = DeviceAugment(loader_params().train, torch.device("cuda"), 3)(images).cpu()
    assert (on_gpu - on_cpu).abs().mean() < 0.01 and (on_gpu - on_cpu).abs().max() < 0.5


@needs_cuda
def test_on_a_gpu_the_batch_is_queued_without_a_host_wait():
    """torch.cuda's sync debug mode raises on any copy or read that makes the host wait for the GPU."""
    cuda = torch.device("cuda")
    images = [pil_to_tensor(smooth_image(96, 80, seed=i)) for i in range(6)]
    steps = StepSettings.resolve("auto", "auto", cuda, augment_on="device")
    for p in (loader_params().train, loader_params(random_crop=False, jpeg_prob=1.0).train):
        augment, cached = DeviceAugment(p, cuda, 0), [image.to(cuda) for image in images]
        augment(cached)  # the first call makes JPEG's constant tensors, once per device
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            batches = [augment(cached), augment(images)]  # images cached on the GPU, or from the host
            targets = steps.tensor(torch.zeros(6, dtype=torch.long))  # pageable memory, pinned on the way
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(batch.is_cuda and batch.shape == (6, 3, 32, 32) for batch in batches) and targets.is_cuda


@needs_cuda
def test_cuda_graphs_replay_the_fixed_shape_batch_without_a_host_wait():
    """One graph per batch and image size, captured at the first batch and replayed for the next ones with new
    draws: each replay gives what the fixed-shape path gives operation by operation on the GPU, and queues
    without the host waiting for the GPU."""
    cuda = torch.device("cuda")
    p = loader_params().train
    graphs, eager = DeviceAugment(p, cuda, 4, shapes="graphs"), DeviceAugment(p, cuda, 4, shapes="fixed")
    batches = [[image.to(cuda) for image in mixed_images(count=6)[:6]]] * 4  # the same images, new draws
    replayed = [graphs(batch) for batch in batches[:1]]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        replayed += [graphs(batch) for batch in batches[1:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(graphs.graphs.graphs) == 1 and not graphs.graphs.failures
    for ours, batch in zip(replayed, batches, strict=True):
        theirs = eager(batch)
        assert (ours - theirs).abs().max() <= GREY_LEVEL
    assert not torch.equal(replayed[1], replayed[2])  # each replay its own draws, not the captured ones


@needs_cuda
def test_gpu_training_uses_cuda_graphs_for_the_augmentation(rows):
    result = train(loader_params(device="cuda", augment_on="device", augment_graphs="auto", epochs=2), *rows)
    assert result.augment_graphs and all(math.isfinite(row["train_loss"]) for row in result.history)
