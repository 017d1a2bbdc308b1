"""Grad-CAM heatmaps (Captum's LayerGradCam on ResNet18's last block, or on a timm encoder's first
convolution): where the model looked."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib import colormaps
from PIL import Image

from aivsreal.experts import WILD
from aivsreal.predictor import Predictor


def grad_cam(predictor: Predictor, image: Image.Image, class_index: int) -> tuple[np.ndarray, Image.Image]:
    """Heatmap in [0, 1] for `class_index`, and the image exactly as the network saw it; in a two-expert
    model, the network of the expert that answers for this image."""
    if predictor.forensic is not None and predictor.experts([image])[0][0] != WILD:  # an original: the forensic map
        predictor = predictor.forensic
    tensor = predictor.transform(image).unsqueeze(0).requires_grad_(True)
    model = predictor.model
    with torch.enable_grad():
        # ResNet18's last block; a timm encoder's first convolution (encoders.EncoderClassifier.cam_layer)
        layer = model.layer4 if hasattr(model, "layer4") else model.cam_layer
        attribution = LayerGradCam(model, layer).attribute(tensor, target=class_index, relu_attributions=True)
        upsampled = LayerAttribution.interpolate(attribution, tuple(tensor.shape[-2:]), interpolate_mode="bilinear")
    heatmap = upsampled.detach()[0, 0].numpy()
    spread = heatmap.max() - heatmap.min()  # min-max scaling, as the Grad-CAM paper's figures do
    heatmap = (heatmap - heatmap.min()) / spread if spread > 0 else np.zeros_like(heatmap)
    return heatmap, network_view(predictor, tensor.detach()[0])


def network_view(predictor: Predictor, tensor: torch.Tensor) -> Image.Image:
    """Undo the normalisation of a transformed image, so the overlay matches pixel for pixel."""
    mean = torch.tensor(predictor.config.mean).view(3, 1, 1)
    std = torch.tensor(predictor.config.std).view(3, 1, 1)
    pixels = ((tensor * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(pixels, mode="RGB")


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a jet-coloured heatmap over the image (same size)."""
    coloured = (colormaps["jet"](heatmap)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(coloured, mode="RGB"), alpha)
