"""ResNet18 with a small MLP head, its input filters, the pretrained-weights policy, and the saved model format.

A saved model is a folder with `weights.pt` (a state_dict, loaded with weights_only=True)
and `config.json` (everything needed to rebuild the network and its preprocessing).
"""

from __future__ import annotations

import json
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from aivsreal.images import DEFAULT_MAX_PIXELS
from aivsreal.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms, eval_geometry

if TYPE_CHECKING:
    from aivsreal.params import InputFilterName, Params

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
DOWNLOAD_TIMEOUT_S = 20  # per socket operation while fetching ImageNet weights


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for and cannot be had."""


@dataclass
class ModelConfig:
    """Travels with the weights: the network shape and its exact preprocessing."""

    class_names: list[str]
    hidden: int
    dropout: float
    image_size: int
    resize: int
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    threshold: float = 0.5  # p(first class) at or above which the first class is predicted
    temperature: float = 1.0  # logits are divided by it before the softmax
    max_pixels: int = DEFAULT_MAX_PIXELS
    pretrained_used: str = "none"
    arch: str = "resnet18"  # or a timm encoder name, used frozen (encoders.py)
    timm_kwargs: dict = field(default_factory=dict)  # timm encoder: create_model arguments beyond the name (img_size)
    input_filter: str = "none"  # a key of INPUT_FILTERS: what the network sees
    residual_clip: float = 3.0  # grey levels at which the residual is clipped
    eval_size: int = 0  # side of the centre crop at inference; 0 = image_size
    tta_hflip: bool = False  # average the logits of the image and its mirror image
    min_side: int = 1  # an input whose smaller side is below this is refused (BadImageError), not scored
    max_confidence: float = 1.0  # reported probabilities are clipped to [1 - this, this]
    # What calibration measured on the validation images and their wild copies (input_range.py):
    # {"min_side": smallest side seen, "accuracy": {"none" | "jpeg" | "webp" | "shrink" | "social": accuracy}}
    validated: dict = field(default_factory=dict)
    warn_accuracy_drop: float = 0.05  # warn about inputs of a kind on which validation accuracy fell by more
    demo: bool = False  # trained on the built-in sample data: it says nothing about real photos
    onnx_file: str = ""  # the network exported beside the weights for ONNX Runtime (engines.py); "" = none
    int8_file: str = ""  # its int8 quantised copy (model.int8: true), the default engine when present; "" = none
    faces: str = "whole"  # "whole": judge the picture as given | "crop": find the faces, judge each (faces.py)
    face_detector: str = "haar"  # faces.DETECTORS; models saved before the choice found faces with the Haar cascade
    min_face_share: float = 0.0  # whole: warn when the largest face found fills less of the picture; 0 = never look
    face_margin: float = 0.25  # crop: margin around a face box on every side, share of its side
    face_summary: str = "any"  # crop: the picture's label is AI if "any" face / "all" faces are
    forensic: str = ""  # two-expert model: sub-folder of the forensic expert that judges originals (experts.py)
    forensic_mix: str = "alone"  # two-expert model, on originals: "alone" (forensic expert) | "mean" (both averaged)
    face_vote: str = ""  # sub-folder of the face vote joined to the network's answer (face_vote.py); "" = none

    @classmethod
    def from_params(cls, params: Params) -> ModelConfig:
        """What `params.yaml` says about the network and its preprocessing (before calibration)."""
        m, p = params.model, params.train
        config = cls(
            class_names=list(params.data.class_names), hidden=m.hidden, dropout=m.dropout,
            image_size=p.image_size, resize=p.resize, max_pixels=params.split.max_pixels,
            input_filter=m.input_filter, residual_clip=m.residual_clip,
            eval_size=p.eval_size, tta_hflip=p.tta_hflip, min_side=m.min_side,
            max_confidence=params.calibration.max_confidence,
            warn_accuracy_drop=params.calibration.warn_accuracy_drop,
            faces=params.data.faces, face_margin=params.data.face_margin, face_summary=params.data.face_summary,
            face_detector=params.data.face_detector, min_face_share=params.data.min_face_share,
            arch=m.arch,
        )  # fmt: skip
        if config.arch != "resnet18":  # a timm encoder: its own mean/std, built for train.image_size
            from aivsreal.encoders import encoder_settings

            config.timm_kwargs, config.mean, config.std = encoder_settings(config.arch, config.image_size)
        return config

    @classmethod
    def read(cls, folder: Path) -> ModelConfig:
        """The config saved beside the weights in a saved-model folder."""
        return cls(**json.loads((Path(folder) / CONFIG_FILE).read_text()))

    @property
    def eval_crop(self) -> int:
        return self.eval_size or self.image_size

    def eval_transform(self):
        return build_transforms(self.eval_crop, self.resize, train=False, mean=tuple(self.mean), std=tuple(self.std))

    def eval_geometry(self):
        """Resize and crop only: `Predictor` normalises whole batches at once (`normalise_batch`)."""
        return eval_geometry(self.eval_crop, self.resize)


class ResidualFilter(nn.Module):
    """Fixed high-pass front end: each colour channel's Laplacian residual, clipped and scaled.

    The noise residual of steganalysis and image forensics (the spatial rich model of Fridrich and
    Kodovsky 2012; Cozzolino et al. 2017): a fixed filter removes the image content, so the network
    learns from pixel-level noise statistics instead of faces, and a truncation keeps it to the small
    values where generator and camera traces live. The input is the normalised tensor of
    `build_transforms`; `std` brings it back to grey levels (the kernel sums to zero, so the mean
    cancels). Output: 3 channels in [-1, 1], the shape ResNet18's first convolution expects, 2 pixels
    smaller than the input (no padding).
    """

    def __init__(self, std: list[float], clip: float):
        super().__init__()
        if clip <= 0:
            raise ValueError(f"residual clip must be positive, got {clip}")
        laplacian = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
        self.register_buffer("kernel", laplacian.expand(3, 1, 3, 3).clone(), persistent=False)
        self.register_buffer("scale", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no padding: a padded border would invent residuals; the output is 2 pixels smaller
        residual = F.conv2d(x, self.kernel, groups=3) * self.scale
        return residual.clamp(-self.clip, self.clip) / self.clip


class NeighbourFilter(nn.Module):
    """Fixed front end of neighbouring pixel relationships (NPR; Tan et al., CVPR 2024).

    A generator's up-sampling layers (transposed convolutions, nearest or bilinear up-sampling in
    GANs and in the decoders of latent diffusion) leave the pixels of each 2x2 cell tied to each other
    in a way a camera's do not. The filter keeps only that: every pixel minus the top-left pixel of
    its 2x2 cell (the image, nearest-neighbour down-sampled by 2 and up-sampled back), scaled by 2/3
    as in the paper. The content cancels except at edges; the top-left pixel of each cell becomes 0.
    Same shape as its input (odd sizes included: the last row or column is its own cell's start).
    The input is the normalised tensor of `build_transforms`, as in the paper.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        cell_start = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        return (x - cell_start[..., :height, :width]) * (2.0 / 3.0)


@dataclass(frozen=True)
class InputFilter:
    """One `model.input_filter` choice: what goes in front of ResNet18's first convolution, and its name for people."""

    description: str  # how the report and the web app name the network's input
    front_end: Callable[[ModelConfig], nn.Module] | None  # None: the image goes straight into conv1


# Every model.input_filter choice; params.InputFilterName lists the same names (a test checks).
INPUT_FILTERS: dict[InputFilterName, InputFilter] = {
    "none": InputFilter("RGB", None),
    "residual": InputFilter("noise residual", lambda config: ResidualFilter(list(config.std), config.residual_clip)),
    "npr": InputFilter("neighbouring pixel relationships (NPR)", lambda config: NeighbourFilter()),
}


def build_head(in_features: int, hidden: int, dropout: float, n_classes: int) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear: logits, no softmax (CrossEntropyLoss applies it).
    `hidden` 0: one Linear layer, the linear probe of UnivFD (Ojha et al. 2023); dropout is then unused."""
    if hidden == 0:
        return nn.Sequential(nn.Linear(in_features, n_classes))
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_classes),
    )


def build_model(config: ModelConfig, pretrained: str = "none") -> tuple[nn.Module, str]:
    """ResNet18 with our head, shaped by `config`; returns (model, what weights were really loaded).

    An input filter with a front end puts it in front of the first convolution (`conv1` becomes
    e.g. `conv1.residual` + `conv1.conv`); pretrained weights still load into the rest.
    Any other `config.arch` is a timm encoder with our head (encoders.py).
    """
    if config.input_filter not in INPUT_FILTERS:
        raise ValueError(f"input_filter must be one of {tuple(INPUT_FILTERS)}, got {config.input_filter!r}")
    if config.arch != "resnet18":
        from aivsreal.encoders import build_encoder_classifier  # imports timm: only when an encoder is asked for

        if config.input_filter != "none":
            raise ValueError(f"input_filter {config.input_filter!r} is for resnet18; a timm encoder sees RGB")
        return build_encoder_classifier(config, pretrained)
    model = resnet18(weights=None)
    used = load_backbone_weights(model, pretrained)
    model.fc = build_head(model.fc.in_features, config.hidden, config.dropout, len(config.class_names))
    front_end = INPUT_FILTERS[config.input_filter].front_end
    if front_end is not None:
        model.conv1 = nn.Sequential(OrderedDict([(config.input_filter, front_end(config)), ("conv", model.conv1)]))
    return model, used


def load_backbone_weights(model: nn.Module, pretrained: str) -> str:
    """Apply the `model.pretrained` policy; the returned string is recorded, never assumed."""
    if pretrained == "none":
        return "none"
    if pretrained in ("imagenet", "auto"):
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a closed network must not stall the stage
        try:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
        except Exception as error:  # no network, no cache, proxy: all mean "cannot be had"
            if pretrained == "imagenet":
                raise WeightsUnavailableError(
                    f"ImageNet weights for ResNet18 could not be downloaded or found in the torch cache "
                    f"({torch.hub.get_dir()}): {error}. Set model.pretrained to a local weights file or none."
                ) from error
            message = (
                "ImageNet weights are not available (offline, and not in the torch cache "
                f"{torch.hub.get_dir()}): TRAINING FROM SCRATCH (model.pretrained=auto fell back to none)"
            )
            log.warning(message)
            return "none (imagenet unavailable)"
        finally:
            socket.setdefaulttimeout(previous_timeout)
        model.load_state_dict(state)
        return "imagenet:IMAGENET1K_V1"
    path = Path(pretrained)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"model.pretrained={pretrained!r} is neither auto, imagenet, none nor an existing weights file"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(backbone, strict=False)
    except Exception as error:  # not a torch file, not a state_dict, wrong tensor shapes
        raise WeightsUnavailableError(
            f"{path} is not a ResNet18 state_dict ({type(error).__name__}: {str(error)[:200]})"
        ) from error
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"{path} does not fit ResNet18: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return f"file:{path}"


def set_trainable(model: nn.Module, finetune: str) -> list[nn.Parameter]:
    """Freeze what `train.finetune` says stays fixed; return the parameters to optimise."""
    trainable_prefixes = {"head": ("fc.",), "layer4": ("fc.", "layer4."), "all": ("",)}[finetune]
    params = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(trainable_prefixes)
        if parameter.requires_grad:
            params.append(parameter)
    return params


def frozen_modules_to_eval(model: nn.Module, finetune: str) -> None:
    """Frozen BatchNorm layers keep their statistics: put untouched parts in eval mode."""
    if finetune == "all":
        return
    keep_training = {"head": ("fc",), "layer4": ("fc", "layer4")}[finetune]
    for name, child in model.named_children():
        if name not in keep_training:
            child.eval()


def save_model(model: nn.Module, config: ModelConfig, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")


def load_saved_model(folder: Path) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the network from a saved folder: the same code path for every consumer."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a saved model (needs {CONFIG_FILE} and {WEIGHTS_FILE}): run `dvc repro` to train one"
        )
    config = ModelConfig.read(folder)
    model, _ = build_model(config)
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    model.eval()
    return model, config
