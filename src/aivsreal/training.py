"""The training loop: manifests in, best-on-validation model and per-epoch history out."""

from __future__ import annotations

import copy
import csv
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from tqdm import tqdm

from aivsreal.calibration import choose_threshold, expected_calibration_error, fit_temperature, probabilities
from aivsreal.degradations import RandomDegrade
from aivsreal.distributed import Context, pick_device, sum_across, sync_buffers
from aivsreal.images import load_image
from aivsreal.model import ModelConfig, build_model, frozen_modules_to_eval, set_trainable
from aivsreal.params import CalibrationParams, Params
from aivsreal.predictor import Predictor
from aivsreal.robustness import wild_levels
from aivsreal.transforms import build_transforms

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ("path", "label", "sha256")


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch; deterministic kernels on the CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def write_manifest(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_FIELDS)
        for row in rows:
            writer.writerow([row.path, row.label, row.sha256])


def read_manifest(path: Path) -> list[dict[str, str]]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"manifest {path} not found: run the split stage first (`dvc repro split`)")
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class ManifestDataset(Dataset):
    """Images listed in a manifest, decoded by the shared `load_image`."""

    def __init__(self, rows: list[dict[str, str]], class_names: list[str], transform, max_pixels: int):
        self.paths = [row["path"] for row in rows]
        self.targets = [class_names.index(row["label"]) for row in rows]
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = load_image(self.paths[index], max_pixels=self.max_pixels)
        return self.transform(image), self.targets[index]


def subsample(rows: list[dict[str, str]], fraction: float, seed: int) -> list[dict[str, str]]:
    """A stratified fraction of the rows (train.train_fraction), the same for a seed."""
    if fraction >= 1:
        return rows
    rng = random.Random(seed)
    kept = []
    for label in sorted({row["label"] for row in rows}):
        members = [row for row in rows if row["label"] == label]
        kept += rng.sample(members, max(1, round(len(members) * fraction)))
    return kept


