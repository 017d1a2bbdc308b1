"""train.precision and train.num_workers: plain float32 on the CPU, bf16 autocast that really runs, the
CUDA paths (autocast, pinned memory, channels-last) on a GPU when there is one."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
from conftest import PROJECT
from helpers_images import random_image
from test_training import brightness_rows, tiny_params

from aivsreal.hardware import HardwareError, StepSettings
from aivsreal.training import train

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    all_rows = brightness_rows(tmp_path_factory.mktemp("tiny"), 12, 20)
    return all_rows[::2], all_rows[1::2]


def test_on_the_cpu_auto_means_plain_float32_in_the_training_process():
    steps = StepSettings.resolve("auto", "auto", CPU)
    assert (steps.precision, steps.num_workers, steps.pin_memory, steps.channels_last) == ("fp32", 0, False, False)
    assert StepSettings.resolve("auto", 3, CPU).num_workers == 3  # a number is kept
    batch = torch.rand(2, 3, 8, 8)
    assert steps.images(batch) is batch  # no copy, no layout change


def test_fp16_on_a_cpu_is_refused_with_what_to_use_instead():
    with pytest.raises(HardwareError, match="fp16 needs a CUDA GPU.*on the CPU use auto or fp32"):
        StepSettings.resolve("fp16", 0, CPU)


def test_auto_and_fp32_train_the_same_weights_on_the_cpu(rows):
    auto, fp32 = train(tiny_params(precision="auto"), *rows), train(tiny_params(precision="fp32"), *rows)
    assert auto.precision == fp32.precision == "fp32" and auto.num_workers == 0
    for key, value in auto.model.state_dict().items():
        assert torch.equal(value, fp32.model.state_dict()[key]), key


def test_bf16_autocast_trains_on_the_cpu_and_learns(rows):
    result = train(tiny_params(precision="bf16", epochs=3, lr=0.01), *rows)
    assert result.precision == "bf16"
    assert all(math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) for row in result.history)
    assert next(result.model.parameters()).dtype == torch.float32  # autocast: weights stay float32
    fp32 = train(tiny_params(precision="fp32", epochs=3, lr=0.01), *rows)
    assert [r["train_loss"] for r in result.history] != [r["train_loss"] for r in fp32.history]  # really bf16


@needs_cuda
def test_on_a_gpu_auto_uses_mixed_precision_pinned_memory_and_channels_last():
    steps = StepSettings.resolve("auto", "auto", torch.device("cuda"))
    assert steps.precision in ("bf16", "fp16") and steps.pin_memory and steps.channels_last and steps.num_workers >= 1
    moved = steps.images(torch.rand(2, 3, 8, 8).pin_memory())
    assert moved.is_cuda and moved.is_contiguous(memory_format=torch.channels_last)


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_runs_on_a_gpu_in_mixed_precision(rows, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = train(tiny_params(precision=precision, device="cuda", num_workers="auto", epochs=2), *rows)
    assert result.precision == precision and result.num_workers >= 1
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    assert next(result.model.parameters()).device.type == "cpu"  # returned on the CPU, as on CPU runs


def test_the_gpu_benchmark_runs_on_the_cpu_and_prints_its_tables(tmp_path):
    """benchmarks/gpu.py measures on a CUDA machine; its smoke mode runs the same code on the CPU."""
    for label in ("ai", "real"):
        (tmp_path / label).mkdir()
        for i in range(6):
            random_image((40, 40), seed=i + 10 * (label == "ai")).save(tmp_path / label / f"{i}.png")
    command = [sys.executable, str(PROJECT / "benchmarks/gpu.py"), "--data", str(tmp_path), "--device", "cpu",
               "--batch-sizes", "4", "--precisions", "fp32", "--workers", "0", "--batches", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=PROJECT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| decode (load_image) |" in done.stdout and "| training step (fp32) |" in done.stdout
    assert "| device path: augment the batch (DeviceAugment on images cached on the device) |" in done.stdout
    assert "| device path, batch 4, fp32 | queued ms per batch | GPU kernel ms per batch |" in done.stdout
    for work in ("augment (DeviceAugment)", "augment, fixed shapes", "training step", "augment + step"):
        counted = re.search(rf"\| {re.escape(work)} \| ([\d.]+) \| 0.00 \| (\d+) \| 0 \|", done.stdout)
        assert counted and float(counted.group(1)) > 0 and int(counted.group(2)) > 0, done.stdout
    for path in ("loader", "device"):  # train.augment_on: both paths measured
        row = next(line for line in done.stdout.splitlines() if line.startswith(f"| 4 | fp32 | {path} | 0 (0) |"))
        cells = row.strip("|").split("|")
        pipeline, raw, ratio = (float(cell) for cell in cells[4:7])
        assert pipeline > 0 and raw > 0 and ratio == pytest.approx(pipeline / raw, rel=0.05)  # both printed rounded
        assert cells[7].strip() == "n/a (CPU)"  # host waits for the GPU: counted on CUDA only
    assert "| 4 | fp32 | device (CUDA graphs) | 0 | n/a: train.augment_graphs true needs a CUDA GPU" in done.stdout
