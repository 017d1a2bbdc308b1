"""A small network written out as a TensorFlow.js graph model (model.json and one weight file), for
tests/test_tfjs_graph.py and tests/test_face_vote.py."""

from __future__ import annotations

import json

import numpy as np

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


def small_network(folder, extra_bytes=b"", pool="pool"):
    """RGB -> conv (stride 2) -> folded batch norm -> ReLU6 -> depthwise -> spatial mean (`pool`) -> dense."""
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
        {"name": pool, "op": "Mean", "input": ["dw", "pool/axes"]},
        {"name": "dense", "op": "_FusedMatMul", "input": [pool, "dense/kernel", "dense/bias"], "attr": BIAS_ADD},
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
