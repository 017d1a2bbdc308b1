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

import dataclasses
import functools
import math

import torch
from torchvision.transforms.v2 import functional as F

from aivsreal.degradations import RandomDegrade
from aivsreal.hardware import CudaGraphs, send
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


def shrunk(side: int, factors: torch.Tensor) -> torch.Tensor:
    """A side's length after a shrink by each of `factors` (host tensors), rounded as the shrink sizes it."""
    return (side * factors.double()).round().clamp(min=1).long()


@dataclasses.dataclass(frozen=True)
class Work:
    """The numbers that shape the tensors of one group of same-size images (hashable: with fixed shapes, the key
    of the group's CUDA graph). Each image's own numbers travel beside it as host tensors (`pack`)."""

    count: int  # images in the group
    height: int
    width: int
    canvas_h: int  # a multiple of JPEG's 16-pixel blocks when any image may be re-saved
    canvas_w: int
    changed: int  # images shrunk or blurred
    taps: int  # the shrink's widest window (resample_taps)
    reach: int  # the blur's widest reach (blur_reach)
    resaved: int  # images re-saved as JPEG
    masked: bool  # fixed shapes: every image re-saved, the ones not drawn for it put back after
    crop_taps: int = 0  # the resize's widest window; 0 before the crop is planned


def plan_degrade(height: int, width: int, factors, sigmas, qualities, fixed: RandomDegrade | None = None):
    """The host's part of `degrade` for same-size images: (Work, per-image numbers, heights, widths after the
    shrink), all from the draws (host tensors). `fixed`: the degradations' ranges, for fixed shapes (what a CUDA
    graph needs): every image goes through every step that has a probability, the untouched ones with identity
    matrices and put back after JPEG, and the windows are sized for the widest draw the ranges allow."""
    count = len(factors)
    heights, widths = shrunk(height, factors), shrunk(width, factors)
    if fixed is None:
        changed = ((factors < 1) | (sigmas > 0)).nonzero().flatten()
        resaved = (qualities > 0).nonzero().flatten()
    else:
        every = torch.arange(count)
        changed = every if fixed.downscale_prob > 0 or fixed.blur_prob > 0 else every[:0]
        resaved = every if fixed.jpeg_prob > 0 else every[:0]
    block = 16 if len(resaved) else 1
    k, numbers, taps, reach = len(changed), {}, 0, 0
    if k:  # shrink then blur: one matrix per side and image, both sides made in one go
        new_sizes = torch.cat([heights[changed], widths[changed]])  # the k images' heights, then their widths
        old_sizes = torch.tensor([height] * k + [width] * k)
        taps, reach = resample_taps(old_sizes, new_sizes, "bicubic"), blur_reach(sigmas[changed])
        if fixed is not None and fixed.downscale_prob > 0:  # the smallest size of the range (one less: rounding)
            smallest = (torch.tensor([height, width]) * fixed.downscale_min).round().sub(1).clamp(min=1)
            taps = max(taps, resample_taps(torch.tensor([height, width]), smallest, "bicubic"))
        if fixed is not None and fixed.blur_prob > 0:
            reach = max(reach, math.ceil(3 * fixed.blur_sigma_max))
        if k < count:
            numbers["changed"] = changed
        numbers |= {"old": old_sizes, "new": new_sizes, "sigmas": sigmas[changed].repeat(2)}
    if len(resaved):
        if len(resaved) < count:
            numbers["resaved"] = resaved
        numbers["qualities"] = qualities[resaved]
    work = Work(count, height, width, _multiple(height, block), _multiple(width, block), k, taps, reach,
                len(resaved), fixed is not None)  # fmt: skip
    return work, numbers, heights, widths


def degrade_pixels(images: torch.Tensor, numbers: dict[str, torch.Tensor], work: Work) -> torch.Tensor:
    """The device's part of `degrade`: `numbers` as `plan_degrade` made them, on the images' device."""
    height, width, canvas_h, canvas_w = work.height, work.width, work.canvas_h, work.canvas_w
    every = work.changed == work.count
    if not every:
        canvas = torch.nn.functional.pad(images, [0, canvas_w - width, 0, canvas_h - height], mode="replicate")
    if work.changed:
        k, longest, new = work.changed, max(canvas_h, canvas_w), numbers["new"]
        rows = torch.arange(longest, device=images.device).minimum(new.view(-1, 1) - 1)
        shrink = resample_matrix(numbers["old"], new, rows, max(height, width), "bicubic", work.taps)
        sides = blur_matrix(new, numbers["sigmas"], longest, work.reach) @ shrink  # (2k, longest, longest side)
        source = images if every else images[numbers["changed"]]
        shrunk = apply_matrices(source, sides[:k, :canvas_h, :height], sides[k:, :canvas_w, :width])
        if every:
            canvas = shrunk
        else:
            canvas[numbers["changed"]] = shrunk
    if work.resaved:
        qualities = numbers["qualities"]
        if work.masked:
            canvas = torch.where((qualities > 0).view(-1, 1, 1, 1), jpeg(canvas, qualities), canvas)
        elif work.resaved == work.count:
            canvas = jpeg(canvas, qualities)
        else:
            canvas[numbers["resaved"]] = jpeg(canvas[numbers["resaved"]], qualities)
    return canvas


