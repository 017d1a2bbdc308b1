"""Speed benchmark: the pipeline's own throughput against the raw model work, as ratios.

    python benchmarks/speed.py                      # sample data (data/sample, after `make pipeline`)
    python benchmarks/speed.py --data ../shared/facebench/dev --preset params/facebench.yaml

Prints a table; the numbers in benchmarks/RESULTS.md come from it. Each ratio compares two
measurements taken in the same run on the same machine, so the machine's speed cancels out.
Inference is measured on each engine (eager PyTorch, ONNX Runtime, ONNX Runtime int8) in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from timing import mean_seconds, median_seconds  # benchmarks/timing.py
from torch.utils.data import DataLoader

from aivsreal.engines import ENGINE_ENV, export_onnx
from aivsreal.fit_calibration import quantize
from aivsreal.hardware import StepSettings
from aivsreal.model import ModelConfig, build_model, save_model, set_trainable
from aivsreal.params import Params, load_overrides
from aivsreal.predictor import Predictor
from aivsreal.split import scan_dataset
from aivsreal.training import ManifestDataset, backbone_features, seed_everything, train
from aivsreal.transforms import build_transforms


def model_of(params: Params) -> torch.nn.Module:
    return build_model(ModelConfig.from_params(params))[0]


def training_throughput(rows, params: Params, batches: int) -> tuple[float, float]:
    """(pipeline images/s with decoding + augmentation from files, raw images/s on in-memory tensors)."""
    p = params.train
    model = model_of(params)
    optimizer = torch.optim.AdamW(set_trainable(model, p.finetune), lr=p.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step(inputs, targets):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        optimizer.step()

    transform = build_transforms(p.image_size, p.resize, train=True, hflip=p.hflip, random_crop=p.random_crop)
    dataset = ManifestDataset(rows, params.data.class_names, transform, params.split.max_pixels)
    loader = DataLoader(dataset, batch_size=p.batch_size, shuffle=True, drop_last=True, **cpu_loader(p))
    seen, started, done = 0, None, 0
    while done < batches + 1:
        for inputs, targets in loader:
            if done == 1:  # first batch is warm-up
                started, seen = time.perf_counter(), 0
            step(inputs, targets)
            seen += len(targets)
            done += 1
            if done >= batches + 1:
                break
    pipeline = seen / (time.perf_counter() - started)
    inputs = torch.randn(p.batch_size, 3, p.image_size, p.image_size)
    targets = torch.randint(0, 2, (p.batch_size,))
    raw = p.batch_size / mean_seconds(lambda: step(inputs, targets), batches)
    return pipeline, raw


def inference_throughput(paths, params: Params, repeats: int) -> dict[str, tuple[float, float, float]]:
    """Per engine: (Predictor images/s from files incl. decoding, raw forward images/s, raw single-image ms)."""
    config = ModelConfig.from_params(params)
    model = model_of(params)
    batch = params.evaluate.batch_size
    paths = (paths * (batch // max(len(paths), 1) + 1))[:batch]
    size = config.eval_crop
    inputs, one = torch.randn(batch, 3, size, size), torch.randn(1, 3, size, size)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:  # the saved model as the train stage leaves it, int8 graph included
        folder = Path(tmp)
        config.onnx_file = export_onnx(model, size, folder).name
        base = Predictor(model, config)
        config.int8_file = quantize(base, base.load_many(paths), folder).name
        save_model(model, config, folder)
        for engine in ("torch", "onnx", "onnx-int8"):
            os.environ[ENGINE_ENV] = engine
            predictor = Predictor.from_dir(folder)

            def from_files(predictor=predictor):
                predictor.predict_proba(predictor.load_many(paths), batch)

            pipeline = batch / mean_seconds(from_files, repeats)
            with torch.inference_mode():
                raw = batch / mean_seconds(lambda predictor=predictor: predictor.network(inputs), repeats)
                single_ms = median_seconds(lambda predictor=predictor: predictor.network(one), 20) * 1000
            results[engine] = (pipeline, raw, single_ms)
        os.environ.pop(ENGINE_ENV)
    return results


def cpu_loader(p) -> dict:
    """train.num_workers (a number, or auto) as the CPU training resolves it (hardware.py)."""
    return StepSettings.resolve("fp32", p.num_workers, torch.device("cpu")).loader_options()


def frozen_backbone(rows, params: Params) -> tuple[float, float]:
    """(seconds of one full forward pass over the training rows, seconds per head-only epoch after it)."""
    p = dataclasses.replace(params.train, finetune="head", epochs=3, patience=99)
    params = dataclasses.replace(params, train=p, model=dataclasses.replace(params.model, pretrained="none"))
    train_rows, val_rows = rows[::2], rows[1::2]
    model = model_of(params)
    transform = ModelConfig.from_params(params).eval_transform()
    loader = DataLoader(ManifestDataset(train_rows, params.data.class_names, transform, params.split.max_pixels),
                        batch_size=p.batch_size, **cpu_loader(p))  # fmt: skip
    started = time.perf_counter()
    backbone_features(model, loader)
    forward_pass = time.perf_counter() - started
    history = train(params, train_rows, val_rows).history
    return forward_pass, statistics.mean(row["seconds"] for row in history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/sample", help="class-per-folder image tree (default: data/sample)")
    parser.add_argument("--preset", help="overrides file applied to params.yaml, e.g. params/facebench.yaml")
    parser.add_argument("--image-size", type=int, help="override train.image_size")
    parser.add_argument("--resize", type=int, help="override train.resize (0 = crop only)")
    parser.add_argument("--batches", type=int, default=10, help="timed training batches (default 10)")
    args = parser.parse_args()

    overrides = load_overrides(args.preset) if args.preset else {}
    for key in ("image_size", "resize"):
        if getattr(args, key) is not None:
            overrides[f"train.{key}"] = getattr(args, key)
    params = Params.load("params.yaml").with_overrides(overrides)
    seed_everything(0)
    records, _ = scan_dataset(Path(args.data), params.data.class_names, params.split.max_pixels)
    rows = [{"path": r.path, "label": r.label} for r in records]
    p = params.train
    print(f"# {platform.node()} | {platform.processor() or platform.machine()} | torch {torch.__version__} | "
          f"{torch.get_num_threads()} threads | {time.strftime('%Y-%m-%d')}")  # fmt: skip
    print(f"# data {args.data} ({len(rows)} images), image_size {p.image_size}, resize {p.resize}, "
          f"inference crop {ModelConfig.from_params(params).eval_crop}, input_filter {params.model.input_filter}, "
          f"batch {p.batch_size}, finetune {p.finetune}, num_workers {cpu_loader(p)['num_workers']}")  # fmt: skip
    train_pipeline, train_raw = training_throughput(rows, params, args.batches)
    inference = inference_throughput([r["path"] for r in rows], params, 5)
    print("| measurement | pipeline img/s | raw img/s | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| training (decode + augment + fwd/bwd) | {train_pipeline:.1f} | {train_raw:.1f} | "
          f"{train_pipeline / train_raw:.2f} | >= 0.9 |")  # fmt: skip
    for engine, (infer_pipeline, infer_raw, _) in inference.items():
        print(f"| batch inference (decode + fwd), {engine} | {infer_pipeline:.1f} | {infer_raw:.1f} | "
              f"{infer_pipeline / infer_raw:.2f} | >= 0.9 |")  # fmt: skip
    forward_pass, head_epoch = frozen_backbone(rows, params)
    for engine, (_, _, single_ms) in inference.items():
        print(f"| raw single-image forward, {engine} | | | {single_ms:.1f} ms | (serving budget: + 30 ms) |")
    print(f"| frozen backbone: head-only epoch vs one forward pass over train ({forward_pass:.2f} s) | "
          f"{head_epoch:.3f} s | | {head_epoch / forward_pass:.3f} | < 0.05 |")  # fmt: skip
    eager = inference["torch"]
    for engine in ("onnx", "onnx-int8"):
        fast = inference[engine]
        print(f"{engine} / torch, same run: batch from files {fast[0] / eager[0]:.2f}x, raw batch "
              f"{fast[1] / eager[1]:.2f}x, single image {eager[2] / fast[2]:.2f}x")  # fmt: skip
    print("(targets, issue 16: >= 2.5x batches, >= 2x single images)")


if __name__ == "__main__":
    main()
