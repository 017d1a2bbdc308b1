"""Where the network runs: eager PyTorch, or ONNX Runtime on the graph exported beside the weights.

The train stage exports the network (input filter included) to `model.onnx` in the saved-model
folder and `ModelConfig.onnx_file` names it. `Predictor.from_dir` then runs it on ONNX Runtime when
the file is there and `onnxruntime` is installed, else on PyTorch; AIVSREAL_ENGINE=torch or =onnx
forces one. Preprocessing is the same for both (Predictor's), and Grad-CAM always uses PyTorch.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ENGINE_ENV = "AIVSREAL_ENGINE"  # auto (default) | torch | onnx
ENGINES = ("auto", "torch", "onnx")
ENGINE_NAMES = {"torch": "PyTorch (eager)", "onnx": "ONNX Runtime"}  # for people: the app's model card, logs
OPSET = 18  # what torch.onnx's exporter (torch.export based) targets by default in this torch


def export_onnx(model: torch.nn.Module, crop: int, folder: Path) -> Path:
    """Export the network (eval mode) to folder/model.onnx with a dynamic batch dimension."""
    path = Path(folder) / ONNX_FILE
    example = torch.zeros(2, 3, crop, crop)  # batch 2: torch.export would specialise a batch of 1
    batch = torch.export.Dim("batch", min=1)
    model.eval()
    torch.onnx.export(
        model, (example,), str(path), input_names=["pixels"], output_names=["logits"],
        dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
    )  # fmt: skip
    return path


def chosen_engine(folder: Path | None, onnx_file: str) -> str:
    """ "onnx" or "torch" for a saved model in `folder`, by AIVSREAL_ENGINE (default auto: ONNX Runtime
    when the model has an exported graph and onnxruntime is installed)."""
    wanted = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if wanted not in ENGINES:
        raise ValueError(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)}, got {wanted!r}")
    if wanted == "torch":
        return "torch"
    has_graph = folder is not None and bool(onnx_file) and (Path(folder) / onnx_file).is_file()
    has_runtime = importlib.util.find_spec("onnxruntime") is not None
    if wanted == "onnx" and not (has_graph and has_runtime):
        missing = "onnxruntime is not installed" if has_graph else "the model has no exported ONNX graph (re-train it)"
        raise RuntimeError(f"{ENGINE_ENV}=onnx, but {missing}; unset it to run on PyTorch")
    return "onnx" if has_graph and has_runtime else "torch"


class OnnxNetwork:
    """The exported network on ONNX Runtime's CPU provider, called like the PyTorch module it replaces."""

    def __init__(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(batch.numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: pixels})[0])
