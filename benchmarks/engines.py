"""Eager PyTorch against ONNX Runtime (float and int8) on the same network, in the same run: single-image
latency, batch throughput and the largest probability difference, then the network alone under the
settings tried (ORT threads and graph optimisation, channels_last, torch.compile, int8 formats).

    python benchmarks/engines.py                                  # models/model (after `make pipeline`)
    python benchmarks/engines.py --preset params/facebench.yaml   # an untrained network of that preset's shape
    python benchmarks/engines.py --model /path/to/models/model --data ../shared/facebench/dev

Speed does not depend on the weights, so `--preset` builds a preset's network without training it.
Every engine goes through `Predictor` (same preprocessing). The int8 graph is calibrated on the first
--calibration images of --data, as the train stage calibrates on validation images (`model.int8`);
its accuracy is measured by benchmarks/int8.py. The numbers in benchmarks/RESULTS.md ("Inference
engines") come from this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import mean_seconds, median_seconds  # benchmarks/timing.py

from aivsreal.engines import ENGINE_ENV, INT8_FILE, ONNX_FILE, export_onnx, quantize_int8
from aivsreal.fit_calibration import quantize
from aivsreal.model import ModelConfig, build_model, load_saved_model, save_model
from aivsreal.params import Params, load_overrides
from aivsreal.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("torch", "onnx", "onnx-int8")


def saved_model(args, folder: Path, calibration: list) -> Path:
    """A saved-model folder with its float and int8 ONNX graphs: a copy of --model, or the --preset's
    untrained network."""
    if args.preset:
        params = Params.load(ROOT / "params.yaml").with_overrides(load_overrides(args.preset))
        config = ModelConfig.from_params(params)
        model, config.pretrained_used = build_model(config)
    else:
        model, config = load_saved_model(args.model)
    config.onnx_file = export_onnx(model, config.eval_crop, folder).name
    config.int8_file = quantize(Predictor(model, config), calibration, folder).name
    save_model(model, config, folder)
    return folder


def faces(folder: Path, n: int, skip: int = 0) -> list:
    """`n` images from the folder tree after the first `skip` (repeated if it holds fewer): real faces."""
    from aivsreal.images import list_image_files, load_image

    paths = list_image_files(folder)[0]
    if not paths:
        raise SystemExit(f"no images under {folder}: run `make pipeline` (sample data) or pass --data")
    return [load_image(paths[(skip + i) % len(paths)]) for i in range(n)]


def measure(predictor: Predictor, images: list, repeats: int, batch: int) -> dict:
    """Through Predictor (resize, crop, normalise, forward, softmax): median single-image latency and
    batch throughput."""
    single = median_seconds(lambda: predictor.predict_proba(images[:1]), repeats)
    batch_seconds = mean_seconds(lambda: predictor.predict_proba(images[:batch], batch_size=batch), 3)
    return {"single_ms": 1000 * single, "batch_images_per_s": batch / batch_seconds}


def preprocessing(predictor: Predictor, images: list, batch: int) -> list[str]:
    """Table rows for preprocessing alone (resize, crop, normalise into one batch), by thread count."""
    rows = []
    for threads in (1, 2, 4):
        seconds = median_seconds(lambda t=threads: next(predictor.input_batches(images[:batch], batch, t)), 10)
        rows.append(f"| {threads} | {1000 * seconds:.1f} ms | {batch / seconds:.0f} img/s |")
    return rows


def network_only(folder: Path, crop: int, calibration: list) -> list[str]:
    """Table rows for the network alone (random input, no preprocessing): eager PyTorch as is, in
    channels_last and compiled; ONNX Runtime under a few session settings; int8 graphs of each format."""
    import onnxruntime

    model, config = load_saved_model(folder)
    one, many = torch.randn(1, 3, crop, crop), torch.randn(32, 3, crop, crop)

    def timed(run) -> tuple[float, float]:
        return median_seconds(lambda: run(one), 20), median_seconds(lambda: run(many), 3)

    rows = []
    with torch.inference_mode():
        rows.append(("eager PyTorch (`inference_mode`, what the torch engine runs)", *timed(model)))
        last = load_saved_model(folder)[0].to(memory_format=torch.channels_last)
        rows.append(("eager PyTorch, channels_last", *timed(lambda x: last(x.to(memory_format=torch.channels_last)))))
        compiled = torch.compile(model)
        compiled(one), compiled(many)  # compile both shapes before timing (tens of seconds each)
        rows.append(("PyTorch, `torch.compile` (inductor)", *timed(compiled)))

    def session_rows(graph: Path, label: str, settings) -> None:
        for threads, level in settings:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
            session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
            name = f"ONNX Runtime{label}, {'default' if threads == 0 else threads} threads, {level}"
            rows.append((name, *timed(lambda batch, s=session: s.run(None, {"pixels": batch.numpy()}))))

    all_settings = [(t, level) for t in (0, 2, 1) for level in ("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED")]
    session_rows(folder / ONNX_FILE, "", all_settings)
    default_int8 = " int8 (QOperator, per channel: what `model.int8` writes)"
    session_rows(folder / INT8_FILE, default_int8, [(0, "ORT_ENABLE_ALL")])
    batches = [b.numpy() for b in Predictor(model, config).input_batches(calibration, batch_size=16)]
    with tempfile.TemporaryDirectory() as tmp:
        for quant_format, per_channel in (("QOperator", False), ("QDQ", True)):
            graph = folder / ONNX_FILE
            graph = quantize_int8(Path(tmp), str(graph), batches, config.input_filter, quant_format, per_channel)
            label = f" int8 ({quant_format}, {'per channel' if per_channel else 'per tensor'})"
            session_rows(graph, label, [(0, "ORT_ENABLE_ALL")])
    return [f"| {name} | {1000 * single:.1f} ms | {32 / batch:.1f} img/s |" for name, single, batch in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models/model", help="saved model folder")
    parser.add_argument("--preset", help="overrides file: benchmark an untrained network of its shape instead")
    parser.add_argument("--data", type=Path, default=ROOT / "data/sample", help="images to score")
    parser.add_argument("--repeats", type=int, default=30, help="single-image calls timed (median)")
    parser.add_argument("--batch", type=int, default=32, help="batch size for the throughput figure")
    parser.add_argument("--calibration", type=int, default=64, help="images the int8 graph is calibrated on")
    parser.add_argument("--no-network", action="store_true", help="skip the network-only table (compiling: a minute)")
    args = parser.parse_args()

    calibration = faces(args.data, args.calibration)
    images = faces(args.data, max(args.repeats, args.batch), skip=args.calibration)
    with tempfile.TemporaryDirectory() as tmp:
        folder = saved_model(args, Path(tmp), calibration)
        results, probabilities = {}, {}
        for engine in ENGINES:
            os.environ[ENGINE_ENV] = engine
            predictor = Predictor.from_dir(folder)
            results[engine] = measure(predictor, images, args.repeats, args.batch)
            probabilities[engine] = predictor.predict_proba(images)
        os.environ.pop(ENGINE_ENV)
        config = predictor.config
        preprocessing_rows = preprocessing(predictor, images, args.batch)
        network_rows = [] if args.no_network else network_only(folder, config.eval_crop, calibration)
    eager = results["torch"]
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"network: ResNet18, input filter {config.input_filter}, {config.eval_crop} px; "
          f"{'untrained ' + args.preset if args.preset else args.model}; images {args.data}")  # fmt: skip
    print(f"| engine | single image, median of {args.repeats} | vs PyTorch | batch of {args.batch} | vs PyTorch "
          "| max abs(p - PyTorch's p) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for engine in ENGINES:
        r = results[engine]
        difference = float(np.abs(probabilities[engine] - probabilities["torch"]).max())
        print(f"| {engine} | {r['single_ms']:.1f} ms | {eager['single_ms'] / r['single_ms']:.2f}x | "
              f"{r['batch_images_per_s']:.1f} img/s | {r['batch_images_per_s'] / eager['batch_images_per_s']:.2f}x | "
              f"{difference:.1e} |")  # fmt: skip
    print(f"\npreprocessing alone, batch of {args.batch} (Predictor.input_batches, medians):")
    print("| threads | batch | throughput |")
    print("|---|---|---|")
    print("\n".join(preprocessing_rows))
    if network_rows:
        print("\nthe network alone (random input, medians):")
        print("| engine, settings | batch 1 | batch of 32 |")
        print("|---|---|---|")
        print("\n".join(network_rows))


if __name__ == "__main__":
    main()
