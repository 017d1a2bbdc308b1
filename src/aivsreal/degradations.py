"""Image degradations shared by training-time augmentation and the evaluate stage's robustness sweeps.

One implementation of each, so "JPEG quality 50" means the same thing in both places.
"""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image, ImageFilter


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG at `quality` (1-100) and decode again."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation `sigma` pixels (0 = unchanged)."""
    return image.filter(ImageFilter.GaussianBlur(radius=sigma)) if sigma > 0 else image.copy()


def rescale(image: Image.Image, factor: float) -> Image.Image:
    """Downscale by `factor` (e.g. 0.5) and back up to the original size: detail is lost, size kept."""
    width, height = image.size
    small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BICUBIC)
    return small.resize((width, height), Image.BICUBIC)


def social_media(image: Image.Image, rng: random.Random) -> Image.Image:
    """What a photo goes through when shared: a random crop (80-95 %), a resize, JPEG 60-85."""
    width, height = image.size
    keep = rng.uniform(0.80, 0.95)
    crop_w, crop_h = round(width * keep), round(height * keep)
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    cropped = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BILINEAR)
    return jpeg(cropped, rng.randint(60, 85))


def psnr(original: Image.Image, degraded: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB; infinite when nothing changed."""
    a = np.asarray(original.convert("RGB"), dtype=np.float64)
    b = np.asarray(degraded.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class RandomBlurJPEG(torch.nn.Module):
    """Training augmentation after Wang et al. (2020): blur with probability p, then JPEG with probability p.

    Draws from torch's generator, so it follows `seed_everything` and DataLoader worker seeding.
    """

    def __init__(self, blur_prob: float, blur_sigma_max: float, jpeg_prob: float, jpeg_quality_min: int):
        super().__init__()
        self.blur_prob, self.blur_sigma_max = blur_prob, blur_sigma_max
        self.jpeg_prob, self.jpeg_quality_min = jpeg_prob, jpeg_quality_min

    def forward(self, image: Image.Image) -> Image.Image:
        if self.blur_prob > 0 and torch.rand(1).item() < self.blur_prob:
            image = blur(image, float(torch.empty(1).uniform_(0.0, self.blur_sigma_max)))
        if self.jpeg_prob > 0 and torch.rand(1).item() < self.jpeg_prob:
            image = jpeg(image, int(torch.randint(self.jpeg_quality_min, 101, (1,))))
        return image

    def extra_repr(self) -> str:
        return (
            f"blur_prob={self.blur_prob}, blur_sigma_max={self.blur_sigma_max}, "
            f"jpeg_prob={self.jpeg_prob}, jpeg_quality_min={self.jpeg_quality_min}"
        )
