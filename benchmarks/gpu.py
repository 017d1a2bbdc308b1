"""GPU training benchmark: the pipeline's training throughput against the raw step, and where a batch's time goes.

    python benchmarks/gpu.py --data ../shared/facebench --preset params/facebench.yaml          # on a CUDA machine
    python benchmarks/gpu.py --data ../shared/facebench --preset params/facebench.yaml --full   # + one full training
    python benchmarks/gpu.py --device cpu --batch-sizes 8 --precisions fp32 --workers 0 --batches 2   # smoke test

Prints three Markdown tables for benchmarks/RESULTS.md:
1. Stage costs: milliseconds of CPU work per training image in a loader worker on the loader path (decode;
   each degradation as the preset draws it, weighted by its probability; resize + crop + flip; to tensor +
   normalise) and per batch (collate; copy to the device; one training step); then the device path's
   work per batch (train.augment_on device: DeviceAugment on images decoded once and kept on the device).
   The largest cost sets the pace. Then, for each batch size, the device path's augmentation, the training
   step and both, each queued back to back: milliseconds per batch until the device is done, against the
   GPU's kernel time per batch (torch.profiler), and the torch operations and GPU kernels per batch. Queued
   time well above kernel time: the host's launches set the pace (fewer, fused operations or CUDA graphs
   would help); close to it: the GPU's work does.
2. Throughput, for each batch size x precision (train.precision) x augmentation path (train.augment_on) x
   loader workers (train.num_workers, loader path only): the pipeline's images/s (loader: files decoded and
   augmented by the DataLoader, copied; device: cached images augmented on the device; one step each
   batch) against the raw step's images/s on a batch already on the device, in the same run, and their ratio.
   Steps are queued back to back as training runs them (the clock stops after the last one finishes), so
   the host can prepare a batch while the GPU runs the one before; on CUDA the last column counts the times
   per batch the host waited for the GPU anyway (torch.cuda's sync debug mode): each wait empties the queue.
3. With --full: the wall time of the train stage's training (aivsreal.training.train) with the preset and the
   auto settings (on a GPU: bf16, device augmentation with CUDA graphs, images cached on the device): the
   model and, where the preset sets model.forensic, the forensic expert, on the trained sources' training
   share (split.train; split.test_sources left out). Calibration, ONNX export and MLflow logging not included.
Both classes and every source of --data are read like the split stage reads them (a folder of sources
or one class-per-folder tree). Without CUDA, --device auto says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import platform
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from timing import mean_seconds  # benchmarks/timing.py
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms.v2.functional import pil_to_tensor

from aivsreal.degradations import blur, downscale, jpeg
from aivsreal.device_augment import DeviceAugment
from aivsreal.experts import forensic_recipe
from aivsreal.hardware import HardwareError, StepSettings
from aivsreal.images import load_image
from aivsreal.model import ModelConfig, build_model, set_trainable
from aivsreal.params import Params, load_overrides
from aivsreal.split import scan_dataset
from aivsreal.training import ManifestDataset, collate_images, decode_once, train, train_transform
from aivsreal.transforms import IMAGENET_STD

ROOT = Path(__file__).resolve().parents[1]


def stage_costs(rows: list[dict], params: Params, steps: StepSettings, batch: int, n: int = 32) -> list[tuple]:
    """(stage, ms, per) rows: the CPU work of one training image, then of one batch."""
    p = params.train
    paths = [row["path"] for row in rows[:n]]
    images = [load_image(path) for path in paths]
    rng = random.Random(0)
    timed = [("decode (load_image)", mean_seconds(lambda: [load_image(path) for path in paths], 3) / n, "image")]
    draws = [  # RandomDegrade's operations at their preset probability, mid-range strength
        ("shrink before crop", p.downscale_prob, lambda im: downscale(im, (1 + p.downscale_min) / 2)),
        ("blur", p.blur_prob, lambda im: blur(im, p.blur_sigma_max / 2)),
        ("JPEG re-save", p.jpeg_prob, lambda im: jpeg(im, rng.randint(p.jpeg_quality_min, 100))),
    ]
    for name, probability, apply in draws:
        if probability > 0:
            seconds = mean_seconds(lambda apply=apply: [apply(im) for im in images], 3) / n
            timed.append((f"{name} (x probability {probability:g})", seconds * probability, "image"))
    transform = train_transform(dataclasses.replace(p, blur_prob=0.0, jpeg_prob=0.0, downscale_prob=0.0))
    geometry, tensor = transform.transforms[:-2], transform.transforms[-2:]
    shaped = [_compose(geometry)(im) for im in images]
    timed.append(("resize + crop + flip", mean_seconds(lambda: [_compose(geometry)(im) for im in images], 3) / n,
                  "image"))  # fmt: skip
    timed.append(("to tensor + normalise", mean_seconds(lambda: [_compose(tensor)(im) for im in shaped], 3) / n,
                  "image"))  # fmt: skip
    samples = [(_compose(tensor)(shaped[i % n]), 0) for i in range(batch)]
    timed.append(("collate", mean_seconds(lambda: default_collate(samples), 5), "batch"))
    cpu_batch = default_collate(samples)[0]
    if steps.pin_memory:
        cpu_batch = cpu_batch.pin_memory()
    timed.append(("copy to device", mean_seconds(lambda: _sync(steps.images(cpu_batch), steps), 5), "batch"))
    model, optimizer, step = _step(params, steps)
    on_device = steps.images(cpu_batch)
    targets = steps.tensor(torch.zeros(batch, dtype=torch.long))
    seconds = mean_seconds(lambda: _sync(step(on_device, targets), steps), 5)
    timed.append((f"training step ({steps.precision})", seconds, "batch"))
    decoded = [pil_to_tensor(image).to(steps.device) for image in images]  # as train.cache_images keeps them
    augment = DeviceAugment(p, steps.device, 0)
    batch_images = [decoded[i % n] for i in range(batch)]
    seconds = mean_seconds(lambda: _sync(augment(batch_images), steps), 5)
    timed.append(("device path: augment the batch (DeviceAugment on images cached on the device)", seconds, "batch"))
    return [(name, seconds * 1000, per) for name, seconds, per in timed]


def work_profile(work: Callable[[], object], steps: StepSettings, repeats: int = 5) -> tuple[float, float, int, int]:
    """(ms per call with `repeats` calls queued back to back, the clock stopped when the device is done; GPU
    kernel ms per call; torch operations and GPU kernels per call), the last three as torch.profiler counts
    one call (aten:: events, nested ones included; kernels 0 on a CPU)."""
    _sync(work(), steps)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    _sync(None, steps)
    queued = (time.perf_counter() - started) / repeats
    activities = [torch.profiler.ProfilerActivity.CPU]
    if steps.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiled:
        _sync(work(), steps)
    events = profiled.key_averages()
    aten = sum(event.count for event in events if event.key.startswith("aten::"))
    on_gpu = [event for event in events if event.device_type == torch.autograd.DeviceType.CUDA]
    kernel_ms = sum(event.self_device_time_total for event in on_gpu) / 1000
    return queued * 1000, kernel_ms, aten, sum(event.count for event in on_gpu)


def device_path_work(params: Params, device: torch.device, precision: str, images: list[torch.Tensor]) -> list[tuple]:
    """(work, queued ms, GPU kernel ms, torch operations, GPU kernels) per batch of `images` (on the device):
    the device path's augmentation (exact shapes; fixed shapes; on CUDA, fixed shapes replayed as a CUDA graph,
    train.augment_graphs; and the graphs with TF32 matrix products, with how much that moves the pixels), the
    training step on its output, and both, as training queues them. A work that fails is a row with its error."""
    steps = StepSettings.resolve(precision, 0, device, augment_on="device")
    augment = DeviceAugment(params.train, device, 0)
    fixed = DeviceAugment(params.train, device, 0, shapes="fixed")
    _, _, step = _step(params, steps)
    targets = steps.tensor(torch.zeros(len(images), dtype=torch.long))
    inputs = steps.images(augment(images))
    works = {
        "augment (DeviceAugment)": lambda: augment(images),
        "augment, fixed shapes": lambda: fixed(images),
        "training step": lambda: step(inputs, targets),
        "augment + step": lambda: step(steps.images(augment(images)), targets),
    }
    if device.type == "cuda":
        graphs = DeviceAugment(params.train, device, 0, shapes="graphs")
        works["augment, CUDA graphs"] = lambda: graphs(images)
        works["augment (CUDA graphs) + step"] = lambda: step(steps.images(graphs(images)), targets)
        # a lever if the products' kernel time sets the pace: TF32 matrix products, at a rounding cost
        tf32 = DeviceAugment(params.train, device, 0, shapes="graphs")
        works[f"augment, CUDA graphs, TF32 products ({_tf32_change(params, device, images)})"] = lambda: _in_tf32(
            lambda: tf32(images)
        )
    rows = []
    for name, work in works.items():
        try:
            rows.append((name, *work_profile(work, steps)))
        except Exception as error:  # noqa: BLE001 - the measurement goes on; the row says what failed
            rows.append((f"{name}: failed ({type(error).__name__}: {error})", math.nan, math.nan, 0, 0))
    if device.type == "cuda" and graphs.graphs.failures:
        rows.append((f"CUDA graph capture failed, ran eagerly: {graphs.graphs.failures[0][:200]}", *[math.nan] * 4))
    return rows


def _in_tf32(work: Callable[[], object]):
    """work() with float32 matrix products in TF32 (torch.set_float32_matmul_precision("high")) on CUDA."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        return work()
    finally:
        torch.set_float32_matmul_precision(before)


