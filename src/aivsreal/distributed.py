"""Helpers for training under `torchrun` with DistributedDataParallel; training.py imports them, never the reverse.

`train.launcher: torchrun` makes the train stage start itself again under
`python -m torch.distributed.run --standalone --nproc_per_node=<train.nproc>`; every process
then joins one process group (`gloo` on CPUs, `nccl` on GPUs). Nothing here distributes work
by itself: PyTorch's DistributedSampler shards the data, DDP averages the gradients, and
`all_reduce` sums the per-epoch counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def in_torchrun() -> bool:
    """True inside a process that torchrun started (it sets RANK, WORLD_SIZE and the rendezvous)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """`train.device`: auto (a GPU when there is one), cpu, or cuda."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA GPU is visible: set train.device to auto or cpu")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def setup(requested_device: str) -> Context:
    """Join the process group when started by torchrun; a plain single-process context otherwise."""
    if not in_torchrun():
        return Context(device=pick_device(requested_device))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(context: Context, *values: float) -> list[float]:
    """Element-wise sum of `values` over all processes (identity when single-process)."""
    if not context.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def sync_buffers(context: Context, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process, so that all of them
    evaluate exactly the model rank 0 will save."""
    if context.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def torchrun_command(module: str, nproc: int, argv: list[str]) -> list[str]:
    """`python -m <module> <argv>` as `nproc` processes under torchrun (with 1, a process group of one)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *argv]  # fmt: skip


def relaunch(module: str, nproc: int, argv: list[str]) -> int:
    """Run `python -m <module> <argv>` under torchrun with `nproc` processes; its exit status."""
    return subprocess.run(torchrun_command(module, nproc, argv), check=False).returncode