def class_weights(targets: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised so that balanced data gets all ones."""
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    weights = len(targets) / (n_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class TrainResult:
    model: nn.Module
    config: ModelConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def train(
    params: Params,
    train_rows: list[dict[str, str]],
    val_rows: list[dict[str, str]],
    on_epoch: Callable[[dict], None] | None = None,
    context: Context | None = None,
) -> TrainResult:
    """Train with the params; keep the epoch with the lowest validation loss.

    Under torchrun (`context.distributed`), each process trains on its DistributedSampler shard
    with batch `batch_size / world_size` (so one step still sees `batch_size` images in all),
    DDP averages the gradients, validation is sharded, and the epoch's counts are summed across
    processes, so every process takes the same best-epoch and early-stopping decisions.
    The returned model is on the CPU.
    """
    p, class_names = params.train, params.data.class_names
    context = context or Context(device=pick_device(p.device))
    seed_everything(p.seed)
    config = ModelConfig.from_params(params)
    model, weights_used = build_model(config, params.model.pretrained)
    config.pretrained_used = weights_used
    trainable = set_trainable(model, p.finetune)
    optimizer_class = torch.optim.AdamW if p.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(trainable, lr=p.lr, weight_decay=p.weight_decay)

    train_rows = subsample(train_rows, p.train_fraction, p.seed)
    degrade = None
    if p.blur_prob > 0 or p.jpeg_prob > 0 or p.downscale_prob > 0:
        degrade = RandomDegrade(
            p.blur_prob, p.blur_sigma_max, p.jpeg_prob, p.jpeg_quality_min, p.downscale_prob, p.downscale_min
        )
    train_tf = build_transforms(
        p.image_size, p.resize, train=True, hflip=p.hflip, random_crop=p.random_crop, degrade=degrade
    )
    eval_tf = config.eval_transform()
    max_pixels = params.split.max_pixels
    train_set = ManifestDataset(train_rows, class_names, train_tf, max_pixels)
    # each process validates its own slice; the sums are reduced across processes
    val_set = ManifestDataset(val_rows[context.rank :: context.world_size], class_names, eval_tf, max_pixels)
    batch_size = p.batch_size // context.world_size
    loader_args = {"batch_size": batch_size, "num_workers": p.num_workers, "persistent_workers": p.num_workers > 0}
    # The same sampler single- or multi-process: with N processes, step k's N shards together
    # hold exactly the images of step k in a single process.
    sampler = DistributedSampler(train_set, num_replicas=context.world_size, rank=context.rank, seed=p.seed)
    train_loader = DataLoader(train_set, sampler=sampler, drop_last=False, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    model.to(context.device)
    trained = model  # what each step runs: the whole network, or only the head on cached features
    if p.finetune == "head":
        # A frozen backbone maps an image to the same features every epoch: compute them once
        # (eval transform; augmentation would defeat the cache) and train the head on tensors.
        log.info("finetune=head: computing backbone features once; epochs then train the head only")
        plain_train = DataLoader(ManifestDataset(train_rows, class_names, eval_tf, max_pixels), **loader_args)
        features = TensorDataset(*backbone_features(model, plain_train, context.device))
        sampler = DistributedSampler(features, num_replicas=context.world_size, rank=context.rank, seed=p.seed)
        train_loader = DataLoader(features, sampler=sampler, batch_size=batch_size)
        val_loader = DataLoader(
            TensorDataset(*backbone_features(model, val_loader, context.device)), batch_size=batch_size
        )
        trained = model.fc
    evaluated = trained  # validation runs the plain module; training steps go through DDP
    if context.distributed:
        device_ids = [context.device] if context.device.type == "cuda" else None
        trained = DistributedDataParallel(trained, device_ids=device_ids)
    scheduler = None
    if p.lr_schedule == "onecycle":  # warm-up then cosine decay to ~0, stepped per batch
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=p.lr, total_steps=p.epochs * len(train_loader), pct_start=0.15
        )

    weights = class_weights(train_set.targets, len(class_names)) if p.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(context.device))
    if context.is_main:
        log.info(
            "training on %d images, validating on %d; weights: %s; %d process(es) on %s",
            len(train_set), len(val_rows), weights_used, context.world_size, context.device,
        )  # fmt: skip

    result = TrainResult(model=model, config=config)
    best_loss, best_state, stale = float("inf"), None, 0
    for epoch in range(1, p.epochs + 1):
        started = time.perf_counter()
        model.train()
        frozen_modules_to_eval(model, p.finetune)
        sampler.set_epoch(epoch)
        train_loss, train_correct, seen = 0.0, 0, 0
        quiet = None if context.is_main else True
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{p.epochs}", unit="batch", leave=False, disable=quiet)
        for inputs, targets in bar:
            inputs, targets = inputs.to(context.device), targets.to(context.device)
            optimizer.zero_grad(set_to_none=True)
            logits = trained(inputs)
            loss = loss_fn(logits, targets)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            train_loss += loss.item() * len(targets)
            train_correct += (logits.argmax(1) == targets).sum().item()
            seen += len(targets)
            bar.set_postfix(loss=f"{train_loss / seen:.4f}")
        sync_buffers(context, model)
        train_loss, train_correct, seen, *val_sums = sum_across(
            context, train_loss, train_correct, seen, *evaluate_loss(evaluated, val_loader, loss_fn, context.device)
        )
        val_loss, val_accuracy = val_sums[0] / max(val_sums[2], 1), val_sums[1] / max(val_sums[2], 1)
        row = {
            "epoch": epoch,
            "train_loss": train_loss / seen,
            "train_accuracy": train_correct / seen,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": optimizer.param_groups[0]["lr"],  # at the end of the epoch (changes per step under onecycle)
            "seconds": time.perf_counter() - started,
        }
        result.history.append(row)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
        else:
            stale += 1
        if context.is_main:
            log.info(
                "epoch %d/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f | %.1fs%s",
                epoch, p.epochs, row["train_loss"], row["train_accuracy"], val_loss, val_accuracy,
                row["seconds"], "  *best" if improved else "",
            )  # fmt: skip
        if on_epoch and context.is_main:
            on_epoch(row)
        if stale >= p.patience:
            if context.is_main:
                log.info("early stopping: no better validation loss for %d epochs", p.patience)
            result.stopped_early = True
            break
    model.load_state_dict(best_state)
    model.cpu().eval()
    return result


@torch.no_grad()  # not inference_mode: the cached features feed a head that is trained
def backbone_features(
    model: nn.Module, loader: DataLoader, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (the head's input) and targets for every image in the loader."""
    head, model.fc = model.fc, nn.Identity()
    model.eval()
    device = device or torch.device("cpu")
    try:
        batches = [
            (model(inputs.to(device)), targets.to(device))
            for inputs, targets in tqdm(loader, desc="features", disable=None)
        ]
    finally:
        model.fc = head
    return torch.cat([f for f, _ in batches]), torch.cat([t for _, t in batches])


@torch.inference_mode()
def evaluate_loss(
    model: nn.Module, loader: DataLoader, loss_fn: nn.Module, device: torch.device | None = None
) -> tuple[float, int, int]:
    """(summed loss, correct predictions, images): sums, so that processes can add them up."""
    model.eval()
    device = device or torch.device("cpu")
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        logits = model(inputs)
        total_loss += loss_fn(logits, targets).item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    return total_loss, correct, seen


def calibrate(result: TrainResult, val_rows: list[dict[str, str]], settings: CalibrationParams) -> dict:
    """Fit temperature and decision threshold on the validation split, and measure the model's range:
    accuracy on the validation images and on their wild copies (JPEG, WebP, shrunk, social), and the
    smallest side seen. All of it is stored in result.config and travels with the model."""
    config = result.config
    predictor = Predictor(result.model, config)
    images = [predictor.load(row["path"]) for row in val_rows]
    targets = np.array([config.class_names.index(row["label"]) for row in val_rows])
    copies = {("none", 0): (images, predictor.predict_logits(images))}  # (kind, value) -> (images, logits)
    for number, condition in enumerate(wild_levels()):
        rng = random.Random(f"calibration-{number}")  # the same copies on every run
        degraded = [condition.apply(image, rng) for image in images]
        copies[(condition.kind, condition.value)] = (degraded, predictor.predict_logits(degraded))
    logits = copies[("none", 0)][1]
    fit_on = [c[1] for c in copies.values()] if settings.perturbed else [logits]
    temperature = 1.0
    if settings.temperature:
        temperature = fit_temperature(np.concatenate(fit_on), np.tile(targets, len(fit_on)), settings.min_temperature)
    calibrated = {key: probabilities(copy_logits, temperature) for key, (_, copy_logits) in copies.items()}
    p_positive = calibrated[("none", 0)][:, 0]
    is_positive = targets == 0
    config.temperature = temperature
    config.threshold = choose_threshold(p_positive, is_positive, settings.threshold_rule)
    config.validated = validated_range(predictor, copies, calibrated, targets)
    pooled = np.concatenate([p[:, 0] for p in calibrated.values()])
    return {
        "temperature": temperature,
        "threshold": config.threshold,
        "val_ece_uncalibrated": expected_calibration_error(probabilities(logits)[:, 0], is_positive),
        "val_ece_calibrated": expected_calibration_error(p_positive, is_positive),
        "val_ece_wild_pooled": expected_calibration_error(pooled, np.tile(is_positive, len(copies))),
    }


def validated_range(predictor: Predictor, copies: dict, calibrated: dict, targets: np.ndarray) -> dict:
    """{"min_side": smallest side among the validation images and copies, "accuracy": {kind: the
    lowest accuracy over that kind's conditions}}, labelled as the predictor labels (threshold set
    first); input_range.py reads it."""
    truth = [predictor.class_names[target] for target in targets]
    accuracy: dict[str, float] = {}
    for (kind, _), p in calibrated.items():
        correct = float(np.mean([label == actual for label, actual in zip(predictor.labels(p), truth)]))
        accuracy[kind] = min(accuracy.get(kind, 1.0), correct)
    smallest = min(min(image.size) for images, _ in copies.values() for image in images)
    return {"min_side": int(smallest), "accuracy": accuracy}
