"""How training uses the device: precision, pinned memory, non-blocking copies, memory layout, loader workers.

`train.precision` and `train.num_workers` resolve here, once, for the device training runs on:

| setting | CPU | CUDA GPU |
|---|---|---|
| precision auto | fp32 (no autocast) | bf16 autocast if the GPU has it, else fp16 + gradient scaler |
| num_workers auto | 0 (load in the training process) | min(8, cores - 1), split over the processes |
| pinned memory, non-blocking copies | no | yes |
| channels-last layout | no | yes (faster convolutions on tensor cores) |
| augment_on auto | loader: Pillow in the loader workers | device: the batch degraded on the GPU (device_augment.py) |
| augment_graphs auto | off | on: each batch's augmentation one CUDA graph replay (CudaGraphs) |
| cache_images auto | off | on with augment_on device, when the decoded images fit in half the free GPU memory |

On the CPU with precision auto or fp32 every step is exactly plain float32 training, so CPU results
stay bit-for-bit what they were. bf16 autocast also runs on the CPU (slower there on most CPUs; for
tests). fp16 needs CUDA: its gradient scaler guards against underflow on the GPU only. Recipes: PyTorch's
automatic mixed precision and performance tuning guides.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger(__name__)


class HardwareError(ValueError):
    """A setting the device cannot honour (fp16 on a CPU)."""


@dataclass(frozen=True)
class StepSettings:
    """The resolved settings of one training process."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16, after auto
    num_workers: int
    pin_memory: bool
    channels_last: bool
    augment_on: str = "loader"  # loader | device, after auto
    augment_graphs: bool = False  # device augmentation replayed as CUDA graphs, after auto

    @classmethod
    def resolve(
        cls,
        precision: str,
        num_workers: int | str,
        device: torch.device,
        processes: int = 1,
        augment_on: str = "loader",
        augment_graphs: bool | str = "auto",
    ) -> StepSettings:
        """`train.precision`, `train.num_workers` (an int, or auto), `train.augment_on` and
        `train.augment_graphs` for `device`, with `processes` under torchrun."""
        cuda = device.type == "cuda"
        if augment_on == "auto":
            augment_on = "device" if cuda else "loader"
        if augment_graphs is True and augment_on == "device" and not cuda:
            raise HardwareError(
                "train.augment_graphs true needs a CUDA GPU (CUDA graphs): on the CPU use auto or false"
            )
        graphs = augment_on == "device" and cuda and augment_graphs in (True, "auto")
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
        if precision == "fp16" and not cuda:
            raise HardwareError(
                "train.precision fp16 needs a CUDA GPU (its gradient scaler works there only): on the CPU use "
                "auto or fp32 (bf16 runs too, mostly slower)"
            )
        if num_workers == "auto":
            num_workers = max(1, min(8, (os.cpu_count() or 2) - 1) // processes) if cuda else 0
        return cls(device, precision, int(num_workers), pin_memory=cuda, channels_last=cuda, augment_on=augment_on,
                   augment_graphs=graphs)  # fmt: skip

    def cache_images(self, setting: bool | str, decoded_bytes: Callable[[], int]) -> bool:
        """`train.cache_images`: true/false as set; auto keeps the decoded images (`decoded_bytes()` in all)
        when they are augmented on the device and fit in half its free memory."""
        if setting != "auto":
            return bool(setting)
        return self.augment_on == "device" and decoded_bytes() <= free_memory(self.device) // 2

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's precision: autocast to bf16/fp16, or nothing at fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16's loss scaling; at fp32 and bf16 a disabled scaler, whose calls change nothing."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def images(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device: a non-blocking copy from pinned memory, channels-last on CUDA."""
        batch = self.tensor(batch)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def tensor(self, values: torch.Tensor) -> torch.Tensor:
        """Targets, source indices, features: on the device, non-blocking from pinned memory."""
        return send(values, self.device) if self.pin_memory else values.to(self.device)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the device, in channels-last layout on CUDA."""
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def loader_options(self) -> dict:
        """DataLoader arguments for these settings."""
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                "pin_memory": self.pin_memory}  # fmt: skip


def send(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`values` on `device` without making the host wait: on CUDA a non-blocking copy from pinned memory, a
    host tensor pinned first if it is not yet (a loader without pin_memory, as with images cached on the
    device; a copy from pageable memory waits for the GPU); a tensor already there as it is."""
    if device.type != "cuda":
        return values.to(device)
    return pinned(values).to(device, non_blocking=True)


def pinned(values: torch.Tensor) -> torch.Tensor:
    """A host tensor in pinned memory (a copy where it is not yet), from which copies to a GPU need not wait;
    a device tensor as it is."""
    return values.pin_memory() if values.device.type == "cpu" and not values.is_pinned() else values


def free_memory(device: torch.device) -> int:
    """Bytes free on `device`: the GPU's free memory, or the RAM the operating system reports available."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class CudaGraphs:
    """Runs a function of device tensors as CUDA graphs: captured once per key (the shapes it works on), then
    each call copies its inputs into the graph's own and replays the whole function in one launch instead of
    one per operation (PyTorch's "CUDA Graphs" recipe: warm-up on a side stream, capture, replay). The function
    must only queue work on the device: no host reads of device values, no tensors made from host data.

    At most `limit` graphs are kept (a data set of many image sizes); keys beyond run the function as it is, as
    does a key whose capture failed (logged with its reason, kept in `failures`)."""

    def __init__(self, device: torch.device, limit: int = 8):
        if device.type != "cuda":
            raise HardwareError(f"CUDA graphs need a CUDA GPU, not {device}: set train.augment_graphs to auto or false")
        self.device, self.limit = device, limit
        self.graphs: dict = {}  # key -> (static inputs, graph, static output), or None: run as it is
        self.failures: list[str] = []

    def __call__(self, key, function: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        """function(*inputs) for inputs on the device or on the host (sent without waiting), from the graph
        captured for `key`; `function` is used at capture only, so it must do the same for every call of a key."""
        if key not in self.graphs:
            self.graphs[key] = self._capture(function, inputs) if len(self.graphs) < self.limit else None
        entry = self.graphs[key]
        if entry is None:
            return function(*(send(values, self.device) for values in inputs))
        static, graph, output = entry
        for target, values in zip(static, inputs, strict=True):
            target.copy_(pinned(values), non_blocking=True)
        graph.replay()
        return output.clone()  # the next replay writes over the graph's output

    def _capture(self, function, inputs):
        static = [send(values, self.device).clone() for values in inputs]
        try:
            with torch.cuda.device(self.device):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up: lazily made constants and libraries' workspaces
                    for _ in range(2):
                        function(*static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                # thread_local: the loader's pin-memory thread may allocate host memory during the capture
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    output = function(*static)
        except RuntimeError as error:
            self.failures.append(str(error))
            log.warning("CUDA graph capture failed (%s); this shape runs operation by operation", error)
            return None
        return static, graph, output
