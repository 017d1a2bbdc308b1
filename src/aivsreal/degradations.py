"""Image degradations shared by training-time augmentation and the evaluate stage's robustness sweeps.

One implementation of each, so "JPEG quality 50" means the same thing in both places.
"""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image, ImageFilter


def reencode(image: Image.Image, file_format: str, quality: int) -> Image.Image:
    """Save in a lossy `file_format` (JPEG, WEBP) at `quality` (1-100) and decode again."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=file_format, quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG at `quality` (1-100) and decode again."""
    return reencode(image, "JPEG", quality)


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation `sigma` pixels (0 = unchanged)."""
    return image.filter(ImageFilter.GaussianBlur(radius=sigma)) if sigma > 0 else image.copy()


def webp(image: Image.Image, quality: int) -> Image.Image:
    """Re-encode as lossy WebP at `quality` (1-100) and decode again."""
    return reencode(image, "WEBP", quality)


def downscale(image: Image.Image, factor: float) -> Image.Image:
    """Shrink by `factor` (e.g. 0.5) and keep the smaller size, as a re-posted photo arrives."""
    width, height = image.size
    return image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BICUBIC)


def rescale(image: Image.Image, factor: float) -> Image.Image:
    """Downscale by `factor` and back up to the original size: detail is lost, size kept."""
    return downscale(image, factor).resize(image.size, Image.BICUBIC)


def social_media(image: Image.Image, rng: random.Random) -> Image.Image:
    """What a photo goes through when shared: a random resize to 60-90 % (kept), then JPEG 70-90."""
    return jpeg(downscale(image, rng.uniform(0.6, 0.9)), rng.randint(70, 90))


def psnr(original: Image.Image, degraded: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB; infinite when nothing changed."""
    a = np.asarray(original.convert("RGB"), dtype=np.float64)
    b = np.asarray(degraded.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class RandomDegrade(torch.nn.Module):
    """Training augmentation after Wang et al. (2020), in the order a shared photo meets them:
    downscale with probability p (kept small), blur with probability p, JPEG with probability p.

    Draws from torch's generator, so it follows `seed_everything` and DataLoader worker seeding.
    The same draws apply to every class: no class keeps a file history the other lacks.
    """

    def __init__(
        self,
        blur_prob: float,
        blur_sigma_max: float,
        jpeg_prob: float,
        jpeg_quality_min: int,
        downscale_prob: float = 0.0,
        downscale_min: float = 0.5,
    ):
        super().__init__()
        self.blur_prob, self.blur_sigma_max = blur_prob, blur_sigma_max
        self.jpeg_prob, self.jpeg_quality_min = jpeg_prob, jpeg_quality_min
        self.downscale_prob, self.downscale_min = downscale_prob, downscale_min

    @classmethod
    def from_train_params(cls, p) -> RandomDegrade | None:
        """The degradations of the `train` params (TrainParams), or None when every probability is 0."""
        if p.blur_prob <= 0 and p.jpeg_prob <= 0 and p.downscale_prob <= 0:
            return None
        return cls(p.blur_prob, p.blur_sigma_max, p.jpeg_prob, p.jpeg_quality_min, p.downscale_prob, p.downscale_min)

    def draw(self) -> tuple[float | None, float | None, int | None]:
        """One image's draws (what forward uses), in order: shrink factor, blur sigma, JPEG quality, each None
        when its coin says no, from torch's global generator."""
        factor = sigma = quality = None
        if self.downscale_prob > 0 and torch.rand(1).item() < self.downscale_prob:
            factor = float(torch.empty(1).uniform_(self.downscale_min, 1.0))
        if self.blur_prob > 0 and torch.rand(1).item() < self.blur_prob:
            sigma = float(torch.empty(1).uniform_(0.0, self.blur_sigma_max))
        if self.jpeg_prob > 0 and torch.rand(1).item() < self.jpeg_prob:
            quality = int(torch.randint(self.jpeg_quality_min, 101, (1,)))
        return factor, sigma, quality

    def draw_batch(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """`draw` for `n` images at once (device_augment.py): the same coins and ranges, as three tensors:
        shrink factors (1.0 where the coin says no), blur sigmas (0.0: no blur) and JPEG qualities (0: no
        re-save). Other numbers than n calls of `draw` for a seed, the same distributions."""

        def coin(probability: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) < probability

        factor = torch.empty(n).uniform_(self.downscale_min, 1.0, generator=generator)
        sigma = torch.empty(n).uniform_(0.0, self.blur_sigma_max, generator=generator)
        quality = torch.randint(self.jpeg_quality_min, 101, (n,), generator=generator)
        return (
            torch.where(coin(self.downscale_prob), factor, 1.0),
            torch.where(coin(self.blur_prob), sigma, 0.0),
            torch.where(coin(self.jpeg_prob), quality, 0),
        )

    def forward(self, image: Image.Image) -> Image.Image:
        factor, sigma, quality = self.draw()
        if factor is not None:
            image = downscale(image, factor)
        if sigma is not None:
            image = blur(image, sigma)
        if quality is not None:
            image = jpeg(image, quality)
        return image

    def extra_repr(self) -> str:
        return (
            f"downscale_prob={self.downscale_prob}, downscale_min={self.downscale_min}, "
            f"blur_prob={self.blur_prob}, blur_sigma_max={self.blur_sigma_max}, "
            f"jpeg_prob={self.jpeg_prob}, jpeg_quality_min={self.jpeg_quality_min}"
        )
