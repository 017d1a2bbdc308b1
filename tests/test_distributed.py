"""DistributedDataParallel under torchrun (gloo, 2 CPU processes) against a single process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PROJECT
from helpers_images import random_image

from aivsreal import distributed
from aivsreal.manifests import ImageRecord, write_manifest
from aivsreal.params import Params, ParamsError


@pytest.fixture(scope="module")
def setup_files(tmp_path_factory):
    """16 training and 8 validation images (balanced), manifests, and a params file for exact equivalence:
    frozen backbone (its BatchNorm statistics are fixed), no dropout and no random augmentation."""
    folder = tmp_path_factory.mktemp("ddp")
    rows = {"train": [], "val": []}
    for label, shift in (("ai", 60), ("real", -60)):
        for i in range(12):
            path = folder / f"{label}_{i}.png"
            image = random_image((20, 20), seed=i + (100 if label == "ai" else 0))
            image.point(lambda v, s=shift: max(0, min(255, v + s))).save(path)
            rows["train" if i < 8 else "val"].append(ImageRecord(str(path), label, f"{label}{i}"))
    for name, split_rows in rows.items():
        write_manifest(folder / f"{name}.csv", split_rows)
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["model"] |= {"pretrained": "none", "hidden": 8, "dropout": 0.0}
    raw["train"] |= {
        "finetune": "head", "epochs": 3, "patience": 5, "batch_size": 8, "image_size": 16, "resize": 16,
        "hflip": False, "random_crop": False, "lr": 0.01, "lr_schedule": "onecycle",
    }  # fmt: skip
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    return folder


def run_worker(folder: Path, out: str, nproc: int) -> dict:
    args = ["--params", str(folder / "params.yaml"), "--train", str(folder / "train.csv"),
            "--val", str(folder / "val.csv"), "--out", str(folder / out)]  # fmt: skip
    command = distributed.torchrun_command("aivsreal.training", nproc, args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return {
        "state": torch.load(folder / out / "weights.pt", weights_only=True),
        **json.loads((folder / out / "history.json").read_text()),
    }


def test_two_gloo_processes_train_the_same_model_as_one(setup_files):
    single = run_worker(setup_files, "single", nproc=1)
    ddp = run_worker(setup_files, "ddp", nproc=2)

    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    for key, value in single["state"].items():
        torch.testing.assert_close(ddp["state"][key], value, atol=1e-5, rtol=1e-4, msg=key)
    for one, two in zip(single["history"], ddp["history"], strict=True):
        # counts summed across ranks: same images seen, same validation loss and accuracy
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
        assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
        assert two["val_accuracy"] == one["val_accuracy"]
    assert single["history"][-1]["train_loss"] < single["history"][0]["train_loss"]  # it did learn something


def test_single_process_context_when_not_under_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = distributed.setup("cpu")
    assert (context.rank, context.world_size, context.is_main, context.distributed) == (0, 1, True, False)
    assert distributed.sum_across(context, 1.5, 2) == [1.5, 2]


def test_cuda_requested_without_a_gpu_says_what_to_do():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="train.device"):
        distributed.pick_device("cuda")
    assert distributed.pick_device("auto") == torch.device("cpu")


def test_nproc_must_divide_the_batch(tmp_path):
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["train"] |= {"launcher": "torchrun", "nproc": 3, "batch_size": 16}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="train.nproc"):
        Params.load(tmp_path / "params.yaml")
