"""The training loop on a tiny real dataset: determinism, best-epoch choice, class weights."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import PROJECT
from helpers_images import random_image
from PIL import Image, ImageFilter

from aivsreal.fit_calibration import calibrate
from aivsreal.params import Params, ParamsError
from aivsreal.training import BatchSums, class_weights, subsample, train


def tiny_params(model_overrides: dict | None = None, **train_overrides) -> Params:
    params = Params.load(PROJECT / "params.yaml")
    tiny = {"epochs": 2, "patience": 5, "batch_size": 8, "image_size": 16, "resize": 16}
    train_params = dataclasses.replace(params.train, **(tiny | train_overrides))
    model = dataclasses.replace(params.model, pretrained="none", hidden=8, **(model_overrides or {}))
    return dataclasses.replace(params, train=train_params, model=model)


def brightness_rows(folder, per_class: int, side: int) -> list[dict]:
    """Two classes that differ in brightness, so a couple of epochs learn something."""
    all_rows = []
    for label, shift in (("ai", 60), ("real", -60)):
        for i in range(per_class):
            path = folder / f"{label}_{i}.png"
            image = random_image((side, side), seed=i + (100 if label == "ai" else 0))
            image.point(lambda v, s=shift: max(0, min(255, v + s))).save(path)
            all_rows.append({"path": str(path), "label": label, "sha256": str(i)})
    return all_rows


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    all_rows = brightness_rows(tmp_path_factory.mktemp("tiny"), 12, 20)
    return all_rows[::2], all_rows[1::2]


def test_training_is_deterministic_for_a_seed(rows):
    first = train(tiny_params(), *rows)
    second = train(tiny_params(), *rows)
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    third = train(tiny_params(seed=1), *rows)
    assert [h["train_loss"] for h in third.history] != [h["train_loss"] for h in first.history]


def test_history_and_best_epoch_follow_validation_loss(rows):
    result = train(tiny_params(epochs=3), *rows)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    val_losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == val_losses.index(min(val_losses)) + 1
    assert result.config.pretrained_used == "none" and result.config.image_size == 16


def test_early_stopping_stops_after_patience_epochs_without_improvement(rows):
    result = train(tiny_params(epochs=30, patience=1, lr=0.5), *rows)  # a wild lr stops improving fast
    assert result.stopped_early and len(result.history) < 30
    assert len(result.history) == result.best_epoch + 1


def test_frozen_head_mode_leaves_the_backbone_untouched(rows):
    from aivsreal.model import ModelConfig, build_model
    from aivsreal.training import seed_everything

    params = tiny_params(finetune="head")
    seed_everything(0)
    untouched, _ = build_model(ModelConfig.from_params(params))
    result = train(params, *rows)
    for key, value in untouched.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, result.model.state_dict()[key]), key  # BatchNorm stats included


def test_class_weights_balance_the_loss():
    assert class_weights([0, 1, 0, 1], 2).tolist() == [1.0, 1.0]
    weights = class_weights([0, 0, 0, 1], 2)
    assert weights[1] == pytest.approx(3 * weights[0])


def test_subsample_is_stratified_and_reproducible(rows):
    all_rows = rows[0] + rows[1]
    half = subsample(all_rows, 0.5, seed=3)
    assert sum(r["label"] == "ai" for r in half) == sum(r["label"] == "real" for r in half) == 6
    assert half == subsample(all_rows, 0.5, seed=3) and subsample(all_rows, 1.0, seed=3) == all_rows


def test_head_mode_trains_on_cached_features_that_match_the_full_network(rows):
    """The cache is an optimisation only: the saved model scores validation exactly as training saw it."""
    from torch.utils.data import DataLoader

    from aivsreal.training import ManifestDataset, evaluate_loss
    from aivsreal.transforms import build_transforms

    params = tiny_params(finetune="head", epochs=3)
    result = train(params, *rows)
    eval_tf = build_transforms(16, 16, train=False)
    loader = DataLoader(ManifestDataset(rows[1], ["ai", "real"], eval_tf, 10**8), batch_size=8)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(loader.dataset.targets, 2))
    loss_sum, correct, seen = evaluate_loss(result.model, loader, loss_fn)
    val_loss, val_accuracy = loss_sum / seen, correct / seen
    best = result.history[result.best_epoch - 1]
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-5)
    assert val_accuracy == best["val_accuracy"]


@pytest.fixture(scope="module")
def noise_rows(tmp_path_factory):
    """Same smooth pictures in both classes; "real" adds +-2 grey levels of noise: only the residual differs."""
    folder = tmp_path_factory.mktemp("noise")
    generator = torch.Generator().manual_seed(0)
    all_rows = []
    for i in range(16):
        smooth = random_image((48, 48), seed=i).filter(ImageFilter.GaussianBlur(4))
        pixels = torch.frombuffer(bytearray(smooth.tobytes()), dtype=torch.uint8).to(torch.int16)
        noisy = (pixels + torch.randint(-2, 3, pixels.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
        for label, image in (("ai", smooth), ("real", Image.frombytes("RGB", smooth.size, noisy.numpy().tobytes()))):
            path = folder / f"{label}_{i}.png"
            image.save(path)
            all_rows.append({"path": str(path), "label": label, "sha256": f"{label}{i}"})
    return all_rows[: len(all_rows) // 2], all_rows[len(all_rows) // 2 :]


def test_residual_input_learns_a_noise_only_difference_that_rgb_input_does_not(noise_rows):
    def fit(input_filter: str):
        params = tiny_params(
            {"input_filter": input_filter}, epochs=8, lr=0.003, lr_schedule="onecycle",
            image_size=24, resize=0, eval_size=48,
        )  # fmt: skip
        return train(params, *noise_rows)

    residual, rgb = fit("residual"), fit("none")

    def late_train_accuracy(result):
        return sum(row["train_accuracy"] for row in result.history[-3:]) / 3

    # measured: residual 1.00 after 3 epochs, RGB about 0.5 (chance) throughout
    assert late_train_accuracy(residual) >= 0.9
    assert late_train_accuracy(rgb) <= 0.75
    assert residual.config.input_filter == "residual" and residual.config.eval_crop == 48
    lrs = [row["lr"] for row in rgb.history]
    assert max(lrs) <= 0.003 and lrs[0] > lrs[-1] * 20  # one-cycle: warmed up, then annealed towards zero


def test_calibration_measures_the_models_range_on_wild_copies_and_bounds_the_temperature(tmp_path):
    """calibrate() fits T on the validation images and their wild copies, never below min_temperature,
    and stores what it measured (smallest side, accuracy per condition) with the model."""
    rows = brightness_rows(tmp_path, 6, 40)  # 40 px: above model.min_side, as the split stage ensures
    params = tiny_params(epochs=1)
    result = train(params, rows[::2], rows[1::2])
    measured = calibrate(result, rows[1::2], params.calibration)
    assert measured["temperature"] >= params.calibration.min_temperature
    assert 0 <= measured["val_ece_wild_pooled"] <= 1
    validated = result.config.validated
    assert set(validated["accuracy"]) == {"none", "jpeg", "webp", "shrink", "social"}
    assert all(0 <= value <= 1 for value in validated["accuracy"].values())
    assert validated["min_side"] == 20  # the 40 px faces shrunk to half size
    assert result.config.max_confidence == params.calibration.max_confidence


def test_source_balance_weighs_every_source_and_class_group_alike():
    from aivsreal.training import group_weights

    sources, targets = [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 1, 1]
    assert group_weights(sources, targets, 2, 2).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    sources, targets = [0] * 6 + [1] * 2, [0, 0, 0, 1, 1, 1, 0, 1]  # source 1 is small
    weights = group_weights(sources, targets, 2, 2)
    per_group = {(s, t): 0.0 for s in (0, 1) for t in (0, 1)}
    for s, t in zip(sources, targets):
        per_group[(s, t)] += float(weights[s, t])
    assert len({round(total, 6) for total in per_group.values()}) == 1  # each group's summed weight is equal
    assert weights[1, 0] > weights[0, 0]


def test_the_source_adversary_trains_but_never_leaves_the_model(rows):
    from aivsreal.training import adversary_strength

    with_sources = [[row | {"source": "a" if i % 2 else "b"} for i, row in enumerate(part)] for part in rows]
    plain = train(tiny_params(), *rows)
    adapted = train(tiny_params(source_balance=True, source_adversarial=1.0), *with_sources)
    assert adapted.model.state_dict().keys() == plain.model.state_dict().keys()  # the adversary is not saved
    assert not adapted.model.fc._forward_pre_hooks  # and the network carries no hook into inference
    assert [h["train_loss"] for h in adapted.history] != [h["train_loss"] for h in plain.history]
    assert adversary_strength(0.0, 0.5) == 0.0 and 0.49 < adversary_strength(1.0, 0.5) <= 0.5


def test_source_terms_need_a_trained_backbone():
    from aivsreal.params import ParamsError

    params = Params.load(PROJECT / "params.yaml")
    with pytest.raises(ParamsError, match="source_adversarial"):
        params.with_overrides({"train.source_adversarial": 0.5, "train.finetune": "head"})


def test_cutmix_at_zero_draws_nothing_and_at_one_pastes_patches_with_mixed_labels():
    from aivsreal.training import BatchMix

    inputs, targets = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 0, 1, 0, 1])
    state = torch.get_rng_state()
    assert BatchMix(0.0, 2)(inputs, targets) == (inputs, targets)
    assert torch.equal(torch.get_rng_state(), state)  # the random stream of training without CutMix

    torch.manual_seed(3)
    mixed, soft = BatchMix(1.0, 2)(inputs, targets)
    assert soft.shape == (6, 2) and torch.allclose(soft.sum(1), torch.ones(6))
    assert not torch.equal(mixed, inputs) and ((soft > 0) & (soft < 1)).any()
    changed = (mixed != inputs).any(1).float().mean((1, 2))  # share of each image's pixels replaced
    partner = soft[torch.arange(6), 1 - targets]  # the other class's label share (0 when the partner has its class)
    assert all(c > 0 for c, p in zip(changed, partner) if p > 0)


def test_training_with_cutmix_runs_and_differs_and_refuses_the_source_losses(rows):
    plain, mixed = train(tiny_params(), *rows), train(tiny_params(cutmix_prob=1.0), *rows)
    assert [h["train_loss"] for h in plain.history] != [h["train_loss"] for h in mixed.history]
    params = Params.load(PROJECT / "params.yaml")
    with pytest.raises(ParamsError, match="cutmix_prob mixes the labels of a batch"):
        params.with_overrides({"train.cutmix_prob": 0.5, "train.source_balance": True})


def test_mixstyle_keeps_each_images_content_and_gives_it_statistics_mixed_within_the_batch():
    from aivsreal.training import mix_styles

    torch.manual_seed(0)
    features = torch.randn(8, 4, 6, 6) * torch.arange(1, 9).view(8, 1, 1, 1) + torch.arange(8).view(8, 1, 1, 1)
    mixed = mix_styles(features, alpha=0.1)

    def normalised(x):
        return (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)

    assert torch.allclose(normalised(mixed), normalised(features), atol=1e-3)  # the content stays
    means, new_means = features.mean((2, 3)), mixed.mean((2, 3))
    assert not torch.allclose(new_means, means, atol=1e-2)  # some images took another's statistics
    low, high = means.min(0).values, means.max(0).values  # a mix stays within the batch's own range
    assert ((new_means >= low - 1e-4) & (new_means <= high + 1e-4)).all()


def test_mixstyle_acts_only_on_training_steps_and_leaves_no_hook_behind():
    from torchvision.models import resnet18

    from aivsreal.training import StyleMix

    model, inputs = resnet18(weights=None), torch.rand(4, 3, 32, 32)
    model.eval()
    evaluated, weights = model(inputs), copy.deepcopy(model.state_dict())
    model.train()
    trained = model(inputs)  # batch statistics: deterministic for the same inputs (running ones move)

    state = torch.get_rng_state()
    off = StyleMix.attach(model, 0.0, 0.1)
    assert off.hooks == [] and torch.equal(model(inputs), trained) and torch.equal(torch.get_rng_state(), state)

    mix = StyleMix.attach(model, 1.0, 0.1)
    assert not torch.allclose(model(inputs), trained)
    model.load_state_dict(weights)
    model.eval()
    assert torch.equal(model(inputs), evaluated)  # validation and inference: the plain network
    mix.close()
    model.train()
    assert torch.equal(model(inputs), trained)
    assert not any(getattr(model, stage)._forward_hooks for stage in StyleMix.STAGES)


def test_training_with_mixstyle_runs_and_differs_and_needs_the_whole_resnet_trained(rows):
    plain, mixed = train(tiny_params(), *rows), train(tiny_params(mixstyle_prob=1.0), *rows)
    assert [h["train_loss"] for h in plain.history] != [h["train_loss"] for h in mixed.history]
    assert not any(getattr(mixed.model, stage)._forward_hooks for stage in ("layer1", "layer2", "layer3"))
    params = Params.load(PROJECT / "params.yaml")
    for overrides in ({"train.finetune": "layer4"}, {"train.finetune": "head"}):
        with pytest.raises(ParamsError, match="mixstyle_prob mixes the statistics"):
            params.with_overrides({"train.mixstyle_prob": 0.5} | overrides)
    with pytest.raises(ParamsError, match="mixstyle_alpha must be > 0"):
        params.with_overrides({"train.mixstyle_alpha": 0.0})


def test_colour_augmentation_greys_and_recolours_training_crops_only():
    from aivsreal.training import train_transform

    image = random_image((24, 24), seed=5)
    plain = tiny_params().train
    assert plain.color_jitter == 0 and plain.grayscale_prob == 0  # off by default: the transform is unchanged
    torch.manual_seed(0)
    grey = train_transform(dataclasses.replace(plain, grayscale_prob=1.0, hflip=False))(image)
    # ImageNet normalisation differs per channel: undo it, then the three channels are one grey picture
    from aivsreal.transforms import IMAGENET_MEAN, IMAGENET_STD

    pixels = grey * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)
    jitter = train_transform(dataclasses.replace(plain, color_jitter=0.4, hflip=False))
    untouched = train_transform(dataclasses.replace(plain, hflip=False))
    torch.manual_seed(1)
    draws = [jitter(image) for _ in range(4)]
    assert all(not torch.allclose(draw, untouched(image)) for draw in draws)
    assert not torch.allclose(draws[0], draws[1])  # each call draws new colours
    params = Params.load(PROJECT / "params.yaml")
    with pytest.raises(ParamsError, match="color_jitter must be in"):
        params.with_overrides({"train.color_jitter": 1.5})
    with pytest.raises(ParamsError, match="grayscale_prob must be a probability"):
        params.with_overrides({"train.grayscale_prob": -0.1})


def test_weight_averaging_returns_the_mean_of_the_epochs_weights_with_batch_norm_recomputed(rows, monkeypatch):
    from torch.optim.swa_utils import AveragedModel

    seen = []  # the weights handed to the average at the end of each averaged epoch (the real method still runs)
    real_update = AveragedModel.update_parameters

    def spy(self, model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_update(self, model)

    monkeypatch.setattr(AveragedModel, "update_parameters", spy)
    params = tiny_params(epochs=3)
    plain = train(params, *rows)
    averaged = train(dataclasses.replace(params, train=dataclasses.replace(params.train, swa_start=2)), *rows)
    assert plain.averaged_epochs == [] and averaged.averaged_epochs == [2, 3] and len(seen) == 2
    assert [h["train_loss"] for h in averaged.history] == [h["train_loss"] for h in plain.history]  # same run
    weights = averaged.model.state_dict()
    for name in ("conv1.weight", "layer4.1.conv2.weight", "fc.0.weight"):
        assert torch.allclose(weights[name], (seen[0][name] + seen[1][name]) / 2, atol=1e-6)
    bn = "layer1.0.bn1.running_mean"  # recomputed over the training images for the averaged weights
    assert not torch.allclose(weights[bn], seen[1][bn]) and not torch.allclose(weights[bn], seen[0][bn])
    with pytest.raises(ParamsError, match="swa_start must be an epoch"):
        Params.load(PROJECT / "params.yaml").with_overrides({"train.swa_start": 1000})
    with pytest.raises(ParamsError, match="swa_start recomputes batch-norm"):
        Params.load(PROJECT / "params.yaml").with_overrides({"train.swa_start": 1, "train.finetune": "head"})


def test_the_report_says_when_the_weights_are_an_average_of_epochs(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))  # pipeline/ is the project's stage package, not installed
    from pipeline.report import chosen_weights

    trained = {"best_epoch": 3, "epochs_run": 5, "best_val_loss": 0.5, "best_val_accuracy": 0.75}
    assert chosen_weights(trained) == chosen_weights(trained | {"averaged_epochs": []})
    assert chosen_weights(trained).startswith("Best epoch 3 of 5")
    averaged = chosen_weights(trained | {"averaged_epochs": [4, 5]})
    assert "averaged over epochs 4-5 of 5" in averaged and "best single epoch was 3 of 5" in averaged


def test_batch_sums_kept_on_the_device_add_up_exactly_as_python_floats_did():
    """Training and validation sums stay on the device (no wait for the GPU per batch) and still give the very
    numbers of adding each batch's loss.item() * size in Python: the committed metrics reproduce bit for bit."""
    torch.manual_seed(0)
    sums, loss_total, correct_total = BatchSums(torch.device("cpu")), 0.0, 0
    for size in (8, 8, 5):
        logits, targets = torch.randn(size, 2), torch.randint(0, 2, (size,))
        loss = torch.nn.functional.cross_entropy(logits, targets)
        sums.add(loss, logits, targets)
        loss_total += loss.item() * size
        correct_total += (logits.argmax(1) == targets).sum().item()
    assert sums.totals() == (loss_total, correct_total, 21)
