"""A TensorFlow.js graph model (model.json and its weight files) run in PyTorch, for the ops of a
Keras MobileNet converted to TensorFlow.js: the face network of the face vote (face_vote.py) and of
benchmarks/frozen_probe.py (HSE's `faceres`, from the npm package @vladmandic/human) without Node.js.

    graph = TfjsGraph.load(Path("runs/frozen/faceres.json"))
    [features] = graph(pixels, ["global_pooling/Mean"])   # pixels: N x H x W x 3 float, as the model takes them

Checked against TensorFlow.js's own output (benchmarks/frozen_probe.js, WebAssembly backend) on 64
facebench faces: the largest difference in faceres's 1,024 features was 4e-6 (values up to 2.3).
An op outside the table below is refused by name rather than guessed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# How TensorFlow.js stores each weight: its dtype, or the dtype it was quantized to.
STORED = {"float32": np.float32, "int32": np.int32, "float16": np.float16}

ELEMENTWISE = {
    "Add": torch.add,
    "AddV2": torch.add,
    "Mul": torch.mul,
    "Minimum": torch.minimum,
    "Maximum": torch.maximum,
}


def decode_weights(manifest: list[dict], folder: Path) -> dict[str, torch.Tensor]:
    """The named weights of a model.json's weightsManifest, read from its shards in order (float16 ones widened)."""
    tensors = {}
    for group in manifest:
        data = b"".join((folder / path).read_bytes() for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            stored = spec.get("quantization", {}).get("dtype", spec["dtype"])
            if stored not in STORED:
                raise ValueError(f"weight {spec['name']}: stored as {stored}, which this reader does not decode")
            count = int(np.prod(spec["shape"], dtype=np.int64))
            values = np.frombuffer(data, STORED[stored], count, offset).reshape(spec["shape"])
            offset += count * np.dtype(STORED[stored]).itemsize
            wide = np.float32 if spec["dtype"] == "float32" else np.int64
            tensors[spec["name"]] = torch.from_numpy(values.astype(wide))
        if offset != len(data):
            raise ValueError(f"{group['paths']}: {len(data)} bytes, the manifest describes {offset}")
    return tensors


def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's SAME padding: the odd pixel, if any, goes to the bottom and right (PyTorch's own is symmetric)."""
    padding = []
    for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        padding += [total // 2, total - total // 2]
    return F.pad(x, padding)


def attribute(node: dict, name: str, kind: str):
    value = node.get("attr", {}).get(name, {})
    if kind == "s":
        return base64.b64decode(value.get("s", "")).decode()
    if kind == "bool":
        return bool(value.get("b", False))
    if kind == "ints":
        return [int(i) for i in value.get("list", {}).get("i", [])]
    return [base64.b64decode(s).decode() for s in value.get("list", {}).get("s", [])]


class TfjsGraph:
    """The graph's nodes in file order (TensorFlow.js writes them topologically), run on NCHW tensors."""

    def __init__(self, nodes: list[dict], weights: dict[str, torch.Tensor]):
        self.nodes, self.weights = nodes, weights
        missing = [n["name"] for n in nodes if n["op"] == "Const" and n["name"] not in weights]
        if missing:
            raise ValueError(f"constants with no stored value: {missing[:5]}")
        inputs = [n["name"] for n in nodes if n["op"] == "Placeholder"]
        if len(inputs) != 1:
            raise ValueError(f"one input expected, the graph has {inputs}")
        self.input = inputs[0]

    @classmethod
    def load(cls, model_json: Path) -> TfjsGraph:
        model = json.loads(Path(model_json).read_text())
        return cls(model["modelTopology"]["node"], decode_weights(model["weightsManifest"], Path(model_json).parent))

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, outputs: list[str]) -> list[torch.Tensor]:
        """The named nodes' values for N x H x W x C pixels; feature maps come back NCHW."""
        values = dict(self.weights)
        values[self.input] = pixels.permute(0, 3, 1, 2).float()
        wanted = set(outputs)
        for node in self.nodes:
            if node["op"] in ("Const", "Placeholder"):
                continue
            values[node["name"]] = self.run(node, [values[name] for name in node.get("input", [])])
            wanted.discard(node["name"])
            if not wanted:
                break
        if wanted:
            raise KeyError(f"no node named {sorted(wanted)} in the graph")
        return [values[name] for name in outputs]

    @staticmethod
    def run(node: dict, args: list[torch.Tensor]) -> torch.Tensor:
        op = node["op"]
        if op in ("Conv2D", "DepthwiseConv2dNative"):
            dilated = set(attribute(node, "dilations", "ints")) - {1}
            if attribute(node, "data_format", "s") not in ("", "NHWC") or dilated:
                raise NotImplementedError(f"{node['name']}: only NHWC convolutions without dilation are read")
            x, kernel = args  # kernel: height x width x in x out (depthwise: x multiplier)
            stride, size = attribute(node, "strides", "ints")[1], kernel.shape[0]
            padding = attribute(node, "padding", "s")
            if padding == "SAME":
                x = pad_same(x, size, stride)
            elif padding != "VALID":
                raise NotImplementedError(f"{node['name']}: padding {padding}")
            if op == "Conv2D":
                return F.conv2d(x, kernel.permute(3, 2, 0, 1), stride=stride)
            channels = kernel.shape[2]
            weight = kernel.permute(2, 3, 0, 1).reshape(-1, 1, size, size)
            return F.conv2d(x, weight, stride=stride, groups=channels)
        if op in ELEMENTWISE:
            a, b = args
            if a.dim() == 4 and b.dim() == 1:  # a per-channel constant (folded batch norm) on an NCHW map
                b = b.reshape(-1, 1, 1)
            return ELEMENTWISE[op](a, b)
        if op == "Relu":
            return F.relu(args[0])
        if op == "Relu6":
            return F.relu6(args[0])
        if op == "Mean":
            x, axes = args
            if sorted(axes.tolist()) != [1, 2] or x.dim() != 4:
                raise NotImplementedError(f"{node['name']}: only the spatial mean is read")
            return x.mean((2, 3))
        if op == "_FusedMatMul":
            x, weight, bias = args
            if attribute(node, "transpose_a", "bool") or attribute(node, "transpose_b", "bool"):
                raise NotImplementedError(f"{node['name']}: transposed matrix product")
            fused = attribute(node, "fused_ops", "strings")
            if set(fused) - {"BiasAdd", "Relu"}:
                raise NotImplementedError(f"{node['name']}: fused ops {fused}")
            y = x @ weight + bias
            return F.relu(y) if "Relu" in fused else y
        if op == "Sigmoid":
            return torch.sigmoid(args[0])
        if op == "Softmax":
            return torch.softmax(args[0], dim=-1)
        raise NotImplementedError(f"{node['name']}: op {op} is not read by benchmarks/tfjs_graph.py")
