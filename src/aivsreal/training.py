"""The training loop: manifest rows in, best-on-validation model and history out; `python -m aivsreal.training`."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel, update_bn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from torchvision.transforms import v2
from tqdm import tqdm

from aivsreal.degradations import RandomDegrade
from aivsreal.device_augment import DeviceAugment
from aivsreal.distributed import Context, pick_device, setup, sum_across, sync_buffers, teardown
from aivsreal.hardware import StepSettings
from aivsreal.images import load_image
from aivsreal.manifests import read_manifest
from aivsreal.model import ModelConfig, build_model, frozen_modules_to_eval, save_model, set_trainable
from aivsreal.params import Params, TrainParams
from aivsreal.transforms import build_transforms

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch; deterministic kernels on the CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class ManifestDataset(Dataset):
    """Images listed in a manifest, decoded by the shared `load_image`: (image, class) items, or
    (image, class, source index) when `sources` (the source names, in index order) is given.
    `decoded` (train.cache_images): the images decoded once, in the form `transform` takes, read
    instead of the files; `transform` None hands them over as they are."""

    def __init__(
        self,
        rows: list[dict[str, str]],
        class_names: list[str],
        transform,
        max_pixels: int,
        sources: list[str] | None = None,
        decoded: list | None = None,
    ):
        self.paths = [row["path"] for row in rows]
        self.targets = [class_names.index(row["label"]) for row in rows]
        self.source_indices = [sources.index(row.get("source", "")) for row in rows] if sources else None
        self.transform = transform
        self.max_pixels = max_pixels
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        if self.decoded is not None:
            image = self.decoded[index]
        else:
            image = load_image(self.paths[index], max_pixels=self.max_pixels)
        if self.transform is not None:
            image = self.transform(image)
        if self.source_indices is None:
            return image, self.targets[index]
        return image, self.targets[index], self.source_indices[index]


def decoded_bytes(paths: list[str]) -> int:
    """The memory every image takes decoded (width x height x 3 bytes), read from the files' headers."""
    total = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, Image.DecompressionBombError):  # load_image says what is wrong when it decodes the file
            continue
        total += width * height * 3
    return total


def decode_once(paths: list[str], max_pixels: int, device: torch.device | None = None, what: str = "images") -> list:
    """Every image decoded once by `load_image`, in threads (Pillow decodes without the GIL): PIL images,
    or with `device` uint8 CHW tensors kept there (train.cache_images)."""

    def decode(path: str):
        image = load_image(path, max_pixels=max_pixels)
        return image if device is None else v2.functional.pil_to_tensor(image).to(device)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = pool.map(decode, paths)
        return list(tqdm(decoded, total=len(paths), desc=f"decoding {what} once", unit="image", leave=False))


def collate_images(batch: list[tuple]) -> list:
    """(uint8 image, class[, source]) items -> [list of images, classes[, sources]]: the images may differ in
    size until DeviceAugment crops them."""
    images, *rest = zip(*batch, strict=True)
    return [list(images), *(torch.tensor(values) for values in rest)]


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


