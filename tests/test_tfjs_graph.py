"""aivsreal.tfjs_graph runs a TensorFlow.js graph model (model.json + weights) in PyTorch, as TensorFlow
computes it: TF's SAME padding (the odd pixel at the bottom and right), float16-quantized weights, folded batch
norm, ReLU6 as min/max, the spatial mean and a fused dense layer; and refuses what it cannot read.
benchmarks/frozen_probe.py's `features` step writes its features in frozen_probe.js's file format."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PROJECT
from helpers_tfjs import small_network

from aivsreal.tfjs_graph import TfjsGraph


def expected(pixels):
    """The same network written out in numpy, TensorFlow's way."""
    picked = pixels[:, ::2, ::2, :2]  # SAME, stride 2, even size: no padding at the top or left
    activated = np.clip(picked * [2, 3] + [-1, 0], 0, 6)
    pooled = (activated * [1.0, 0.5]).mean(axis=(1, 2))
    return pooled, pooled @ np.array([[1.0], [-1.0]]) + 0.5


def test_runs_a_small_network_as_tensorflow_computes_it(tmp_path):
    pixels = np.random.default_rng(0).uniform(0, 4, size=(3, 6, 6, 3)).astype(np.float32)
    graph = TfjsGraph.load(small_network(tmp_path))
    pooled, dense = graph(torch.from_numpy(pixels), ["pool", "dense"])
    want_pooled, want_dense = expected(pixels)
    np.testing.assert_allclose(pooled.numpy(), want_pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.numpy(), want_dense, rtol=1e-5, atol=1e-6)
    [feature_map] = graph(torch.from_numpy(pixels), ["relu6"])
    assert feature_map.shape == (3, 2, 3, 3) and feature_map.max() <= 6  # NCHW, ReLU6 applied


def test_refuses_unknown_ops_names_and_weight_files_of_the_wrong_size(tmp_path):
    graph = TfjsGraph.load(small_network(tmp_path))
    with pytest.raises(KeyError, match="no node named"):
        graph(torch.zeros(1, 6, 6, 3), ["not_there"])
    graph.nodes.append({"name": "odd", "op": "FusedBatchNormV3", "input": ["dense"]})
    with pytest.raises(NotImplementedError, match="FusedBatchNormV3"):
        graph(torch.zeros(1, 6, 6, 3), ["odd"])
    with pytest.raises(ValueError, match="bytes"):
        TfjsGraph.load(small_network(tmp_path, extra_bytes=b"\0\0\0\0"))


def test_frozen_probe_features_writes_frozen_probe_js_files(tmp_path):
    model = small_network(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    faces = np.random.default_rng(1).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    faces.tofile(work / "stored.u8")  # as `frozen_probe.py prep` writes each treatment
    command = [sys.executable, str(PROJECT / "benchmarks/frozen_probe.py"), "features", "--out", str(work),
               "--graph", str(model), "--layers", "relu6+dense", "--scale", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT, timeout=300)
    assert done.returncode == 0, done.stderr
    pixels = faces.astype(np.float32) / 255
    graph = TfjsGraph.load(model)
    feature_map, dense = graph(torch.from_numpy(pixels), ["relu6", "dense"])
    written = np.fromfile(work / "feat/model_relu6_stored.f32", np.float32).reshape(2, -1)
    np.testing.assert_allclose(written, feature_map.mean((2, 3)).numpy(), rtol=1e-5)  # maps averaged
    written = np.fromfile(work / "feat/model_dense_stored.f32", np.float32).reshape(2, -1)
    np.testing.assert_allclose(written, dense.numpy(), rtol=1e-5)
