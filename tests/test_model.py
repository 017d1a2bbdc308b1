"""The model factory, the pretrained-weights policy, freezing, and the saved model format."""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from pathlib import Path

import pytest
import torch
from helpers_images import random_image
from PIL import Image
from torch import nn
from torchvision.models import resnet18

from aivsreal.model import (
    CONFIG_FILE,
    INPUT_FILTERS,
    WEIGHTS_FILE,
    ModelConfig,
    NeighbourFilter,
    ResidualFilter,
    WeightsUnavailableError,
    build_model,
    load_saved_model,
    save_model,
    set_trainable,
)
from aivsreal.params import InputFilterName
from aivsreal.transforms import IMAGENET_MEAN, IMAGENET_STD, normalise_batch

IMAGENET_CACHED = (Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth").exists()
needs_offline = pytest.mark.skipif(IMAGENET_CACHED, reason="ImageNet weights are in the torch cache")


def tiny_config(n_classes: int = 2, hidden: int = 8, dropout: float = 0.0, **fields) -> ModelConfig:
    return ModelConfig([f"class{i}" for i in range(n_classes)], hidden, dropout, image_size=32, resize=32, **fields)


def test_head_is_linear_relu_dropout_linear_without_softmax():
    model, used = build_model(tiny_config(hidden=16, dropout=0.25), pretrained="none")
    assert used == "none"
    head = list(model.fc)
    assert [type(layer) for layer in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (512, 16)
    assert head[2].p == 0.25
    assert (head[3].in_features, head[3].out_features) == (16, 2)
    assert not any(isinstance(m, nn.Softmax | nn.LogSoftmax) for m in model.modules())


def test_hidden_zero_makes_the_head_one_linear_layer():
    """UnivFD's linear probe; still a Sequential, so `fc[0].in_features` is the feature width either way."""
    model, _ = build_model(tiny_config(hidden=0, dropout=0.25))
    assert [type(layer) for layer in model.fc] == [nn.Linear]
    assert (model.fc[0].in_features, model.fc[0].out_features) == (512, 2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)


def test_model_outputs_raw_logits():
    model, _ = build_model(tiny_config())
    with torch.no_grad():
        model.fc[3].weight.zero_()
        model.fc[3].bias.copy_(torch.tensor([-5.0, 3.0]))
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 2)
    # whatever the input, the output is the last layer's bias: no softmax squashes it into [0, 1]
    torch.testing.assert_close(out, torch.tensor([[-5.0, 3.0]]).expand(3, 2))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_number_of_outputs_follows_the_classes(n_classes):
    model, _ = build_model(tiny_config(n_classes))
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, n_classes)


@needs_offline
def test_imagenet_weights_offline_raise_with_advice():
    with pytest.raises(WeightsUnavailableError, match="model.pretrained"):
        build_model(tiny_config(), pretrained="imagenet")


@needs_offline
def test_auto_weights_offline_fall_back_to_none_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="aivsreal.model"):
        _, used = build_model(tiny_config(), pretrained="auto")
    assert used == "none (imagenet unavailable)"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "aivsreal.model"]
    assert warnings and "FROM SCRATCH" in warnings[0].getMessage()


@pytest.fixture
def resnet_weights_file(tmp_path) -> tuple[Path, dict]:
    torch.manual_seed(123)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18_local.pth"
    torch.save(state, path)
    return path, state


def test_local_weights_file_loads_into_the_backbone(resnet_weights_file):
    path, state = resnet_weights_file
    model, used = build_model(tiny_config(), pretrained=str(path))
    assert used == f"file:{path}"
    loaded = model.state_dict()
    backbone_keys = [k for k in state if not k.startswith("fc.")]
    assert backbone_keys and all(torch.equal(loaded[k], state[k]) for k in backbone_keys)
    assert loaded["fc.0.weight"].shape == (8, 512)  # our head, not the file's 1000-class fc


def test_local_weights_file_wrapped_in_state_dict_key_loads(tmp_path, resnet_weights_file):
    _, state = resnet_weights_file
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": state}, path)
    model, used = build_model(tiny_config(), pretrained=str(path))
    assert used == f"file:{path}"
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])


