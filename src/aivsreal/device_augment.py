"""Training augmentation where the model runs (`train.augment_on: device`): a batch of decoded images in,
a normalised, degraded, cropped batch out, on the training device.

On a GPU the loader path (transforms.py: Pillow in DataLoader workers shrinks, blurs, re-saves as JPEG,
resizes, crops and flips every image) sets the pace: a few milliseconds of CPU work per image against a
fraction of a millisecond of GPU work (benchmarks/gpu.py prints both). On the device path the loader only
hands over decoded uint8 images, or they are decoded once and kept on the device (`train.cache_images`),
and each batch goes through the same steps here:

| step | loader path (Pillow) | device path (this module) |
|---|---|---|
| shrink (kept small) | bicubic | torchvision resize, bicubic, antialias |
| blur | GaussianBlur(radius=sigma) | torchvision gaussian_blur, kernel 2 * ceil(3 sigma) + 1 |
| JPEG re-save | Pillow (libjpeg) | TorchCodec JpegEncoder + batched decode_jpeg (libjpeg on a CPU, nvJPEG on CUDA) |
| resize, crop, flip, colour, normalise | torchvision on PIL images | torchvision on tensors |

The degradations are drawn by `RandomDegrade.draw` itself (same probabilities, ranges and order as the
loader path), the crop, flip and colour as `build_transforms` makes them, from a generator seeded with
train.seed. On the CPU each step gives what the Pillow step gives to within rounding (JPEG: the same
bytes), which tests/test_device_augment.py checks.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from aivsreal.degradations import RandomDegrade
from aivsreal.params import TrainParams
from aivsreal.transforms import IMAGENET_MEAN, IMAGENET_STD


def shrink(image: torch.Tensor, factor: float) -> torch.Tensor:
    """degradations.downscale on a uint8 CHW tensor: `factor` of the size, bicubic with antialiasing."""
    height, width = image.shape[-2:]
    size = [max(1, round(height * factor)), max(1, round(width * factor))]
    return F.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)


def blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """degradations.blur on a uint8 CHW tensor: Gaussian blur of standard deviation `sigma` pixels."""
    if sigma <= 0:
        return image
    kernel = 2 * math.ceil(3 * sigma) + 1
    return F.gaussian_blur(image, [kernel, kernel], [sigma, sigma])


try:  # TorchCodec's image codecs (0.16 on), which replace torchvision.io's
    from torchcodec.decoders import decode_jpeg
    from torchcodec.encoders import JpegEncoder

    def _encode_jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
        return JpegEncoder(image).to_tensor(quality=quality)

except ImportError:  # an older torch, for which no TorchCodec decodes images: torchvision.io's (deprecated in 0.29)
    from torchvision.io import decode_jpeg, encode_jpeg

    def _encode_jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
        return encode_jpeg(image, quality=quality)


def jpeg_bytes(image: torch.Tensor, quality: int) -> torch.Tensor:
    """The JPEG file of a uint8 RGB CHW tensor at `quality`, as 1-D uint8 bytes on the CPU (decode_jpeg reads
    them there; with a CUDA image the encoding itself runs on the GPU with nvJPEG)."""
    return _encode_jpeg(image.contiguous(), int(quality)).cpu()


class DeviceAugment:
    """The training transform of `train_transform(p)` for a whole batch on `device`."""

    def __init__(
        self,
        p: TrainParams,
        device: torch.device,
        seed: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ):
        self.p, self.device = p, device
        self.degrade = RandomDegrade.from_train_params(p)  # the loader path's draws: probabilities, ranges, order
        self.generator = torch.Generator().manual_seed(seed)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        """uint8 RGB CHW images (any sizes, on any device) -> a float NCHW batch on the device."""
        p = self.p
        degraded, resaved = [], []
        for image in images:
            image = image.to(self.device, non_blocking=True)
            factor, sigma, quality = self.degrade.draw(self.generator) if self.degrade else (None, None, None)
            if factor is not None:
                image = shrink(image, factor)
            if sigma is not None:
                image = blur(image, sigma)
            if quality is not None:
                resaved.append(len(degraded))
                image = _encode_jpeg(image.contiguous(), quality)  # the file, still on the device
            degraded.append(image)
        if resaved:  # the files to the CPU only now (each copy waits for its encoding), then one decode call
            files = [degraded[index].cpu() for index in resaved]
            for index, image in zip(resaved, decode_jpeg(files, device=self.device)):
                degraded[index] = image
        batch = torch.stack([self._crop(image) for image in degraded]).float().div_(255)
        if p.hflip:
            flipped = (torch.rand(len(batch), generator=self.generator) < 0.5).to(self.device)
            batch = torch.where(flipped.view(-1, 1, 1, 1), batch.flip(-1), batch)
        if p.color_jitter > 0 or p.grayscale_prob > 0:
            batch = torch.stack([self._colour(image) for image in batch])
        return (batch - self.mean) / self.std

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        """Resize (shorter side to train.resize) and crop to train.image_size, as build_transforms does."""
        p, size = self.p, self.p.image_size
        if p.resize:
            image = F.resize(image, [p.resize], interpolation=InterpolationMode.BILINEAR, antialias=True)
        if not p.random_crop:
            return F.center_crop(image, [size, size])
        height, width = image.shape[-2:]
        if height < size or width < size:  # RandomCrop(pad_if_needed, reflect): pads each side by the shortfall
            pad_x, pad_y = max(0, size - width), max(0, size - height)
            # torch reflects only less than a side's length; a tinier image repeats its edge pixels instead
            mode = "reflect" if pad_x < width and pad_y < height else "edge"
            image = F.pad(image, [pad_x, pad_y], padding_mode=mode)
            height, width = image.shape[-2:]
        top = int(torch.randint(0, height - size + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=self.generator))
        return image[..., top : top + size, left : left + size]

    def _colour(self, image: torch.Tensor) -> torch.Tensor:
        """ColorJitter (brightness, contrast, saturation up to train.color_jitter, hue a quarter of it, in a
        random order) and RandomGrayscale, on one float image in [0, 1]."""
        p, strength = self.p, self.p.color_jitter
        if strength > 0:
            adjust = [
                (F.adjust_brightness, max(0.0, 1 - strength), 1 + strength),
                (F.adjust_contrast, max(0.0, 1 - strength), 1 + strength),
                (F.adjust_saturation, max(0.0, 1 - strength), 1 + strength),
                (F.adjust_hue, -strength / 4, strength / 4),
            ]
            for index in torch.randperm(len(adjust), generator=self.generator).tolist():
                function, low, high = adjust[index]
                image = function(image, self._uniform(low, high))
        if self._chance(p.grayscale_prob):
            image = F.rgb_to_grayscale(image, num_output_channels=3)
        return image

    def _chance(self, probability: float) -> bool:
        return probability > 0 and torch.rand(1, generator=self.generator).item() < probability

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * torch.rand(1, generator=self.generator).item()
