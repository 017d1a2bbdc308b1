"""The one place that knows image size, crop and normalisation (timm's build_transforms idea)."""

from __future__ import annotations

from torchvision import transforms as T

from aivsreal.degradations import RandomBlurJPEG

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
    degrade: RandomBlurJPEG | None = None,
) -> T.Compose:
    """PIL RGB image -> normalised tensor. `resize=0` crops at native resolution.

    `degrade` (training only) blurs and re-compresses the full image before any resize or crop,
    as Wang et al. (2020) do, so the network learns traces that survive both.
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
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)
