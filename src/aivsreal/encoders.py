"""A large pretrained timm image encoder used frozen, with our head on its pooled features: the UnivFD recipe.

Ojha et al. 2023 ("Towards Universal Fake Image Detectors that Generalize Across Generative Models")
classify the features of a frozen CLIP ViT with a linear layer. `model.arch` names any timm encoder
(vit_small_patch14_dinov2.lvd142m, vit_base_patch16_clip_224.openai, ...) and `model.pretrained` where its
weights come from: `hub` (timm's own, from the Hugging Face cache or a download), a local state_dict
file of that encoder, or `none` (random: tests only). timm is imported only when such an arch is used.

The encoder runs at `train.image_size`: a fixed-size encoder (a ViT) is built for that size (timm's
`img_size`; timm resamples the pretrained position embeddings), and its own mean and std normalise the
input. Both travel in the saved config (`timm_kwargs`, `mean`, `std`), and weights.pt holds the whole
network, so a saved model rebuilds without the original weights file.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from torch import nn

from aivsreal.model import WeightsUnavailableError, build_head
from aivsreal.params import ParamsError

log = logging.getLogger(__name__)

RESNET18 = "resnet18"  # model.arch: torchvision's ResNet18 (model.build_model); anything else is a timm name


class EncoderClassifier(nn.Module):
    """A timm encoder (pooled features out) and our head, named `encoder` and `fc`: the names that
    `set_trainable`, `frozen_modules_to_eval` and training's feature cache rely on, as on ResNet18."""

    def __init__(self, encoder: nn.Module, fc: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.fc = fc

    def forward(self, x):
        return self.fc(self.encoder(x))

    @property
    def cam_layer(self) -> nn.Module:
        """The encoder's first convolution (timm's `first_conv`, the patch embedding of a ViT): a layer with a
        spatial output, which Grad-CAM (explain.py) needs and a ViT's later token layers do not have."""
        first_conv = self.encoder.pretrained_cfg["first_conv"]
        return self.encoder.get_submodule(first_conv[0] if isinstance(first_conv, (list, tuple)) else first_conv)


def encoder_settings(arch: str, image_size: int) -> tuple[dict, list[float], list[float]]:
    """(timm_kwargs, mean, std) for running timm encoder `arch` on `image_size`-pixel crops."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(arch):
        raise ParamsError(
            f"model.arch {arch!r} is neither {RESNET18} nor a timm model name "
            "(e.g. vit_small_patch14_dinov2.lvd142m; list them with timm.list_models('*dinov2*', pretrained=True))"
        )
    cfg = get_pretrained_cfg(arch)
    native = cfg.input_size[-1]
    kwargs = {}
    if cfg.fixed_input_size and image_size != native:
        kwargs["img_size"] = image_size
    if image_size != native:
        log.warning(
            "%s was pretrained on %d px inputs and runs on train.image_size %d px%s: its features are not the "
            "ones it learned; set train.image_size (and train.resize) to %d for the encoder's own",
            arch, native, image_size, " (position embeddings resampled)" if kwargs else "", native,
        )  # fmt: skip
    return kwargs, list(cfg.mean), list(cfg.std)


def build_encoder_classifier(config, pretrained: str) -> tuple[EncoderClassifier, str]:
    """The timm encoder of `config.arch` with our head; returns (model, what weights were really loaded)."""
    encoder, used = create_encoder(config.arch, config.timm_kwargs, pretrained)
    head = build_head(encoder.num_features, config.hidden, config.dropout, len(config.class_names))
    return EncoderClassifier(encoder, head), used


def create_encoder(arch: str, timm_kwargs: dict, pretrained: str) -> tuple[nn.Module, str]:
    """timm's `arch` without its classifier (pooled features out), weights by the `model.pretrained` policy."""
    if pretrained == "imagenet":
        raise WeightsUnavailableError(
            f"model.pretrained=imagenet names torchvision's ResNet18 weights; for the timm encoder {arch} "
            "set it to hub (timm's own weights) or a local weights file"
        )
    if pretrained in ("hub", "auto"):  # no fallback to random: a frozen random encoder learns nothing
        try:
            encoder = _timm_encoder(arch, timm_kwargs, pretrained=True)
        except WeightsUnavailableError:
            raise
        except Exception as error:  # offline and not in the cache, no such weights, a proxy
            raise WeightsUnavailableError(
                f"timm's pretrained weights for {arch} could not be loaded from the Hugging Face cache "
                f"(HF_HOME) or downloaded ({type(error).__name__}: {str(error)[:300]}). Download them once "
                "where there is a network, or set model.pretrained to a local weights file; HF_HUB_OFFLINE=1 "
                "makes timm look in the cache only"
            ) from error
        return encoder, f"hub:{encoder.pretrained_cfg.get('hf_hub_id') or arch}"
    encoder = _timm_encoder(arch, timm_kwargs, pretrained=False)
    if pretrained == "none":
        return encoder, "none"
    return encoder, load_encoder_file(encoder, arch, Path(pretrained))


def _timm_encoder(arch: str, timm_kwargs: dict, pretrained: bool) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=0, **timm_kwargs)
    except TypeError as error:  # a fixed-size encoder that cannot be built for another size
        raise WeightsUnavailableError(
            f"timm cannot build {arch} with {timm_kwargs} ({error}): set train.image_size to its own input size"
        ) from error


def load_encoder_file(encoder: nn.Module, arch: str, path: Path) -> str:
    """Load a state_dict file of `arch` (.safetensors or a torch file) into `encoder`; every tensor must fit."""
    from timm.models import load_state_dict

    if not path.is_file():
        raise WeightsUnavailableError(
            f"model.pretrained={str(path)!r} is neither hub, auto, none nor an existing weights file"
        )
    try:
        state = load_state_dict(str(path))  # unwraps state_dict / model / EMA entries and DDP's module. prefix
        # timm's own conversion for the model family: original repositories' key names (OpenAI CLIP, DINOv2),
        # position embeddings resampled to the size the encoder was built for
        convert = getattr(sys.modules[type(encoder).__module__], "checkpoint_filter_fn", None)
        if convert is not None:
            state = convert(state, encoder)
        classifiers = encoder.pretrained_cfg.get("classifier") or ()
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        own = encoder.state_dict()
        state = {k: v for k, v in state.items() if k in own or not k.startswith(tuple(f"{c}." for c in classifiers))}
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except Exception as error:  # not a weights file, not a state_dict, wrong tensor shapes
        raise WeightsUnavailableError(
            f"{path} is not a state_dict of the timm encoder {arch} ({type(error).__name__}: {str(error)[:300]})"
        ) from error
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"{path} does not fit the timm encoder {arch}: missing {missing[:3]} ({len(missing)} in all), "
            f"unexpected {unexpected[:3]} ({len(unexpected)} in all)"
        )
    return f"file:{path}"