def _tf32_change(params: Params, device: torch.device, images: list[torch.Tensor]) -> str:
    """How much TF32 products change the augmented batch against float32 ones, with the same draws."""
    try:
        exact = DeviceAugment(params.train, device, 7, shapes="fixed")(images)
        rounded = _in_tf32(lambda: DeviceAugment(params.train, device, 7, shapes="fixed")(images))
        levels = (exact - rounded).abs() * torch.tensor(IMAGENET_STD, device=device).view(1, -1, 1, 1) * 255
        return (
            f"vs float32: {(levels > 0.5).float().mean().item():.4%} of values moved, at most {levels.max():.1f} levels"
        )
    except Exception as error:  # noqa: BLE001 - the row still says what failed
        return f"change not measured: {type(error).__name__}: {str(error)[:100]}"


SYNC = "called a synchronizing CUDA operation"  # torch.cuda's sync debug warning (c10 warn_or_error_on_sync)


@contextlib.contextmanager
def host_waits(steps: StepSettings):
    """The warnings raised inside the block (a list), with torch.cuda's sync debug mode reporting each time the
    host waits for the GPU (item(), nonzero, blocking copies, synchronize) as one whose message is SYNC.
    Empty on a CPU."""
    if steps.device.type != "cuda":
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


def throughput(
    rows: list[dict], params: Params, steps: StepSettings, batch: int, batches: int, decoded: list | None = None
) -> tuple[float, float, float | None]:
    """(pipeline images/s, raw images/s on a batch already on the device, host waits per pipeline batch or
    None on a CPU). The loader path reads the files; the device path (steps.augment_on device) augments
    `decoded`, the images decoded once onto the device. Both queue their steps back to back."""
    p, names, max_pixels = params.train, params.data.class_names, params.split.max_pixels
    augment = None
    if steps.augment_on == "device":
        dataset = ManifestDataset(rows, names, None, max_pixels, decoded=decoded)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collate_images)
        augment = DeviceAugment(p, steps.device, 0, shapes="graphs" if steps.augment_graphs else "exact")
    else:
        dataset = ManifestDataset(rows, names, train_transform(p), max_pixels)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, **steps.loader_options())
    _, _, step = _step(params, steps)
    done, seen, started, waits = 0, 0, None, []
    with contextlib.ExitStack() as stack:
        while done < batches + 1:
            for inputs, targets in loader:
                if done == 1:  # the first batch warms up workers and kernels
                    _sync(None, steps)
                    started, seen, waits = time.perf_counter(), 0, stack.enter_context(host_waits(steps))
                step(steps.images(augment(inputs) if augment else inputs), steps.tensor(targets))
                seen += len(targets)
                done += 1
                if done == batches + 1:
                    break
        waited = None if steps.device.type != "cuda" else sum(SYNC in str(w.message) for w in waits) / batches
    _sync(None, steps)  # the queued steps finish
    pipeline = seen / (time.perf_counter() - started)
    fixed = steps.images(torch.randn(batch, 3, p.image_size, p.image_size))
    targets = steps.tensor(torch.zeros(batch, dtype=torch.long))
    raw = batch * batches / mean_seconds(lambda: _sync([step(fixed, targets) for _ in range(batches)], steps), 1)
    return pipeline, raw, waited