def group_weights(source_indices: list[int], targets: list[int], n_sources: int, n_classes: int) -> torch.Tensor:
    """`train.source_balance`: a [source, class] table of loss weights, inverse to each group's size over the
    groups present, so that every (source, class) group weighs alike (a small source counts as much as a
    large one); 1 everywhere for equal groups."""
    counts = np.zeros((n_sources, n_classes))
    np.add.at(counts, (source_indices, targets), 1)
    present = counts > 0
    weights = np.where(present, len(targets) / (present.sum() * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def training_sources(rows: list[dict[str, str]]) -> list[str]:
    """The sources of the training rows (the folder under data.dir; "" for a flat data folder), sorted."""
    return sorted({row.get("source", "") for row in rows})


class GradientReversal(torch.autograd.Function):
    """Identity on the way forward, gradient times -strength on the way back (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.strength * grad, None


class SourceAdversary(nn.Module):
    """`train.source_adversarial`: guesses each training image's source from the network's features, one
    guess per class (class-conditional, Li et al. 2018: among AI faces, which generator; among real faces,
    which collection). Its gradient reaches the network reversed, so the network learns features that do
    not tell the sources of a class apart, which a detector of generation rather than of source needs.
    Used in training only; the saved model never contains it."""

    def __init__(self, in_features: int, n_sources: int, n_classes: int, hidden: int = 256):
        super().__init__()
        self.n_sources, self.n_classes = n_sources, n_classes
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, n_sources * n_classes))
        self.strength = 0.0  # set per step by the schedule

    def loss(self, features: torch.Tensor, targets: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        logits = self.net(GradientReversal.apply(features, self.strength))
        per_class = logits.view(-1, self.n_classes, self.n_sources)[torch.arange(len(targets)), targets]
        return nn.functional.cross_entropy(per_class, sources)


def adversary_strength(progress: float, maximum: float) -> float:
    """DANN's schedule: from 0 at the start to `maximum` at the end of training, 2/(1+exp(-10 p)) - 1."""
    return maximum * (2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0)


@dataclass
class TrainResult:
    model: nn.Module
    config: ModelConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    precision: str = "fp32"  # train.precision as resolved for the device (hardware.py)
    averaged_epochs: list[int] = field(default_factory=list)  # train.swa_start: the epochs whose weights were averaged
    num_workers: int = 0  # train.num_workers as resolved
    augment_on: str = "loader"  # train.augment_on as resolved
    cache_images: bool = False  # train.cache_images as resolved
    augment_graphs: bool = False  # train.augment_graphs as resolved, false where a capture failed (logged)


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
    p = params.train
    context = context or Context(device=pick_device(p.device))
    # finetune head trains on features computed once, without augmentation: nothing to move to the device
    augment_on = "loader" if p.finetune == "head" else p.augment_on
    steps = StepSettings.resolve(
        p.precision, p.num_workers, context.device, context.world_size, augment_on, p.augment_graphs
    )
    seed_everything(p.seed)
    model, config = make_model(params)
    averaged = AveragedModel(model) if p.swa_start else None  # before any training hook: the copy carries none
    optimizer = make_optimizer(model, p)
    train_rows = subsample(train_rows, p.train_fraction, p.seed)
    eval_tf = config.eval_transform()
    sources = training_sources(train_rows)
    by_source = p.source_balance or p.source_adversarial > 0
    loaders = make_loaders(params, train_rows, val_rows, eval_tf, context, steps, sources if by_source else None)
    cached = loaders.cached
    source_terms = SourceTerms.build(
        p,
        len(params.data.class_names),
        sources,
        loaders.source_indices,
        loaders.targets,
        model,
        optimizer,
        context.device,
    )
    style_mix = StyleMix.attach(model, p.mixstyle_prob, p.mixstyle_alpha)
    steps.prepare(model)
    trained = model  # what each step runs: the whole network, or only the head on cached features
    if p.finetune == "head":
        loaders = cache_features(model, params, train_rows, loaders.val, eval_tf, context, steps)
        trained = model.fc
    evaluated = trained  # validation runs the plain module; training steps go through DDP
    if context.distributed:
        device_ids = [context.device] if context.device.type == "cuda" else None
        trained = DistributedDataParallel(trained, device_ids=device_ids)
    scheduler = make_scheduler(optimizer, p, len(loaders.train))
    loss_fn = make_loss(loaders.targets, params, context.device)
    if context.is_main:
        log.info(
            "training on %d images, validating on %d; weights: %s; %d process(es) on %s, %s, %d loader worker(s), "
            "augmented in the %s%s%s",
            len(train_rows), len(val_rows), config.pretrained_used, context.world_size, context.device,
            steps.precision, steps.num_workers, steps.augment_on, " (CUDA graphs)" if steps.augment_graphs else "",
            ", images decoded once" if cached else "",
        )  # fmt: skip
        if by_source:
            log.info("sources in training: %s (balance %s, adversary %g)", sources, p.source_balance,
                     p.source_adversarial)  # fmt: skip

    result = TrainResult(model=model, config=config, precision=steps.precision, num_workers=steps.num_workers,
                         augment_on=steps.augment_on, cache_images=cached)  # fmt: skip
    mix = BatchMix(p.cutmix_prob, len(params.data.class_names))
    scaler = steps.grad_scaler()
    stopping = EarlyStopping(p.patience)
    for epoch in range(1, p.epochs + 1):
        started = time.perf_counter()
        model.train()
        frozen_modules_to_eval(model, p.finetune)
        loaders.sampler.set_epoch(epoch)
        progress = f"epoch {epoch}/{p.epochs}"
        source_terms.epoch = (epoch - 1, p.epochs)
        train_sums = train_one_epoch(
            trained,
            loaders.train,
            optimizer,
            scheduler,
            loss_fn,
            context,
            progress,
            source_terms,
            steps,
            scaler,
            mix,
            loaders.augment,
        )
        sync_buffers(context, model)
        val_sums = evaluate_loss(evaluated, loaders.val, loss_fn, context.device, steps)
        row = epoch_row(epoch, sum_across(context, *train_sums, *val_sums), optimizer, started)
        result.history.append(row)
        improved = stopping.update(epoch, row["val_loss"], model)
        if averaged is not None and epoch >= p.swa_start:
            averaged.update_parameters(model)
            result.averaged_epochs.append(epoch)
        if context.is_main:
            log.info(
                "epoch %d/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f | %.1fs%s",
                epoch, p.epochs, row["train_loss"], row["train_accuracy"], row["val_loss"], row["val_accuracy"],
                row["seconds"], "  *best" if improved else "",
            )  # fmt: skip
        if on_epoch and context.is_main:
            on_epoch(row)
        if stopping.should_stop:
            if context.is_main:
                log.info("early stopping: no better validation loss for %d epochs", p.patience)
            result.stopped_early = True
            break
    source_terms.close()
    style_mix.close()
    graphs = loaders.augment.graphs if loaders.augment else None
    result.augment_graphs = graphs is not None and not graphs.failures
    result.best_epoch = stopping.best_epoch
    if result.averaged_epochs:
        use_weight_average(averaged, model, loaders, loss_fn, context, steps, result)
    else:
        model.load_state_dict(stopping.best_state)
    model.cpu().eval()
    return result


def use_weight_average(averaged: AveragedModel, model: nn.Module, loaders: Loaders, loss_fn: nn.Module,
                       context: Context, steps: StepSettings, result: TrainResult) -> None:  # fmt: skip
    """train.swa_start: the model becomes the mean of the weights at the end of each epoch from swa_start on
    (stochastic weight averaging, Izmailov et al. 2018; for unseen domains, SWAD, Cha et al. 2021), with
    its batch-norm statistics recomputed over one pass of the training images (torch's `update_bn`),
    instead of the epoch with the best validation loss."""
    augment = loaders.augment or (lambda images: images)
    update_bn((augment(batch[0]) for batch in loaders.train), averaged, context.device)
    model.load_state_dict(averaged.module.state_dict())
    val_loss, correct, seen = sum_across(context, *evaluate_loss(model, loaders.val, loss_fn, context.device, steps))
    if context.is_main:
        log.info(
            "weights averaged over epochs %d-%d: val loss %.4f acc %.3f (best single epoch %d: %.4f)",
            result.averaged_epochs[0], result.averaged_epochs[-1], val_loss / seen, correct / seen,
            result.best_epoch, result.history[result.best_epoch - 1]["val_loss"],
        )  # fmt: skip


def make_model(params: Params) -> tuple[nn.Module, ModelConfig]:
    """The network that the `model` params describe, and the config that travels with it."""
    config = ModelConfig.from_params(params)
    model, config.pretrained_used = build_model(config, params.model.pretrained)
    return model, config


def make_optimizer(model: nn.Module, p: TrainParams) -> torch.optim.Optimizer:
    """Adam or AdamW over the parameters that `train.finetune` leaves trainable (the rest is frozen here)."""
    trainable = set_trainable(model, p.finetune)
    optimizer_class = torch.optim.AdamW if p.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(trainable, lr=p.lr, weight_decay=p.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, p: TrainParams, steps_per_epoch: int) -> LRScheduler | None:
    """`train.lr_schedule: onecycle`: warm-up then cosine decay to ~0, stepped per batch; None keeps `train.lr`."""
    if p.lr_schedule != "onecycle":
        return None
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=p.lr, total_steps=p.epochs * steps_per_epoch, pct_start=0.15
    )


def make_loss(targets: list[int], params: Params, device: torch.device) -> nn.Module:
    """Cross-entropy, weighted by inverse class frequency when `train.class_weights` is on."""
    weights = class_weights(targets, len(params.data.class_names)) if params.train.class_weights else None
    return nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))


