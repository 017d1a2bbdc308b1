"""Eager PyTorch against ONNX Runtime on the same network, in the same run: single-image latency,
batch throughput and the largest probability difference.

    python benchmarks/engines.py                                  # models/model (after `make pipeline`)
    python benchmarks/engines.py --preset params/facebench.yaml   # an untrained network of that preset's shape

Speed does not depend on the weights, so `--preset` builds the facebench champion's network (residual
filter, 256 px) without training it. Both engines go through `Predictor` (same preprocessing); the
numbers in benchmarks/RESULTS.md ("Inference engines") come from this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aivsreal.engines import ENGINE_ENV, ONNX_FILE, export_onnx
from aivsreal.model import ModelConfig, build_model, load_saved_model, save_model
from aivsreal.params import Params, load_overrides
from aivsreal.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


def saved_model(args, folder: Path) -> Path:
    """A saved-model folder with its ONNX graph: a copy of --model, or the --preset's untrained network."""
    if args.preset:
        params = Params.load(ROOT / "params.yaml").with_overrides(load_overrides(args.preset))
        config = ModelConfig.from_params(params)
        model, config.pretrained_used = build_model(config)
    else:
        model, config = load_saved_model(args.model)
    config.onnx_file = export_onnx(model, config.eval_crop, folder).name
    save_model(model, config, folder)
    return folder


def faces(folder: Path, n: int) -> list:
    """`n` images from the folder tree (repeated if it holds fewer): real faces, so probabilities vary."""
    from aivsreal.images import list_image_files, load_image

    paths = list_image_files(folder)[0]
    if not paths:
        raise SystemExit(f"no images under {folder}: run `make pipeline` (sample data) or pass --data")
    return [load_image(paths[i % len(paths)]) for i in range(n)]


def measure(predictor: Predictor, images: list, repeats: int, batch: int) -> dict:
    single = []
    predictor.predict_proba(images[:1])  # warm-up
    for image in images[:repeats]:
        started = time.perf_counter()
        predictor.predict_proba([image])
        single.append(time.perf_counter() - started)
    predictor.predict_proba(images[:batch], batch_size=batch)
    started = time.perf_counter()
    rounds = 3
    for _ in range(rounds):
        predictor.predict_proba(images[:batch], batch_size=batch)
    seconds = (time.perf_counter() - started) / rounds
    return {"single_ms": 1000 * statistics.median(single), "batch_images_per_s": batch / seconds}


def network_only(folder: Path, crop: int) -> list[str]:
    """Table rows for the network alone (random input, no preprocessing): eager PyTorch, then ONNX
    Runtime under a few session settings (threads, graph optimisation level)."""
    import onnxruntime

    from aivsreal.model import load_saved_model

    model, _ = load_saved_model(folder)
    one, many = torch.randn(1, 3, crop, crop), torch.randn(32, 3, crop, crop)

    def median_seconds(run, batch, repeats):
        run(batch)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run(batch)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    with torch.inference_mode():
        rows = [("eager PyTorch (inference_mode)", median_seconds(model, one, 20), median_seconds(model, many, 3))]
    for threads in (0, 2, 1):
        for level in ("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED"):
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
            graph = str(folder / ONNX_FILE)
            session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

            def run(batch, session=session):
                return session.run(None, {"pixels": batch.numpy()})

            name = f"ONNX Runtime, {'default' if threads == 0 else threads} threads, {level}"
            rows.append((name, median_seconds(run, one, 20), median_seconds(run, many, 3)))
    return [f"| {name} | {1000 * single:.1f} ms | {32 / batch:.1f} img/s |" for name, single, batch in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models/model", help="saved model folder")
    parser.add_argument("--preset", help="overrides file: benchmark an untrained network of its shape instead")
    parser.add_argument("--data", type=Path, default=ROOT / "data/sample", help="images to score")
    parser.add_argument("--repeats", type=int, default=30, help="single-image calls timed (median)")
    parser.add_argument("--batch", type=int, default=32, help="batch size for the throughput figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = saved_model(args, Path(tmp))
        results, probabilities = {}, {}
        for engine in ("torch", "onnx"):
            os.environ[ENGINE_ENV] = engine
            predictor = Predictor.from_dir(folder)
            images = faces(args.data, max(args.repeats, args.batch))
            results[engine] = measure(predictor, images, args.repeats, args.batch)
            probabilities[engine] = predictor.predict_proba(images)
        os.environ.pop(ENGINE_ENV)
        crop = predictor.config.eval_crop
        filter_name = predictor.config.input_filter
        network_rows = network_only(folder, crop)
    torch_r, onnx_r = results["torch"], results["onnx"]
    difference = float(np.abs(probabilities["torch"] - probabilities["onnx"]).max())
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"network: ResNet18, input filter {filter_name}, {crop} px")
    print("| | eager PyTorch | ONNX Runtime | ratio |")
    print("|---|---|---|---|")
    print(f"| single image, median | {torch_r['single_ms']:.1f} ms | {onnx_r['single_ms']:.1f} ms | "
          f"{torch_r['single_ms'] / onnx_r['single_ms']:.2f}x |")  # fmt: skip
    print(f"| batch of {args.batch} | {torch_r['batch_images_per_s']:.1f} img/s | "
          f"{onnx_r['batch_images_per_s']:.1f} img/s | "
          f"{onnx_r['batch_images_per_s'] / torch_r['batch_images_per_s']:.2f}x |")  # fmt: skip
    print(f"max |probability difference|: {difference:.2e}")
    print("\nthe network alone (random input, medians):")
    print("| engine, settings | batch 1 | batch of 32 |")
    print("|---|---|---|")
    print("\n".join(network_rows))


if __name__ == "__main__":
    main()