def full_training(params: Params, rows: list[dict]) -> None:
    """Prints the wall time of the training the train stage runs with `params` (auto settings): the model, and
    with model.forensic the forensic expert too, on the trained sources' share split.train (split.val
    validates), the sources in split.test_sources left out as the split stage leaves them."""
    auto = {"train.precision": "auto", "train.num_workers": "auto", "train.augment_on": "auto",
            "train.augment_graphs": "auto", "train.cache_images": "auto"}  # fmt: skip
    params = params.with_overrides(auto)
    trained = [row for row in rows if row["source"] not in params.split.test_sources]
    first, second = int(len(trained) * params.split.train), int(len(trained) * (params.split.train + params.split.val))
    experts = [("model", params)] + (
        [("forensic expert", forensic_recipe(params, ROOT))] if params.model.forensic else []
    )
    columns = "precision | augmented in | CUDA graphs | images cached | workers | epochs | seconds"
    print(f"\n| full training, {first} training and {second - first} validation images | {columns} |")
    print("|---" * 8 + "|")
    total = 0.0
    for name, expert in experts:
        started = time.perf_counter()
        result = train(expert, trained[:first], trained[first:second])
        seconds = time.perf_counter() - started
        total += seconds
        print(f"| {name} | {result.precision} | {result.augment_on} | {result.augment_graphs} | {result.cache_images} "
              f"| {result.num_workers} | {len(result.history)} | {seconds:.1f} |")  # fmt: skip
    print(f"| all | | | | | | | {total:.1f} |")


