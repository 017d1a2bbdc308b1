"""The one place that knows image size, crop and normalisation (timm's build_transforms idea)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from aivsreal.degradations import RandomDegrade

# ImageNet statistics: what the pretrained ResNet18 expects, and a fine default without it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(
    image_size: int,
    resize: int,
    train: bool,
    hflip: bool = False,
    random_crop: bool = False,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    degrade: RandomDegrade | None = None,
    color_jitter: float = 0.0,
    grayscale_prob: float = 0.0,
) -> T.Compose:
    """PIL RGB image -> normalised tensor. `resize=0` crops at native resolution.

    `degrade` (training only) blurs and re-compresses the full image before any resize or crop,
    as Wang et al. (2020) do, so the network learns traces that survive both. `color_jitter` and
    `grayscale_prob` (training only) change the colours of the crop, as SimCLR's augmentation does.
    """
    steps: list = []
    if train and degrade is not None:
        steps.append(degrade)
    if resize:
        steps.append(T.Resize(resize, antialias=True))
    if train and random_crop:
        # pad_if_needed: an image smaller than the crop is padded, not rejected
        steps.append(T.RandomCrop(image_size, pad_if_needed=True, padding_mode="reflect"))
    else:
        steps.append(T.CenterCrop(image_size))
    if train and hflip:
        steps.append(T.RandomHorizontalFlip())
    if train and color_jitter > 0:
        steps.append(
            T.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=color_jitter / 4)
        )
    if train and grayscale_prob > 0:
        steps.append(T.RandomGrayscale(grayscale_prob))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def eval_geometry(image_size: int, resize: int) -> T.Compose:
    """The PIL part of the evaluation transform (resize, centre crop): what `build_transforms`
    does before ToTensor/Normalize when `train=False`."""
    return T.Compose(([T.Resize(resize, antialias=True)] if resize else []) + [T.CenterCrop(image_size)])


def normalise_batch(
    images: list[Image.Image], mean: tuple[float, ...], std: tuple[float, ...], geometry=None, threads: int = 1
) -> torch.Tensor:
    """RGB images -> one normalised NCHW float batch, as (`geometry`, then) ToTensor + Normalize would give
    per image. Each image is resized and cropped by `geometry` (if given; the results must share one
    size), converted and normalised straight into its slot of the batch, in `threads` threads: Pillow
    and NumPy release the GIL, so the work of several images overlaps."""
    shift = np.asarray(mean, dtype=np.float32) * 255.0
    scale = 1.0 / (np.asarray(std, dtype=np.float32) * 255.0)

    def pixels(image: Image.Image) -> np.ndarray:
        array = np.asarray(geometry(image) if geometry else image, dtype=np.float32)  # HWC, a new array
        array -= shift
        array *= scale
        return array.transpose(2, 0, 1)

    if not images:
        raise ValueError("normalise_batch needs at least one image")
    first = pixels(images[0])
    batch = np.empty((len(images), *first.shape), dtype=np.float32)
    batch[0] = first

    def fill(index: int) -> None:
        batch[index] = pixels(images[index])

    if threads > 1 and len(images) > 2:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(fill, range(1, len(images))))
    else:
        for index in range(1, len(images)):
            fill(index)
    return torch.from_numpy(batch)
