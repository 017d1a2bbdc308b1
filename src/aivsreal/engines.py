"""Where the network runs: eager PyTorch, or ONNX Runtime on the graph exported beside the weights.

The train stage exports the network (input filter included) to `model.onnx` in the saved-model
folder and `ModelConfig.onnx_file` names it; with `model.int8: true` it also writes an int8 copy
(`model.int8.onnx`, ONNX Runtime static quantisation calibrated on validation images), named by
`ModelConfig.int8_file`; the train stage keeps it only if validation accuracy holds (`model.int8_max_drop`).
`Predictor.from_dir` then runs the int8 graph when there is one, else the float graph, on ONNX Runtime
when it is installed, else eager PyTorch in channels-last layout; AIVSREAL_ENGINE=torch, =onnx or
=onnx-int8 forces one. Preprocessing is the same for all (Predictor's), and Grad-CAM always uses PyTorch.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ENGINE_ENV = "AIVSREAL_ENGINE"  # auto (default) | torch | onnx | onnx-int8
ENGINES = ("auto", "torch", "onnx", "onnx-int8")
# for people: the app's model card, logs
ENGINE_NAMES = {"torch": "PyTorch (eager)", "onnx": "ONNX Runtime", "onnx-int8": "ONNX Runtime, int8"}
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
    strip_metadata(path)
    return path


def strip_metadata(path: Path) -> None:
    """Drop every doc string and metadata entry of the ONNX file at `path`, in place. The exporter writes
    each node's Python stack trace (absolute paths of this machine's venv and clone: user name, home
    folder), FX node text and rewrite-rule names: without them the bytes depend only on weights and code,
    so a clone in another folder reproduces the same `models/model` and `dvc.lock`."""
    import onnx

    def clean(item) -> None:
        item.doc_string = ""
        if hasattr(item, "metadata_props"):
            del item.metadata_props[:]

    def clean_graph(graph) -> None:
        clean(graph)
        for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
            clean(value)
        for node in graph.node:
            clean(node)
            for attribute in node.attribute:  # subgraphs of If / Loop / Scan nodes
                for subgraph in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
                    clean_graph(subgraph)

    model = onnx.load(str(path))
    clean(model)
    clean_graph(model.graph)
    for function in model.functions:
        clean(function)
        for node in function.node:
            clean(node)
    onnx.save(model, str(path))


def quantize_int8(
    folder: Path, onnx_file: str, calibration: Iterable[np.ndarray], input_filter: str = "none",
    quant_format: str = "QOperator", per_channel: bool = True,
) -> Path:  # fmt: skip
    """folder/model.int8.onnx: ONNX Runtime's static int8 quantisation of folder/onnx_file.

    Weights int8 (per output channel by default), activations uint8 with ranges from the MinMax
    calibrator over `calibration` (normalised input batches: validation images in the train stage).
    The model's input filter (`input_filter`, e.g. "residual") stays float: its input quantised to
    8 bits would erase the pixel-level noise it reads (measured: 97 % -> 60 % test accuracy).
    The default format is the fastest measured (benchmarks/RESULTS.md, "Inference engines")."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self, batches):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"pixels": np.ascontiguousarray(batch, dtype=np.float32)}

    path = Path(folder) / INT8_FILE
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # shapes inferred, graph folded: what the quantiser expects
        quant_pre_process(str(Path(folder) / onnx_file), str(prepared))
        quantize_static(
            str(prepared), str(path), Batches(calibration), quant_format=QuantFormat[quant_format],
            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=input_filter_nodes(prepared, input_filter),
        )  # fmt: skip
    strip_metadata(path)
    return path


def input_filter_nodes(graph: Path, input_filter: str) -> list[str]:
    """Names of the nodes that compute the input filter (`conv1.<filter>` in model.build_model): every node
    before the backbone's first convolution (`conv1.conv`), since conv1 is the network's first module. Read by
    position, not by name: a filter without weights (npr) leaves no name of its own in the exported graph."""
    import onnx

    if input_filter == "none":
        return []
    names = []
    for node in onnx.load(str(graph)).graph.node:
        if any("conv1.conv." in name for name in node.input):
            break
        names.append(node.name)
    if not names:
        raise RuntimeError(f"no nodes of input filter {input_filter!r} found in {graph}: cannot keep it float")
    return names


def chosen_engine(folder: Path | None, config) -> str:
    """ "onnx-int8", "onnx" or "torch" for a saved model in `folder` with ModelConfig `config`, by
    AIVSREAL_ENGINE (default auto: ONNX Runtime when the model has an exported graph and onnxruntime is
    installed, on the int8 graph when the model was trained with `model.int8: true`)."""
    wanted = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if wanted not in ENGINES:
        raise ValueError(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)}, got {wanted!r}")
    if wanted == "torch":
        return "torch"
    has_runtime = importlib.util.find_spec("onnxruntime") is not None
    graphs = {
        engine: folder is not None
        and bool(graph_file(config, engine))
        and (Path(folder) / graph_file(config, engine)).is_file()
        for engine in ("onnx", "onnx-int8")
    }
    if wanted != "auto":
        if graphs[wanted] and has_runtime:
            return wanted
        missing = "onnxruntime is not installed" if graphs[wanted] else {
            "onnx": "the model has no exported ONNX graph (re-train it)",
            "onnx-int8": "the model has no int8 graph (train it with model.int8: true)",
        }[wanted]  # fmt: skip
        raise RuntimeError(f"{ENGINE_ENV}={wanted}, but {missing}; unset it for the default engine")
    if not has_runtime:
        return "torch"
    return "onnx-int8" if graphs["onnx-int8"] else "onnx" if graphs["onnx"] else "torch"


def graph_file(config, engine: str) -> str:
    """The file in the saved-model folder that `engine` runs ("" for PyTorch, or a graph not exported)."""
    return {"onnx": config.onnx_file, "onnx-int8": config.int8_file}.get(engine, "")


class ChannelsLastNetwork:
    """The PyTorch engine: the eager module with weights and inputs in channels_last (NHWC) memory
    layout, which oneDNN's CPU convolutions prefer (measured: benchmarks/RESULTS.md, "Inference engines")."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.to(memory_format=torch.channels_last)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch.contiguous(memory_format=torch.channels_last))


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