def pack(numbers: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
    """Host tensors as one float64 tensor (exact for these integers and float32 draws), to travel to the device
    in one copy, and the layout `unpack` reads it back with."""
    layout = tuple((name, values.numel(), values.dtype) for name, values in numbers.items())
    flat = [values.double().flatten() for values in numbers.values()]
    return (torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64)), layout


def unpack(flat: torch.Tensor, layout: tuple) -> dict[str, torch.Tensor]:
    parts = flat.split([length for _, length, _ in layout])
    return {name: part.to(dtype) for (name, _, dtype), part in zip(layout, parts, strict=True)}


def degrade(images: torch.Tensor, factors: torch.Tensor, sigmas: torch.Tensor, qualities: torch.Tensor):
    """RandomDegrade's steps on same-size images ((N, 3, H, W) floats holding uint8 levels, on any device),
    each with its own draws (host tensors, as `RandomDegrade.draw_batch` makes them): shrink by factors[n],
    blur by sigmas[n], re-save as JPEG at qualities[n]. Returns the images on a canvas (JPEG's 16-pixel
    blocks when any is re-saved; each image in its top-left corner, its last row and column repeated beyond)
    on their device, and each image's (heights, widths) on the host. Which images change, their sizes and the
    widest windows are worked out from the draws on the host: nothing waits for the device."""
    work, numbers, heights, widths = plan_degrade(*images.shape[-2:], factors, sigmas, qualities)
    flat, layout = pack(numbers)
    return degrade_pixels(images, unpack(send(flat, images.device), layout), work), heights, widths


SHAPES = ("exact", "fixed", "graphs")