def test_missing_weights_path_raises_naming_it(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(WeightsUnavailableError, match="nope.pth"):
        build_model(tiny_config(), pretrained=str(path))


def test_weights_of_another_network_raise(tmp_path):
    path = tmp_path / "linear.pth"
    torch.save(nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="does not fit ResNet18"):
        build_model(tiny_config(), pretrained=str(path))


def test_corrupt_weights_file_raises_weights_unavailable(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(WeightsUnavailableError):
        build_model(tiny_config(), pretrained=str(path))


@pytest.mark.parametrize(
    ("finetune", "trainable_prefixes"),
    [("head", ("fc.",)), ("layer4", ("fc.", "layer4.")), ("all", None)],
)
def test_set_trainable_freezes_what_finetune_says(finetune, trainable_prefixes):
    model, _ = build_model(tiny_config())
    returned = set_trainable(model, finetune)
    for name, parameter in model.named_parameters():
        expected = trainable_prefixes is None or name.startswith(trainable_prefixes)
        assert parameter.requires_grad == expected, name
    assert {id(p) for p in returned} == {id(p) for p in model.parameters() if p.requires_grad}


def test_set_trainable_can_unfreeze_again():
    model, _ = build_model(tiny_config())
    set_trainable(model, "head")
    set_trainable(model, "all")
    assert all(p.requires_grad for p in model.parameters())


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(["ai", "real"], hidden=8, dropout=0.5, image_size=32, resize=32, threshold=0.3)
    model, _ = build_model(config)
    save_model(model, config, tmp_path / "saved")

    loaded, loaded_config = load_saved_model(tmp_path / "saved")

    assert loaded_config == config
    assert not loaded.training
    batch = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model.eval()(batch), rtol=0, atol=0)
    state = torch.load(tmp_path / "saved" / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert json.loads((tmp_path / "saved" / CONFIG_FILE).read_text())["class_names"] == ["ai", "real"]


def test_loading_a_folder_that_is_not_a_saved_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_saved_model(tmp_path)


def test_config_eval_transform_gives_the_configured_size():
    config = ModelConfig(["ai", "real"], hidden=8, dropout=0.0, image_size=24, resize=32)
    tensor = config.eval_transform()(Image.new("RGB", (50, 40)))
    assert tensor.shape == (3, 24, 24)


def test_config_eval_size_crops_larger_than_the_training_crop():
    config = ModelConfig(["ai", "real"], hidden=8, dropout=0.0, image_size=24, resize=0, eval_size=48)
    assert config.eval_transform()(Image.new("RGB", (64, 64))).shape == (3, 48, 48)


def normalised(grey_levels: torch.Tensor) -> torch.Tensor:
    """0-255 images as build_transforms normalises them."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (grey_levels / 255.0 - mean) / std


def test_residual_filter_removes_content_and_keeps_fine_noise():
    torch.manual_seed(0)
    ramp = torch.linspace(0, 200, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)  # smooth content: a linear ramp
    noise = torch.randint(-1, 2, (1, 3, 32, 32)).float()  # +-1 grey level
    residual_filter = ResidualFilter(list(IMAGENET_STD), clip=3.0)
    smooth = residual_filter(normalised(ramp))
    noisy = residual_filter(normalised(ramp + noise))
    assert smooth.abs().max() < 1e-4  # a linear ramp (and any constant) has no Laplacian residual
    assert noisy.abs().mean() > 0.2  # one grey level of noise is a large signal after the filter
    assert noisy.abs().max() <= 1.0  # clipped at 3 grey levels, scaled to [-1, 1]
    brighter = residual_filter(normalised(ramp + noise + 30))
    torch.testing.assert_close(brighter, noisy, atol=1e-4, rtol=0)  # brightness does not matter


def test_residual_model_saves_and_loads_with_its_filter(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(["ai", "real"], 8, 0.0, image_size=32, resize=0, input_filter="residual", residual_clip=2.0)
    model, _ = build_model(config)
    assert isinstance(model.conv1.residual, ResidualFilter)
    save_model(model, config, tmp_path / "saved")
    state = torch.load(tmp_path / "saved" / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert "conv1.conv.weight" in state and not any("kernel" in key for key in state)  # the filter is fixed, not saved

    loaded, loaded_config = load_saved_model(tmp_path / "saved")

    assert loaded_config.input_filter == "residual" and loaded.conv1.residual.clip == 2.0
    batch = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model.eval()(batch), rtol=0, atol=0)


def test_npr_filter_is_zero_on_nearest_upsampled_pixels_and_not_on_camera_like_noise():
    """NPR reads how the pixels of each 2x2 cell relate: an image up-sampled 2x by nearest neighbour (the
    trace of a generator's up-sampling, at its strongest) has none left; independent pixel noise does."""
    torch.manual_seed(0)
    small = torch.randint(0, 256, (2, 3, 16, 16)).float()
    upsampled = torch.nn.functional.interpolate(small, scale_factor=2, mode="nearest")  # 32 x 32
    camera_like = torch.randint(0, 256, (2, 3, 32, 32)).float()
    npr = NeighbourFilter()
    assert npr(normalised(upsampled)).abs().max() < 1e-5
    noisy = npr(normalised(camera_like))
    assert noisy.shape == camera_like.shape and noisy.abs().mean() > 0.5
    assert noisy[..., ::2, ::2].abs().max() == 0  # each cell's first pixel is the reference
    torch.testing.assert_close(npr(normalised(camera_like + 20)), noisy, atol=1e-4, rtol=0)  # brightness cancels
    odd = npr(normalised(camera_like[..., :31, :29]))  # odd sizes: same shape, same values where cells are whole
    assert odd.shape == (2, 3, 31, 29)
    torch.testing.assert_close(odd[..., :30, :28], noisy[..., :30, :28])


def test_npr_model_trains_through_its_filter_and_saves_without_new_weights(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(["ai", "real"], 8, 0.0, image_size=32, resize=0, input_filter="npr")
    model, _ = build_model(config)
    assert isinstance(model.conv1.npr, NeighbourFilter)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert model.conv1.conv.weight.grad.abs().sum() > 0
    save_model(model, config, tmp_path / "saved")
    state = torch.load(tmp_path / "saved" / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    residual_model, _ = build_model(dataclasses.replace(config, input_filter="residual"))  # fixed filter, not saved
    assert set(state) == set(residual_model.state_dict()) and not any("npr" in key for key in state)

    loaded, loaded_config = load_saved_model(tmp_path / "saved")

    assert loaded_config.input_filter == "npr" and isinstance(loaded.conv1.npr, NeighbourFilter)
    batch = torch.randn(2, 3, 33, 31)  # odd sizes, as an uncropped image may have
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model.eval()(batch), rtol=0, atol=0)


def test_local_weights_load_under_the_residual_filter(resnet_weights_file):
    path, state = resnet_weights_file
    model, used = build_model(tiny_config(input_filter="residual"), pretrained=str(path))
    assert used.startswith("file:")
    torch.testing.assert_close(model.conv1.conv.weight, state["conv1.weight"])


def test_the_input_filter_registry_and_params_list_the_same_filters():
    assert list(INPUT_FILTERS) == list(typing.get_args(InputFilterName))
    assert all(spec.description for spec in INPUT_FILTERS.values())


def test_unknown_input_filter_is_rejected():
    with pytest.raises(ValueError, match="input_filter"):
        build_model(tiny_config(input_filter="srm"))


def test_batched_normalisation_matches_the_per_image_transform():
    """The predictor's fast batch path and the training/validation transform agree to float precision."""
    config = ModelConfig(["ai", "real"], hidden=8, dropout=0.0, image_size=24, resize=40, eval_size=32)
    images = [random_image((60 + 4 * i, 48), seed=i) for i in range(5)]
    per_image = torch.stack([config.eval_transform()(image) for image in images])
    geometry, mean, std = config.eval_geometry(), tuple(config.mean), tuple(config.std)
    batched = normalise_batch([geometry(image) for image in images], mean, std)
    assert batched.shape == (5, 3, 32, 32) and batched.is_contiguous()
    torch.testing.assert_close(batched, per_image, atol=1e-5, rtol=0)
    threaded = normalise_batch(images, mean, std, geometry, threads=3)  # resized in threads, same order
    torch.testing.assert_close(threaded, per_image, atol=1e-5, rtol=0)
