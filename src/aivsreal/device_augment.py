"""Training augmentation where the model runs (`train.augment_on: device`): a batch of decoded images in,
a normalised, degraded, cropped batch out, on the training device, in a fixed number of batched tensor
operations, whatever the batch size.

On a GPU the loader path (transforms.py: Pillow in DataLoader workers shrinks, blurs, re-saves as JPEG,
resizes, crops and flips every image) sets the pace: a few milliseconds of CPU work per image against a
fraction of a millisecond of GPU work (benchmarks/gpu.py prints both). On the device path the loader only
hands over decoded uint8 images, or they are decoded once and kept on the device (`train.cache_images`),
and each batch goes through the same steps here. Every image has its own draws, so the steps are written as
batched linear algebra rather than one library call per image:

| step | loader path (Pillow) | device path (this module) |
|---|---|---|
| shrink (kept small) | bicubic, antialiased | per-image matrices of Pillow's bicubic weights |
| blur | GaussianBlur(radius=sigma) | per-image matrices of torchvision's gaussian_blur (reflect) |
| JPEG re-save | Pillow (libjpeg) | libjpeg's steps in torch (`jpeg`), each image at its quality |
| resize, crop, flip | torchvision on PIL images | per-image matrices: bilinear weights, padding, offset, mirror |
| colour (off in the presets) | torchvision on PIL images | torchvision per image tensor (the one loop left) |
| normalise | torchvision | one tensor operation |

Shrink and blur are one matrix product per image side, resize + crop + flip another, so a batch costs two
pairs of batched matrix products and one batched JPEG round trip. The degradations are drawn by
`RandomDegrade.draw_batch` (same probabilities and ranges as the loader path), the crop and flip as
`build_transforms` makes them, from a generator seeded with train.seed. Each step gives what the Pillow
step gives to within rounding (JPEG: to within libjpeg's integer arithmetic), which
tests/test_device_augment.py checks against Pillow.

Nothing here waits for the device. The draws are made on the host (a CPU generator), so every number that
sizes the work (each image's size after the shrink, which images are shrunk, blurred or re-saved, the
widest resampling window, the crop offsets) is worked out there and the device only gets the pixel work,
its per-image numbers copied without blocking (pinned memory on CUDA). Reading a device value on the host
(`.item()`, `nonzero`, `.max()` turned into a Python number, a blocking copy) would make the CPU wait for
the GPU to finish the batch before it could queue the next step; the tests run the whole path on PyTorch's
`meta` device, where any such read fails, and on a GPU under `torch.cuda.set_sync_debug_mode("error")`.
"""

from __future__ import annotations

import functools
import math

import torch
from torchvision.transforms.v2 import functional as F

from aivsreal.degradations import RandomDegrade
from aivsreal.hardware import send
from aivsreal.params import TrainParams
from aivsreal.transforms import IMAGENET_MEAN, IMAGENET_STD


def _bicubic(t: torch.Tensor) -> torch.Tensor:
    """Pillow's bicubic kernel (a = -0.5), support 2."""
    a, t = -0.5, t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _triangle(t: torch.Tensor) -> torch.Tensor:
    """Pillow's bilinear kernel, support 1."""
    return (1 - t.abs()).clamp(min=0)


KERNELS = {"bicubic": (_bicubic, 2.0), "bilinear": (_triangle, 1.0)}


