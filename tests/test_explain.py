"""Grad-CAM: a heatmap over exactly the pixels the network saw."""

import numpy as np
from conftest import png_bytes
from PIL import Image

from aivsreal.explain import grad_cam, network_view, overlay
from aivsreal.predictor import Predictor


def test_heatmap_covers_the_network_input_and_is_scaled(tiny_model_dir):
    predictor = Predictor.from_dir(tiny_model_dir)
    image = predictor.load(png_bytes(3, size=80))
    heatmap, seen = grad_cam(predictor, image, class_index=0)
    size = predictor.config.image_size
    assert heatmap.shape == (size, size) and seen.size == (size, size)
    assert heatmap.min() >= 0 and heatmap.max() <= 1
    assert heatmap.max() in (0.0, 1.0)  # min-max scaled (or all zero when nothing fired)


def test_network_view_inverts_the_normalisation(tiny_model_dir):
    predictor = Predictor.from_dir(tiny_model_dir)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    seen = network_view(predictor, predictor.transform(image))
    assert np.abs(np.asarray(seen, dtype=int) - np.asarray(image, dtype=int)).max() <= 1


def test_overlay_keeps_the_size():
    image = Image.new("RGB", (20, 20), "white")
    assert overlay(image, np.linspace(0, 1, 400).reshape(20, 20)).size == (20, 20)