class DeviceAugment:
    """The training transform of `train_transform(p)` for a whole batch on `device`.

    shapes: "exact" (each batch's steps sized for its own draws: only the images drawn for a step go through
    it), "fixed" (every image through every step that has a probability, windows sized for the params' widest
    draws: the same tensor shapes for every batch of a size, the same pixels), or "graphs" (fixed shapes,
    captured as one CUDA graph per batch and image size and replayed: one launch instead of about a thousand;
    CUDA only, `train.augment_graphs`)."""

    def __init__(
        self,
        p: TrainParams,
        device: torch.device,
        seed: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        shapes: str = "exact",
    ):
        if shapes not in SHAPES:
            raise ValueError(f"shapes must be one of {SHAPES}, not {shapes!r}")
        self.p, self.device = p, device
        self.degrade = RandomDegrade.from_train_params(p)  # the loader path's probabilities and ranges
        self.fixed = self.degrade if shapes != "exact" and self.degrade else None
        self.graphs = CudaGraphs(device) if shapes == "graphs" else None
        self.widest_crop: dict[tuple[int, ...], int] = {}  # fixed shapes: image size -> _widest_crop
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
        shapes: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            shapes.setdefault(tuple(image.shape), []).append(index)
        if len(shapes) > 1:
            batch = torch.empty(n, 3, p.image_size, p.image_size, device=self.device)
        for members in shapes.values():  # one pass per image size (a single one for most data sets)
            index, group = torch.tensor(members), [images[i] for i in members]
            if group[0].device.type != self.device.type:  # from the host: each image copied as the loader pinned
                group = _send(self.device, *group)  # it, then stacked on the device (no host copy of the batch)
            group = torch.stack(group)
            work, numbers = self._plan(group.shape[-2:], [draw[index] for draw in draws], crops[:, index], flips[index])
            flat, layout = pack(numbers)
            pixels = functools.partial(self._pixels, layout=layout, work=work)
            if self.graphs is not None:
                levels = self.graphs((work, layout), pixels, group, flat)
            else:
                levels = pixels(group, send(flat, self.device))
            if len(shapes) == 1:
                batch = levels
            else:
                batch[send(index, self.device)] = levels
        batch = batch.div_(255)
        if p.color_jitter > 0 or p.grayscale_prob > 0:
            batch = torch.stack([self._colour(image) for image in batch])
        return (batch - self.mean) / self.std

    def _plan(self, size, draws, crops, flips) -> tuple[Work, dict[str, torch.Tensor]]:
        """The host's part of a group's steps: Work and each image's numbers (the degradations', then the crop's)."""
        work, numbers, heights, widths = plan_degrade(*size, *draws, fixed=self.fixed)
        crop_taps, crop = self._plan_crop(heights, widths, crops, flips)
        if self.fixed is not None:  # a draw beyond the bound only makes another Work (graph) for its batch
            size = tuple(size)
            if size not in self.widest_crop:
                self.widest_crop[size] = self._widest_crop(size)
            crop_taps = max(crop_taps, self.widest_crop[size])
        return dataclasses.replace(work, crop_taps=crop_taps), numbers | crop

    def _widest_crop(self, size: tuple[int, int]) -> int:
        """The resize's widest window for images of `size` over the range of shrinks (257 factors)."""
        grid = torch.linspace(self.fixed.downscale_min if self.fixed.downscale_prob > 0 else 1.0, 1.0, 257)
        grid_heights, grid_widths = (shrunk(side, grid) for side in size)
        old, new = torch.cat([grid_heights, grid_widths]), torch.cat(self._resized(grid_heights, grid_widths))
        return resample_taps(old, new, "bilinear")

    def _pixels(self, group: torch.Tensor, flat: torch.Tensor, layout: tuple, work: Work) -> torch.Tensor:
        """The device's part: uint8 images of one size and their numbers (on the device) -> the cropped batch,
        in uint8 levels. Only tensor operations on the device: what a CUDA graph captures."""
        numbers = unpack(flat, layout)
        canvas = degrade_pixels(group.float(), numbers, work)
        return self._crop(canvas, numbers, work)

    def _resized(self, heights: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torchvision's size rule (train.resize): the shorter side to resize, the longer one in proportion."""
        if not self.p.resize:
            return heights, widths
        short, long = torch.minimum(heights, widths), torch.maximum(heights, widths)
        longer = (self.p.resize * long.double() / short.double()).floor().long()
        wide = heights <= widths
        return torch.where(wide, self.p.resize, longer), torch.where(wide, longer, self.p.resize)

    def _plan_crop(self, heights, widths, crops, flips) -> tuple[int, dict[str, torch.Tensor]]:
        """Resize (shorter side to train.resize), crop to train.image_size (random or centre, padded as
        RandomCrop(pad_if_needed, reflect) or CenterCrop pad) and mirror, as build_transforms does: each image's
        sizes, offset and padding, worked out on the host from its size after the shrink and its draws."""
        p, size = self.p, self.p.image_size
        new_h, new_w = self._resized(heights, widths)
        # RandomCrop pads each side by the shortfall: by reflection, or by repeating the edge where the image is
        # too small to reflect that far; CenterCrop pads with zeros
        reflect = ((size - new_w) < new_w) & ((size - new_h) < new_h)
        old, new, where = torch.cat([heights, widths]), torch.cat([new_h, new_w]), crops.flatten()  # both sides
        if p.random_crop:
            pad = (size - new).clamp(min=0)
            start = (where * (new + 2 * pad - size + 1)).floor().long() - pad
        else:
            start = torch.where(new >= size, ((new - size) / 2).round().long(), -((size - new) // 2))
        numbers = {"crop_old": old, "crop_new": new, "start": start, "mirror": reflect.repeat(2), "flips": flips}
        return resample_taps(old, new, "bilinear"), numbers

    def _crop(self, canvas: torch.Tensor, numbers: dict[str, torch.Tensor], work: Work) -> torch.Tensor:
        """The crop `_plan_crop` planned, on the canvas's device: one matrix per image side."""
        p, size, n, (canvas_h, canvas_w) = self.p, self.p.image_size, work.count, canvas.shape[-2:]
        new, start, mirror = numbers["crop_new"], numbers["start"], numbers["mirror"]
        source = start.view(-1, 1) + torch.arange(size, device=canvas.device).view(1, -1)
        last = (new - 1).view(-1, 1)
        if p.random_crop:
            source = torch.where(mirror.view(-1, 1), _reflect(source, last), source).clamp(min=0).minimum(last)
            inside = torch.ones_like(source, dtype=torch.bool)
        else:
            inside = (source >= 0) & (source <= last)
            source = source.clamp(min=0).minimum(last)
        old, longest = numbers["crop_old"], max(canvas_h, canvas_w)
        sides = resample_matrix(old, new, source, longest, "bilinear", work.crop_taps) * inside.unsqueeze(-1)
        rows, columns = sides[:n, :, :canvas_h], sides[n:, :, :canvas_w]
        columns = torch.where(numbers["flips"].view(-1, 1, 1), columns.flip(1), columns)
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