def _step(params: Params, steps: StepSettings):
    """The training step of aivsreal.training (autocast forward, scaled backward, optimiser step), queued: the
    caller synchronises where it times."""
    model = steps.prepare(build_model(ModelConfig.from_params(params))[0])
    model.train()
    optimizer = torch.optim.AdamW(set_trainable(model, params.train.finetune), lr=params.train.lr)
    scaler, loss_fn = steps.grad_scaler(), torch.nn.CrossEntropyLoss()

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with steps.autocast():
            loss = loss_fn(model(inputs), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    return model, optimizer, step


def _sync(result, steps: StepSettings):
    if steps.device.type == "cuda":
        torch.cuda.synchronize()
    return result


def _compose(transforms):
    def apply(image):
        for transform in transforms:
            image = transform(image)
        return image

    return apply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "sample", help="folder of sources or of classes")
    parser.add_argument("--preset", default="params/facebench.yaml", help="overrides file, or none")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--workers", nargs="+", default=["2", "auto"], help="train.num_workers values to try")
    augment_paths = ("loader", "device", "graphs")
    parser.add_argument("--augment", nargs="+", default=list(augment_paths), choices=augment_paths,
                        help="augmentation paths (device: images decoded once onto the device; graphs: device "
                        "with train.augment_graphs, CUDA only)")  # fmt: skip
    parser.add_argument("--batches", type=int, default=20, help="timed batches per throughput measurement")
    parser.add_argument(
        "--full",
        action="store_true",
        help="also time the train stage's training with the preset (both experts where it has two)",
    )
    args = parser.parse_args()
    if args.device == "auto" and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure (run with --device cpu for a smoke test)")
        return
    device = torch.device("cuda" if args.device == "auto" else args.device)
    params = Params.load(ROOT / "params.yaml")
    if args.preset != "none":
        params = params.with_overrides(load_overrides(ROOT / args.preset))
    params = params.with_overrides({"model.pretrained": "none", "train.device": device.type})
    records, _ = scan_dataset(args.data, params.data.class_names, params.split.max_pixels)
    rows = [{"path": r.path, "label": r.label, "sha256": r.sha256, "source": r.source} for r in records]
    random.Random(0).shuffle(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"# {name} | torch {torch.__version__} | {time.strftime('%Y-%m-%d')} | {len(rows)} images from "
          f"{args.data} | preset {args.preset} | image_size {params.train.image_size}")  # fmt: skip

    steps = StepSettings.resolve(args.precisions[-1], args.workers[-1], device)
    print(f"\n| stage ({steps.precision}, batch {args.batch_sizes[-1]}, {device.type}) | ms | per |\n|---|---|---|")
    for stage, ms, per in stage_costs(rows, params, steps, args.batch_sizes[-1]):
        print(f"| {stage} | {ms:.2f} | {per} |")

    paths = [row["path"] for row in rows]
    on_device = {"device", "graphs"} & set(args.augment)
    decoded = decode_once(paths, params.split.max_pixels, device) if on_device else None
    for batch in args.batch_sizes if decoded else []:  # a fixed number of operations, whatever the batch size
        print(f"\n| device path, batch {batch}, {args.precisions[-1]} | queued ms per batch | GPU kernel ms per batch "
              "| torch operations | GPU kernels |\n|---|---|---|---|---|")  # fmt: skip
        for work, queued, kernel_ms, aten, kernels in device_path_work(
            params, device, args.precisions[-1], decoded[:batch]
        ):
            print(f"| {work} | {queued:.2f} | {kernel_ms:.2f} | {aten} | {kernels} |")
    print(
        "\n| batch | precision | augment_on | workers | pipeline images/s | raw images/s | pipeline / raw "
        "| host waits per batch |\n|---|---|---|---|---|---|---|---|"
    )
    for batch in args.batch_sizes:
        for precision in args.precisions:
            for path in args.augment:
                augment_on, graphs = ("device", True) if path == "graphs" else (path, False)
                for workers in args.workers if augment_on == "loader" else ["0"]:
                    number = workers if workers == "auto" else int(workers)
                    label = "device (CUDA graphs)" if graphs else augment_on
                    try:
                        steps = StepSettings.resolve(precision, number, device, augment_on=augment_on,
                                                     augment_graphs=graphs)  # fmt: skip
                        pipeline, raw, waited = throughput(rows, params, steps, batch, args.batches, decoded)
                    except HardwareError as error:  # CUDA graphs on a CPU
                        print(f"| {batch} | {precision} | {label} | {workers} | n/a: {error} | | | |")
                        continue
                    except Exception as error:  # noqa: BLE001 - the other rows are still measured
                        print(f"| {batch} | {precision} | {label} | {workers} | failed: {type(error).__name__}: "
                              f"{str(error)[:200]} | | | |")  # fmt: skip
                        continue
                    waits = "n/a (CPU)" if waited is None else f"{waited:.1f}"
                    print(f"| {batch} | {precision} | {label} | {workers} ({steps.num_workers}) | "
                          f"{pipeline:.1f} | {raw:.1f} | {pipeline / raw:.2f} | {waits} |")  # fmt: skip
    if args.full:
        full_training(params, rows)


if __name__ == "__main__":
    main()