def _send(device: torch.device, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [send(tensor, device) for tensor in tensors]


def resample_taps(in_sizes: torch.Tensor, out_sizes: torch.Tensor, kind: str) -> int:
    """How many input positions the widest output position of these resizes reads: Pillow's window, 2 ceil(
    support x stretch) + 1. Give it host tensors: on the device, the Python number would wait for it."""
    _, support = KERNELS[kind]
    stretch = (in_sizes / out_sizes).to(torch.float64).clamp(min=1.0)  # a shrink widens the kernel
    return 2 * math.ceil(float((support * stretch).max())) + 1


def resample_matrix(
    in_sizes: torch.Tensor, out_sizes: torch.Tensor, rows: torch.Tensor, columns: int, kind: str, taps: int
):
    """Antialiased resampling as matrices, the weights Pillow and torchvision's `antialias=True` resize use:
    for image n, row r of the result reads output position rows[n, r] of a resize from in_sizes[n] to
    out_sizes[n] pixels, as weights over `columns` input positions (zero past in_sizes[n]). (N, R, columns).
    `taps`: `resample_taps` of the sizes, worked out on the host (the widest window, as Pillow sizes its own)."""
    kernel, support = KERNELS[kind]
    scale = (in_sizes / out_sizes).to(torch.float64).view(-1, 1, 1)
    stretch = scale.clamp(min=1.0)  # a shrink widens the kernel (antialiasing); an enlargement does not
    reach = support * stretch
    centre = (rows.to(torch.float64).unsqueeze(-1) + 0.5) * scale
    low = (centre - reach + 0.5).floor().clamp(min=0)  # Pillow's window of taps: [low, high)
    high = torch.minimum((centre + reach + 0.5).floor(), in_sizes.view(-1, 1, 1).to(torch.float64))
    x = low + torch.arange(taps, dtype=torch.float64, device=rows.device)
    weights = kernel((x - centre + 0.5) / stretch) * (x < high)
    weights = (weights / weights.sum(-1, keepdim=True)).float()
    matrix = torch.zeros(*rows.shape, columns, device=rows.device)
    return matrix.scatter_add_(2, x.long().clamp(max=columns - 1), weights)


def _reflect(index: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Positions outside [0, last] mirrored back across the edge, the edge itself not repeated (torch's reflect
    padding)."""
    index = torch.where(index < 0, -index, index)
    return torch.where(index > last, 2 * last - index, index)


def blur_reach(sigmas: torch.Tensor) -> int:
    """The widest Gaussian kernel's reach, ceil(3 sigma) pixels each way; from host tensors (see resample_taps)."""
    return int(torch.ceil(3 * sigmas).long().max())


def blur_matrix(sizes: torch.Tensor, sigmas: torch.Tensor, length: int, reach: int) -> torch.Tensor:
    """torchvision's gaussian_blur (kernel 2 ceil(3 sigma) + 1, reflect padding) along one side of each image,
    as a (N, length, length) matrix; sigma 0 leaves the image as it is. Rows past sizes[n] repeat its last row.
    `reach`: `blur_reach` of the sigmas, worked out on the host."""
    radii = torch.ceil(3 * sigmas).long()
    offsets = torch.arange(-reach, reach + 1, device=sigmas.device)
    gauss = torch.exp(-0.5 * (offsets.view(1, -1) / sigmas.clamp(min=1e-6).view(-1, 1)) ** 2)
    gauss = gauss * (offsets.view(1, -1).abs() <= radii.view(-1, 1))
    gauss = gauss / gauss.sum(-1, keepdim=True)  # (N, taps); sigma 0: a single 1 in the middle
    last = (sizes - 1).view(-1, 1, 1)
    row = torch.minimum(torch.arange(length, device=sigmas.device).view(1, -1, 1), last)
    source = row + offsets.view(1, 1, -1)
    source = _reflect(_reflect(source, last), last).clamp(min=0).minimum(last)  # twice: a tiny image
    matrix = torch.zeros(len(sizes), length, length, device=sigmas.device)
    return matrix.scatter_add_(2, source, gauss.unsqueeze(1).expand(-1, length, -1).float())


def apply_matrices(images: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """rows @ image @ columns^T for each image and channel: (N, C, H, W) -> (N, C, R, K), rounded to uint8
    levels as a uint8 image would be."""
    out = rows.unsqueeze(1) @ images @ columns.unsqueeze(1).transpose(-1, -2)
    return out.round_().clamp_(0, 255)


# libjpeg (IJG) base quantisation tables, luminance and chrominance, in natural (row-major) order
LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
        14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]  # fmt: skip
CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
          47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32  # fmt: skip


# JFIF's RGB -> YCbCr (rows Y, Cb, Cr; Cb and Cr offset by 128) and back
TO_YCBCR = [[0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5], [0.5, -0.418687589, -0.081312411]]
TO_RGB = [[1.0, 0.0, 1.402], [1.0, -0.344136286, -0.714136286], [1.0, 1.772, 0.0]]


@functools.cache
def _jpeg_constants(device: torch.device) -> dict[str, torch.Tensor]:
    """JPEG's fixed tensors, made once per device (on a GPU, each tensor made from Python numbers is a copy
    that waits for the device). dct: the 2-D DCT of an 8x8 block (the orthonormal 8-point DCT-II along rows
    and columns) as one 64 x 64 matrix on the block's samples in row-major order."""
    k = torch.arange(8, dtype=torch.float64).view(-1, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, -1)
    dct = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    dct[0] /= math.sqrt(2)
    constants = {
        "dct": torch.kron(dct, dct).float(),
        "tables": torch.tensor([LUMA, CHROMA], dtype=torch.float32).view(1, 2, 64),
        "to_ycbcr": torch.tensor(TO_YCBCR),
        "to_rgb": torch.tensor(TO_RGB),
        "offset": torch.tensor([0.0, 128.0, 128.0]).view(1, 3, 1, 1),
    }
    return {name: value.to(device) for name, value in constants.items()}


def quantisation_tables(qualities: torch.Tensor) -> torch.Tensor:
    """libjpeg's jpeg_set_quality (baseline) for each image: (N, 2, 8, 8), luminance then chrominance."""
    q = qualities.clamp(1, 100).float().view(-1, 1, 1)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    base = _jpeg_constants(qualities.device)["tables"]
    return ((base * scale + 50) / 100).floor().clamp(1, 255).view(-1, 2, 8, 8)


def _quantise_blocks(planes: torch.Tensor, tables: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """JPEG's lossy step on (N, C, H, W) planes (H, W multiples of 8) with one (N, 8, 8) table per image:
    level shift, DCT, divide, round, multiply, inverse DCT, 8-bit samples."""
    n, c, h, w = planes.shape
    blocks = (planes - 128).view(n, c, h // 8, 8, w // 8, 8).transpose(3, 4).reshape(n, -1, 64)
    table = tables.reshape(n, 1, 64)
    quantised = (blocks @ dct.T).div_(table).round_().mul_(table)
    restored = (quantised @ dct).view(n, c, h // 8, w // 8, 8, 8).transpose(3, 4).reshape(n, c, h, w)
    return restored.add_(128).round_().clamp_(0, 255)


def _colour_matrix(matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """A 3 x 3 colour transform of every pixel of (N, 3, H, W) images: one batched product on the planes as
    they lie in memory (no permuted copies)."""
    return (matrix @ images.flatten(2)).view(images.shape)


def jpeg(images: torch.Tensor, qualities: torch.Tensor) -> torch.Tensor:
    """Save each image as a baseline JPEG at its quality (Pillow's defaults: 4:2:0 chroma) and decode it, in
    tensor operations: (N, 3, H, W) floats holding uint8 levels, H and W multiples of 16 (pad by repeating the
    edge, as an encoder does), -> the same, decoded."""
    constants = _jpeg_constants(images.device)
    ycbcr = _colour_matrix(constants["to_ycbcr"], images).add_(constants["offset"]).round_()
    tables, dct = quantisation_tables(qualities), constants["dct"]
    luma = _quantise_blocks(ycbcr[:, :1], tables[:, 0], dct)
    chroma = torch.nn.functional.avg_pool2d(ycbcr[:, 1:], 2).round_()  # libjpeg's h2v2 downsampling
    # libjpeg's fancy upsampling (3/4 the nearest sample, 1/4 the next one over, edges repeated) is exactly
    # bilinear 2x interpolation with align_corners False
    chroma = _quantise_blocks(chroma, tables[:, 1], dct)
    chroma = torch.nn.functional.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    decoded = torch.cat([luma, chroma], 1).sub_(constants["offset"])
    return _colour_matrix(constants["to_rgb"], decoded).round_().clamp_(0, 255)


def _multiple(size: int, block: int) -> int:
    return -(-size // block) * block


def degrade(images: torch.Tensor, factors: torch.Tensor, sigmas: torch.Tensor, qualities: torch.Tensor):
    """RandomDegrade's steps on same-size images ((N, 3, H, W) floats holding uint8 levels, on any device),
    each with its own draws (host tensors, as `RandomDegrade.draw_batch` makes them): shrink by factors[n],
    blur by sigmas[n], re-save as JPEG at qualities[n]. Returns the images on a canvas (JPEG's 16-pixel
    blocks when any is re-saved; each image in its top-left corner, its last row and column repeated beyond)
    on their device, and each image's (heights, widths) on the host. Which images change, their sizes and the
    widest windows are worked out from the draws on the host: nothing waits for the device."""
    device, (height, width) = images.device, images.shape[-2:]
    heights = (height * factors.double()).round().clamp(min=1).long()
    widths = (width * factors.double()).round().clamp(min=1).long()
    resaved = (qualities > 0).nonzero().flatten()
    block = 16 if len(resaved) else 1
    canvas_h, canvas_w = _multiple(height, block), _multiple(width, block)
    canvas = torch.nn.functional.pad(images, [0, canvas_w - width, 0, canvas_h - height], mode="replicate")
    changed = ((factors < 1) | (sigmas > 0)).nonzero().flatten()
    if len(changed):  # shrink then blur: one matrix per side and image, both sides made in one go
        k, longest = len(changed), max(canvas_h, canvas_w)
        new_sizes = torch.cat([heights[changed], widths[changed]])  # the k images' heights, then their widths
        old_sizes = torch.tensor([height] * k + [width] * k)
        taps, reach = resample_taps(old_sizes, new_sizes, "bicubic"), blur_reach(sigmas[changed])
        index, blur_sigmas, new, old = _send(device, changed, sigmas[changed].repeat(2), new_sizes, old_sizes)
        rows = torch.arange(longest, device=device).minimum(new.view(-1, 1) - 1)
        shrink = resample_matrix(old, new, rows, max(height, width), "bicubic", taps)
        sides = blur_matrix(new, blur_sigmas, longest, reach) @ shrink  # (2k, longest, longest input side)
        canvas[index] = apply_matrices(images[index], sides[:k, :canvas_h, :height], sides[k:, :canvas_w, :width])
    if len(resaved):
        index, resave_qualities = _send(device, resaved, qualities[resaved])
        canvas[index] = jpeg(canvas[index], resave_qualities)
    return canvas, heights, widths


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
        self.degrade = RandomDegrade.from_train_params(p)  # the loader path's probabilities and ranges
        self.generator = torch.Generator().manual_seed(seed)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        """uint8 RGB CHW images (any sizes, on any device) -> a float NCHW batch on the device. The draws stay
        on the host (see the module's docstring)."""
        p, n, generator = self.p, len(images), self.generator
        if self.degrade:
            draws = self.degrade.draw_batch(n, generator)
        else:
            draws = (torch.ones(n), torch.zeros(n), torch.zeros(n, dtype=torch.long))
        crops = torch.rand(2, n, generator=generator)  # where each crop lies, as a fraction of the room
        flips = torch.rand(n, generator=generator) < 0.5 if p.hflip else torch.zeros(n, dtype=torch.bool)
        batch = torch.empty(n, 3, p.image_size, p.image_size, device=self.device)
        shapes: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            shapes.setdefault(tuple(image.shape), []).append(index)
        for members in shapes.values():  # one pass per image size (a single one for most data sets)
            index, group = torch.tensor(members), [images[i] for i in members]
            (device_index,) = _send(self.device, index)
            if group[0].device.type != self.device.type:  # from the host: each image copied as the loader pinned
                group = _send(self.device, *group)  # it, then stacked on the device (no host copy of the batch)
            group = torch.stack(group)
            canvas, heights, widths = degrade(group.float(), *(draw[index] for draw in draws))
            batch[device_index] = self._crop(canvas, heights, widths, crops[:, index], flips[index])
        batch = batch.div_(255)
        if p.color_jitter > 0 or p.grayscale_prob > 0:
            batch = torch.stack([self._colour(image) for image in batch])
        return (batch - self.mean) / self.std

    def _crop(self, canvas, heights, widths, crops, flips) -> torch.Tensor:
        """Resize (shorter side to train.resize), crop to train.image_size (random or centre, padded as
        RandomCrop(pad_if_needed, reflect) or CenterCrop pad) and mirror, as build_transforms does: one
        matrix per image side. The images' sizes and draws are host tensors; each image's sizes, offset and
        padding are worked out there, the matrices on the canvas's device."""
        p, size = self.p, self.p.image_size
        if p.resize:  # torchvision's size rule: the shorter side to resize, the longer one in proportion
            short, long = torch.minimum(heights, widths), torch.maximum(heights, widths)
            longer = (p.resize * long.double() / short.double()).floor().long()
            new_h = torch.where(heights <= widths, p.resize, longer)
            new_w = torch.where(heights <= widths, longer, p.resize)
        else:
            new_h, new_w = heights, widths
        # RandomCrop pads each side by the shortfall: by reflection, or by repeating the edge where the image is
        # too small to reflect that far; CenterCrop pads with zeros
        reflect = ((size - new_w) < new_w) & ((size - new_h) < new_h)
        # both sides in one go: the n heights, then the n widths
        n, (canvas_h, canvas_w) = len(heights), canvas.shape[-2:]
        old, new, where = torch.cat([heights, widths]), torch.cat([new_h, new_w]), crops.flatten()
        if p.random_crop:
            pad = (size - new).clamp(min=0)
            start = (where * (new + 2 * pad - size + 1)).floor().long() - pad
        else:
            start = torch.where(new >= size, ((new - size) / 2).round().long(), -((size - new) // 2))
        taps = resample_taps(old, new, "bilinear")
        old, new, start, mirror, flips = _send(canvas.device, old, new, start, reflect.repeat(2), flips)
        source = start.view(-1, 1) + torch.arange(size, device=canvas.device).view(1, -1)
        last = (new - 1).view(-1, 1)
        if p.random_crop:
            source = torch.where(mirror.view(-1, 1), _reflect(source, last), source).clamp(min=0).minimum(last)
            inside = torch.ones_like(source, dtype=torch.bool)
        else:
            inside = (source >= 0) & (source <= last)
            source = source.clamp(min=0).minimum(last)
        sides = resample_matrix(old, new, source, max(canvas_h, canvas_w), "bilinear", taps) * inside.unsqueeze(-1)
        rows, columns = sides[:n, :, :canvas_h], sides[n:, :, :canvas_w]
        columns = torch.where(flips.view(-1, 1, 1), columns.flip(1), columns)
        return apply_matrices(canvas, rows, columns)

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
