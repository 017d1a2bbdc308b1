"""benchmarks/tfjs_graph.py runs a TensorFlow.js graph model (model.json + weights) in PyTorch, as TensorFlow
computes it: TF's SAME padding (the odd pixel at the bottom and right), float16-quantized weights, folded batch
norm, ReLU6 as min/max, the spatial mean and a fused dense layer; and refuses what it cannot read.
benchmarks/frozen_probe.py's `features` step writes its features in frozen_probe.js's file format."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "benchmarks"))
from tfjs_graph import TfjsGraph  # noqa: E402

CONV = {"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": {"s": "U0FNRQ=="}}  # "SAME", base64
DEPTHWISE = {"strides": {"list": {"i": ["1", "1", "1", "1"]}}, "padding": {"s": "U0FNRQ=="}}
BIAS_ADD = {"fused_ops": {"list": {"s": ["Qmlhc0FkZA=="]}}}  # ["BiasAdd"]


def write_model(folder, nodes, weights, extra_bytes=b""):
    """model.json and one weight file; float32 weights named with a trailing '~' are stored as float16."""
    specs, data = [], b""
    for name, value in weights.items():
        half = name.endswith("~")
        value = np.asarray(value)
        spec = {"name": name.rstrip("~"), "shape": list(value.shape), "dtype": "float32"}
        if value.dtype.kind == "i":
            spec["dtype"], raw = "int32", value.astype(np.int32).tobytes()
        elif half:
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            raw = value.astype(np.float16).tobytes()
        else:
            raw = value.astype(np.float32).tobytes()
        specs.append(spec)
        data += raw
    (folder / "w.bin").write_bytes(data + extra_bytes)
    consts = [{"name": spec["name"], "op": "Const"} for spec in specs]
    model = {
        "format": "graph-model",
        "modelTopology": {"node": consts + nodes},
        "weightsManifest": [{"paths": ["w.bin"], "weights": specs}],
    }
    (folder / "model.json").write_text(json.dumps(model))
    return folder / "model.json"


def small_network(folder, extra_bytes=b""):
    conv = np.zeros((3, 3, 3, 2))  # RGB in, two channels out
    conv[0, 0, 0, 0] = conv[0, 0, 1, 1] = 1  # picks the pixel at the window's top left, red and green
    depthwise = np.zeros((3, 3, 2, 1))
    depthwise[1, 1, :, 0] = [1.0, 0.5]  # the centre pixel, scaled per channel
    nodes = [
        {"name": "input", "op": "Placeholder"},
        {"name": "conv", "op": "Conv2D", "input": ["input", "conv/kernel"], "attr": CONV},
        {"name": "bn/mul", "op": "Mul", "input": ["conv", "bn/scale"]},
        {"name": "bn/add", "op": "Add", "input": ["bn/mul", "bn/shift"]},
        {"name": "relu", "op": "Relu", "input": ["bn/add"]},
        {"name": "relu6/min", "op": "Minimum", "input": ["relu", "six"]},
        {"name": "relu6", "op": "Maximum", "input": ["relu6/min", "zero"]},
        {"name": "dw", "op": "DepthwiseConv2dNative", "input": ["relu6", "dw/kernel"], "attr": DEPTHWISE},
        {"name": "pool", "op": "Mean", "input": ["dw", "pool/axes"]},
        {"name": "dense", "op": "_FusedMatMul", "input": ["pool", "dense/kernel", "dense/bias"], "attr": BIAS_ADD},
    ]
    weights = {
        "conv/kernel~": conv,
        "bn/scale": [2.0, 3.0],
        "bn/shift": [-1.0, 0.0],
        "six": np.float32(6),
        "zero": np.float32(0),
        "dw/kernel": depthwise,
        "pool/axes": np.array([1, 2]),
        "dense/kernel": [[1.0], [-1.0]],
        "dense/bias~": [0.5],
    }
    return write_model(folder, nodes, weights, extra_bytes)


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