def train_transform(p: TrainParams) -> Callable:
    """The augmented training transform: random degradations (when any has a probability), flip and crop."""
    return build_transforms(
        p.image_size,
        p.resize,
        train=True,
        hflip=p.hflip,
        random_crop=p.random_crop,
        degrade=RandomDegrade.from_train_params(p),
        color_jitter=p.color_jitter,
        grayscale_prob=p.grayscale_prob,
    )


@dataclass
class SourceTerms:
    """What `train.source_balance` and `train.source_adversarial` add to each training step: the loss weights
    per (source, class) group, and the source adversary fed with the head's input features."""

    weights: torch.Tensor | None = None
    adversary: SourceAdversary | None = None
    maximum: float = 0.0
    features: list = field(default_factory=list)
    epoch: tuple[int, int] = (0, 1)

    hook: object = None

    @classmethod
    def build(cls, p: TrainParams, n_classes: int, sources: list[str], source_indices: list[int] | None,
              targets: list[int], model: nn.Module, optimizer: torch.optim.Optimizer,
              device: torch.device) -> SourceTerms:  # fmt: skip
        """The terms for `p`; the adversary's parameters join `optimizer` (build it before the scheduler)."""
        terms = cls()
        if p.source_balance:
            terms.weights = group_weights(source_indices, targets, len(sources), n_classes).to(device)
        if p.source_adversarial > 0:
            if len(sources) < 2:
                log.warning(
                    "train.source_adversarial: the training data has one source (%s): nothing to adapt", sources
                )
                return terms
            terms.adversary = SourceAdversary(model.fc[0].in_features, len(sources), n_classes).to(device)
            terms.maximum = p.source_adversarial
            optimizer.add_param_group({"params": list(terms.adversary.parameters())})

            def keep_features(module: nn.Module, inputs: tuple) -> None:
                if module.training:  # training steps only, not validation
                    terms.features.append(inputs[0])

            terms.hook = model.fc.register_forward_pre_hook(keep_features)
        return terms

    def close(self) -> None:
        """Detach from the model: the returned model carries no hook."""
        if self.hook is not None:
            self.hook.remove()
        self.features.clear()

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, sources: torch.Tensor | None, loss_fn: nn.Module,
             progress: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The step's classification loss (cross-entropy, weighted per (source, class) group or by `loss_fn`'s
        class weights) and the loss to minimise (plus the adversary's, at `progress` of the training)."""
        if self.weights is None:
            loss = loss_fn(logits, targets)
        else:
            weights = self.weights[sources, targets]
            loss = (nn.functional.cross_entropy(logits, targets, reduction="none") * weights).sum() / weights.sum()
        total = loss
        if self.adversary is not None:
            self.adversary.strength = adversary_strength(progress, self.maximum)
            total = loss + self.adversary.loss(self.features[-1], targets, sources)
        self.features.clear()
        return loss, total


@dataclass
class BatchMix:
    """train.cutmix_prob: with this probability a training batch goes through torchvision's CutMix (Yun et al.
    2019): each image gets a random box from another image of the batch (in a shuffled batch, usually
    another source) and the label mix of their areas; the loss takes the mixed labels. At 0 nothing is
    drawn, so the random streams, and the weights, are those of training without it."""

    probability: float
    n_classes: int

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.probability == 0 or torch.rand(1).item() >= self.probability:
            return inputs, targets
        return v2.CutMix(num_classes=self.n_classes)(inputs, targets)


def mix_styles(features: torch.Tensor, alpha: float) -> torch.Tensor:
    """MixStyle (Zhou et al., ICLR 2021): each image's feature maps keep their normalised content but take a
    random convex mix (weight ~ Beta(alpha, alpha)) of their own per-channel mean and standard deviation
    and those of another image of the batch. The statistics carry no gradient, as in the paper."""
    mean = features.mean(dim=(2, 3), keepdim=True).detach()
    std = (features.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt().detach()
    weight = torch.distributions.Beta(alpha, alpha).sample((len(features), 1, 1, 1)).to(features)
    partner = torch.randperm(len(features), device=features.device)
    mixed_mean = weight * mean + (1 - weight) * mean[partner]
    mixed_std = weight * std + (1 - weight) * std[partner]
    return (features - mean) / std * mixed_std + mixed_mean


@dataclass
class StyleMix:
    """train.mixstyle_prob: forward hooks on ResNet18's `layer1`-`layer3` (the paper's placement) that, in
    training mode and with this probability per stage and step, replace its output by `mix_styles`. A
    shuffled batch holds several sources, so the network sees faces with another source's feature
    statistics (colour grading, texture, compression) and cannot lean on them alone. Validation, the saved
    model and its exports are untouched: `close` removes the hooks. At 0 nothing is attached or drawn."""

    probability: float
    alpha: float
    hooks: list = field(default_factory=list)

    STAGES = ("layer1", "layer2", "layer3")

    @classmethod
    def attach(cls, model: nn.Module, probability: float, alpha: float) -> StyleMix:
        mix = cls(probability, alpha)
        if probability > 0:
            mix.hooks = [getattr(model, stage).register_forward_hook(mix.hook) for stage in cls.STAGES]
        return mix

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        single = len(output) < 2 or output.shape[2] * output.shape[3] < 2  # no partner, or no spread to measure
        if not module.training or single or torch.rand(1).item() >= self.probability:
            return None  # the stage's own output
        return mix_styles(output, self.alpha)

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()


@dataclass
class Loaders:
    """What the epochs iterate: training batches in the order `sampler` draws them (reshuffled each epoch)
    and this process's validation batches; `targets` are the training images' classes."""

    train: DataLoader
    sampler: DistributedSampler
    val: DataLoader
    targets: list[int]
    source_indices: list[int] | None = None  # each training image's source, when the dataset yields them
    augment: Callable | None = None  # augment_on device: turns a training batch's decoded images into the input
    cached: bool = False  # train.cache_images as resolved: the images were decoded once


def loader_settings(p: TrainParams, context: Context, steps: StepSettings) -> dict:
    """DataLoader arguments: each process loads `batch_size / world_size` images per step, with the
    workers and memory pinning of `steps` (hardware.py)."""
    return {"batch_size": p.batch_size // context.world_size, **steps.loader_options()}


def make_loaders(
    params: Params,
    train_rows: list[dict[str, str]],
    val_rows: list[dict[str, str]],
    eval_tf: Callable,
    context: Context,
    steps: StepSettings,
    sources: list[str] | None = None,
) -> Loaders:
    """Augmented training images, each process its DistributedSampler shard, and this process's slice
    of the validation images through the evaluation transform.

    augment_on loader: the loader workers decode and augment (train_transform, Pillow). augment_on device:
    they only decode, and `Loaders.augment` (DeviceAugment) turns each batch into the input on the device.
    With train.cache_images every image is decoded once before the first epoch: validation images kept
    in RAM, training images in RAM (loader) or on the training device (device; read without workers)."""
    p, class_names, max_pixels = params.train, params.data.class_names, params.split.max_pixels
    on_device = steps.augment_on == "device"
    train_paths = [row["path"] for row in train_rows]
    cached = steps.cache_images(p.cache_images, lambda: decoded_bytes(train_paths))
    train_images = None
    if cached:
        train_images = decode_once(train_paths, max_pixels, context.device if on_device else None, "training images")
    if on_device:
        train_tf = None if cached else v2.functional.pil_to_tensor  # uint8 CHW, augmented on the device
    else:
        train_tf = train_transform(p)
    train_set = ManifestDataset(train_rows, class_names, train_tf, max_pixels, sources, decoded=train_images)
    # each process validates its own slice; the sums are reduced across processes
    val_rows = val_rows[context.rank :: context.world_size]
    val_paths = [row["path"] for row in val_rows]
    val_images = decode_once(val_paths, max_pixels, what="validation images") if cached else None
    val_set = ManifestDataset(val_rows, class_names, eval_tf, max_pixels, decoded=val_images)
    settings = loader_settings(p, context, steps)
    train_settings = settings
    if on_device:
        train_settings = {**settings, "collate_fn": collate_images}
        if cached:  # the images are on the device already: nothing for workers to do
            train_settings |= {"num_workers": 0, "persistent_workers": False, "pin_memory": False}
    # The same sampler single- or multi-process: with N processes, step k's N shards together
    # hold exactly the images of step k in a single process.
    sampler = DistributedSampler(train_set, num_replicas=context.world_size, rank=context.rank, seed=p.seed)
    shapes = "graphs" if steps.augment_graphs else "exact"
    return Loaders(
        train=DataLoader(train_set, sampler=sampler, drop_last=False, **train_settings),
        sampler=sampler,
        val=DataLoader(val_set, shuffle=False, **settings),
        targets=train_set.targets,
        source_indices=train_set.source_indices,
        augment=DeviceAugment(p, context.device, p.seed + context.rank, shapes=shapes) if on_device else None,
        cached=cached,
    )


def cache_features(
    model: nn.Module,
    params: Params,
    train_rows: list[dict[str, str]],
    val_loader: DataLoader,
    eval_tf: Callable,
    context: Context,
    steps: StepSettings,
) -> Loaders:
    """`train.finetune: head`: a frozen backbone maps an image to the same features every epoch, so compute
    them once (eval transform; augmentation would defeat the cache) and let the epochs train the head on
    tensors: loaders of (features, target) batches."""
    log.info("finetune=head: computing backbone features once; epochs then train the head only")
    p, class_names, max_pixels = params.train, params.data.class_names, params.split.max_pixels
    settings = loader_settings(p, context, steps)
    plain_train = DataLoader(ManifestDataset(train_rows, class_names, eval_tf, max_pixels), **settings)
    features = TensorDataset(*backbone_features(model, plain_train, context.device, steps))
    sampler = DistributedSampler(features, num_replicas=context.world_size, rank=context.rank, seed=p.seed)
    return Loaders(
        train=DataLoader(features, sampler=sampler, batch_size=settings["batch_size"]),
        sampler=sampler,
        val=DataLoader(
            TensorDataset(*backbone_features(model, val_loader, context.device, steps)),
            batch_size=settings["batch_size"],
        ),
        targets=plain_train.dataset.targets,
    )


class BatchSums:
    """Summed loss and correct predictions of an epoch's batches, kept on the training device: adding a batch
    does not make the CPU wait for the GPU (a `.item()` per batch would, so the next batch could not be
    prepared and launched while this one runs). Float64 and integer sums: the totals are exactly what adding
    each batch's `loss.item() * size` in Python gives."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss += loss.detach().double() * len(targets)
        self.correct += (logits.argmax(1) == targets).sum()
        self.seen += len(targets)

    def totals(self) -> tuple[float, int, int]:
        """(summed loss, correct predictions, images), read from the device once."""
        return float(self.loss), int(self.correct), self.seen


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    loss_fn: nn.Module,
    context: Context,
    progress: str,
    source_terms: SourceTerms | None = None,
    steps: StepSettings | None = None,
    scaler: torch.amp.GradScaler | None = None,
    mix: BatchMix | None = None,
    augment: Callable | None = None,
) -> tuple[float, int, int]:
    """One pass over this process's training batches, an optimiser (and scheduler) step per batch, `model`
    being what each step runs; (summed loss, correct predictions, images), like `evaluate_loss`. The
    summed loss is the classification loss, without the source adversary's. `steps` sets the precision
    and copies (plain float32 without), `scaler` scales an fp16 loss, `mix` CutMixes some batches, `augment`
    (augment_on device) makes each batch of decoded images the input."""
    steps = steps or StepSettings.resolve("fp32", 0, context.device)
    scaler = scaler or steps.grad_scaler()
    sums = BatchSums(context.device)
    quiet = None if context.is_main else True
    bar = tqdm(loader, desc=progress, unit="batch", leave=False, disable=quiet)
    source_terms = source_terms or SourceTerms()
    done, total = source_terms.epoch
    for step, (inputs, targets, *sources) in enumerate(bar):
        if augment is not None:
            inputs = augment(inputs)
        inputs, targets = steps.images(inputs), steps.tensor(targets)
        sources = steps.tensor(sources[0]) if sources else None
        inputs, loss_targets = mix(inputs, targets) if mix is not None else (inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        with steps.autocast():
            logits = model(inputs)
            loss, total_loss = source_terms.loss(
                logits, loss_targets, sources, loss_fn, (done + step / len(loader)) / total
            )
        scaler.scale(total_loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        sums.add(loss, logits, targets)
        if step % 10 == 0 or step == len(loader) - 1:  # the running loss, read from the device now and then
            bar.set_postfix(loss=f"{float(sums.loss) / sums.seen:.4f}")
    return sums.totals()


def epoch_row(epoch: int, sums: list[float], optimizer: torch.optim.Optimizer, started: float) -> dict:
    """The epoch's history row from the training and validation sums of all processes."""
    train_loss, train_correct, seen, val_loss, val_correct, val_seen = sums
    return {
        "epoch": epoch,
        "train_loss": train_loss / seen,
        "train_accuracy": train_correct / seen,
        "val_loss": val_loss / max(val_seen, 1),
        "val_accuracy": val_correct / max(val_seen, 1),
        "lr": optimizer.param_groups[0]["lr"],  # at the end of the epoch (changes per step under onecycle)
        "seconds": time.perf_counter() - started,
    }


@dataclass
class EarlyStopping:
    """Keeps the weights of the epoch with the lowest validation loss; stop once `patience` epochs in a row
    have not improved on it."""

    patience: int
    best_loss: float = float("inf")
    best_state: dict | None = None
    best_epoch: int = 0
    stale: int = 0

    def update(self, epoch: int, val_loss: float, model: nn.Module) -> bool:
        """Record an epoch's validation loss; True (and a copy of the weights kept) when it is the best yet."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.stale = val_loss, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience


@torch.no_grad()  # not inference_mode: the cached features feed a head that is trained
def backbone_features(
    model: nn.Module, loader: DataLoader, device: torch.device | None = None, steps: StepSettings | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (the head's input, float32) and targets for every image in the loader."""
    head, model.fc = model.fc, nn.Identity()
    model.eval()
    steps = steps or StepSettings.resolve("fp32", 0, device or torch.device("cpu"))
    try:
        with steps.autocast():
            batches = [
                (model(steps.images(inputs)).float(), steps.tensor(targets))
                for inputs, targets in tqdm(loader, desc="features", disable=None)
            ]
    finally:
        model.fc = head
    return torch.cat([f for f, _ in batches]), torch.cat([t for _, t in batches])


@torch.inference_mode()
def evaluate_loss(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    device: torch.device | None = None,
    steps: StepSettings | None = None,
) -> tuple[float, int, int]:
    """(summed loss, correct predictions, images): sums, so that processes can add them up."""
    model.eval()
    steps = steps or StepSettings.resolve("fp32", 0, device or torch.device("cpu"))
    sums = BatchSums(steps.device)
    for inputs, targets in loader:
        inputs, targets = steps.images(inputs), steps.tensor(targets)
        with steps.autocast():
            logits = model(inputs)
            sums.add(loss_fn(logits, targets), logits, targets)
    return sums.totals()


def main(argv: list[str] | None = None) -> None:
    """Train from manifests without MLflow or DVC, plain or under torchrun; rank 0 writes the result.

    Used by the DDP equivalence test and benchmarks/ddp.py to compare 1 and N processes.
    """
    parser = argparse.ArgumentParser(prog="python -m aivsreal.training", description=main.__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="training manifest (CSV: path,label,sha256)")
    parser.add_argument("--val", required=True, help="validation manifest")
    parser.add_argument("--out", required=True, help="folder for the saved model and history.json")
    args = parser.parse_args(argv)
    params = Params.load(args.params)
    context = setup(params.train.device)
    try:
        started = time.perf_counter()
        result = train(params, read_manifest(args.train), read_manifest(args.val), context=context)
        if context.is_main:
            save_model(result.model, result.config, Path(args.out))
            summary = {"world_size": context.world_size, "seconds": time.perf_counter() - started}
            (Path(args.out) / "history.json").write_text(json.dumps(summary | {"history": result.history}))
    finally:
        teardown(context)


if __name__ == "__main__":
    main()
