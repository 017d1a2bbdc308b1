"""A second opinion from a face network: how the training faces nearest to a picture were labelled.

`model.face_vote: true` adds it beside the trained network. A face-recognition network, HSE's FaceRes (a
MobileNet trained on VGGFace2 identities by A. Savchenko, as converted to TensorFlow.js by the `Human`
library), describes each face by 1,024 numbers (its `global_pooling/Mean` layer). At train time the
training faces' degraded copies (COPIES per face, the train stage's own JPEG / shrink / blur draws) are
described and kept with the model (BANK_FILE); a picture's vote is the share of AI faces among its `k`
nearest (cosine, after standardising with the bank's statistics). `k` (KS) and the vote's threshold are
picked on the validation faces' degraded copies. The answer averages the network's calibrated p(AI) and
the vote, decided at the mean of the two thresholds (`FaceVote.join`).

Measured (benchmarks/RESULTS.md, rows "+F-face", "E8+vote" and "make facebench with the face vote"): a trade.
On facebench's leave-one-source-out folds, six wild conditions, it lifted the unseen GAN source (`extra/`, ROC
AUC 0.52 -> 0.66) and with it the fold mean, but on unseen Stable Diffusion faces it lowers accuracy (the
preset's held-out `sd21/`: wild 0.643 -> 0.621): the face network tells GAN faces apart and is at chance on
diffusion faces. Hence off by default.

The weights are not part of this project: `fetch` downloads the npm package @vladmandic/human (MIT, its
models folder) from the npm registry, checks the registry's sha512 of the package and the sha256 of the
two files, and keeps only them (7 MB). The train stage exports the network to ONNX into the model
(ONNX_FILE), and it answers on ONNX Runtime where that is installed, else in PyTorch (tfjs_graph.py).

    python -m aivsreal.face_vote fetch            # weights/faceres/faceres.json and .bin
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import io
import json
import logging
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from aivsreal.calibration import probabilities
from aivsreal.engines import ENGINE_ENV, OPSET, OnnxNetwork, strip_metadata
from aivsreal.experts import shift_to_threshold
from aivsreal.tfjs_graph import TfjsGraph

log = logging.getLogger(__name__)

PACKAGE_URL = "https://registry.npmjs.org/@vladmandic/human/-/human-3.3.6.tgz"
# the registry's integrity value for that tarball
PACKAGE_SHA512 = "Nr5mPfq1gQ+uKeXY5uM3Fj8UxvF5CEh2s6txM5wRThqaW0mF9huooOuZSrT8hhGho0hGaXLFdAwfD/2+teCv6A=="
FILES = {  # what fetch keeps from the package's models/ folder, and their sha256
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
}
DEFAULT_GRAPH = Path("weights/faceres/faceres.json")  # model.face_vote_graph's default, from the project root
LAYER = "global_pooling/Mean"
SIZE = 224  # the face network's input side
KS = (1, 9, 25)  # neighbours tried on validation
COPIES = 2  # degraded copies of each training and validation face
CHUNK = 256  # images read at a time while describing them
FOLDER = "face_vote"  # sub-folder of a saved model: the face network and the bank
BANK_FILE = "bank.npz"
GRAPH_FILE = "graph.json"  # the face network's model.json in a saved model
ONNX_FILE = "graph.onnx"  # the same network exported for ONNX Runtime


class FaceWeightsError(RuntimeError):
    """The face network's weights are missing, or not the published ones."""


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch(
    folder: Path = DEFAULT_GRAPH.parent, url: str = PACKAGE_URL, package_sha512: str = PACKAGE_SHA512, files=FILES
) -> Path:
    """Download the npm package at `url`, check it against the registry's sha512, and write its
    models/faceres.json and .bin into `folder` after checking their sha256 (`files`); folder/faceres.json."""
    log.info("downloading the face network from %s (29 MB; 7 MB kept)", url)
    try:
        with urllib.request.urlopen(url, timeout=120) as answer:
            data = answer.read()
    except OSError as error:
        raise FaceWeightsError(
            f"could not download {url} ({error}); on a machine without the npm registry, copy models/faceres.json "
            f"and models/faceres.bin of the npm package @vladmandic/human@3.3.6 into {folder}"
        ) from error
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != package_sha512:
        raise FaceWeightsError(f"{url} is not the published package (sha512 {digest}, expected {package_sha512})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as package:
        for name in files:
            (folder / name).write_bytes(package.extractfile(f"package/models/{name}").read())
    check_weights(folder / "faceres.json", files)
    return folder / "faceres.json"


def check_weights(graph_json: Path, files=FILES) -> None:
    """FaceWeightsError unless `graph_json` and its weights are the published files (`files`' sha256)."""
    folder = Path(graph_json).parent
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise FaceWeightsError(f"{path} is missing: run `python -m aivsreal.face_vote fetch --to {folder}`")
        if sha256(path) != expected:
            raise FaceWeightsError(f"{path} is not the published file (sha256 {sha256(path)}, expected {expected})")


def ensure_weights(graph_json: Path) -> dict[str, str]:
    """The face network at `graph_json`, fetched into its folder first when it is not there (and then
    checked); the sha256 of its files, to record which network was used."""
    graph_json = Path(graph_json)
    if not graph_json.is_file():
        fetch(graph_json.parent)
    graph = json.loads(graph_json.read_text())
    names = [graph_json.name] + [name for group in graph["weightsManifest"] for name in group["paths"]]
    return {name: sha256(graph_json.parent / name) for name in names}


class FaceNetwork:
    """The face network: 1,024 numbers per picture, read at SIZE x SIZE (bilinear), pixels 0-255 as it takes them.
    Runs on ONNX Runtime when it has an exported graph (`onnx_file`, export_onnx) and the runtime is installed
    (about 3 times faster on a CPU core than the TensorFlow.js graph in PyTorch, the same features to 1e-5),
    else in PyTorch (tfjs_graph.py); AIVSREAL_ENGINE=torch forces PyTorch, as for the trained network."""

    def __init__(self, graph_json: Path, onnx_file: Path | None = None):
        self.graph = TfjsGraph.load(graph_json)
        self.onnx_file = Path(onnx_file) if onnx_file is not None and Path(onnx_file).is_file() else None
        self.onnx = OnnxNetwork(self.onnx_file) if self.onnx_file and onnx_allowed() else None

    def export_onnx(self, path: Path) -> Path:
        """The network up to LAYER as an ONNX graph at `path` (dynamic batch, metadata stripped: engines.py),
        answered on from now on when ONNX Runtime may run."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(2, SIZE, SIZE, 3)
        torch.onnx.export(
            _Features(self.graph).eval(), (example,), str(path), input_names=["pixels"], output_names=["features"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=OPSET, dynamo=True,
            external_data=False, verbose=False,
        )  # fmt: skip
        strip_metadata(path)
        self.onnx_file = path
        self.onnx = OnnxNetwork(path) if onnx_allowed() else None
        return path

    def features(self, images: list[Image.Image], batch_size: int = 32, progress: str | None = None) -> np.ndarray:
        chunks = []
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=progress, unit="batch", disable=progress is None):
            pixels = np.stack([np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), np.uint8)
                               for image in images[start : start + batch_size]])  # fmt: skip
            batch = torch.from_numpy(pixels).float()
            value = self.onnx(batch) if self.onnx is not None else self.graph(batch, [LAYER])[0]
            chunks.append(value.reshape(len(pixels), -1).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


class _Features(torch.nn.Module):
    """The TensorFlow.js graph up to LAYER as a module, for torch.onnx.export."""

    def __init__(self, graph: TfjsGraph):
        super().__init__()
        self.graph = graph

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.graph(pixels, [LAYER])[0]


def onnx_allowed() -> bool:
    """ONNX Runtime is installed and AIVSREAL_ENGINE does not ask for PyTorch."""
    return importlib.util.find_spec("onnxruntime") is not None and os.environ.get(ENGINE_ENV, "").lower() != "torch"


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class FaceVote:
    """The bank of described training faces and the rule that turns a picture's neighbours into p(AI)."""

    network: FaceNetwork
    bank: np.ndarray  # (faces, features): standardised, unit length
    is_ai: np.ndarray  # (faces,) bool
    mean: np.ndarray  # the bank's per-feature statistics, applied to every query
    scale: np.ndarray
    k: int
    threshold: float  # the vote alone says AI at or above this share

    def vote(self, features: np.ndarray, k: int | None = None) -> np.ndarray:
        """Share of AI faces among each row's k nearest bank faces (cosine)."""
        k = k or self.k
        similarity = unit_rows((features - self.mean) / self.scale) @ self.bank.T
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        return self.is_ai[nearest].mean(axis=1)

    def p_ai(self, images: list[Image.Image]) -> np.ndarray:
        return self.vote(self.network.features(images))

    def join(self, logits: np.ndarray, images: list[Image.Image], temperature: float, threshold: float) -> np.ndarray:
        """Two-class logits (first class AI) whose calibrated p(AI) is the network's and the vote's mean,
        moved so that the network's `threshold` decides as the mean of both thresholds does: label AI
        exactly when (p_network + p_vote) / 2 >= (threshold + vote threshold) / 2."""
        if len(logits) == 0:
            return logits
        half = log_odds((probabilities(logits, temperature)[:, 0] + self.p_ai(images)) / 2) / 2
        # the mean as logits of temperature 1 deciding at the mean threshold, moved as a forensic expert's are
        return shift_to_threshold(np.stack([half, -half], axis=1), 1.0, (threshold + self.threshold) / 2, threshold,
                                  temperature)  # fmt: skip

    def save(self, folder: Path, graph_json: Path) -> None:
        """The face network (its model.json as GRAPH_FILE, its weight files, and its ONNX graph as ONNX_FILE
        when it has one) and the bank (features as float16) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.network.onnx_file is not None and self.network.onnx_file != folder / ONNX_FILE:
            shutil.copyfile(self.network.onnx_file, folder / ONNX_FILE)
        graph = json.loads(Path(graph_json).read_text())
        for group in graph["weightsManifest"]:
            for name in group["paths"]:
                (folder / name).write_bytes((Path(graph_json).parent / name).read_bytes())
        (folder / GRAPH_FILE).write_text(json.dumps(graph))
        np.savez(folder / BANK_FILE, bank=self.bank.astype(np.float16), is_ai=self.is_ai, mean=self.mean,
                 scale=self.scale, k=self.k, threshold=self.threshold)  # fmt: skip

    @classmethod
    def load(cls, folder: Path) -> FaceVote:
        folder = Path(folder)
        saved = np.load(folder / BANK_FILE)
        network = FaceNetwork(folder / GRAPH_FILE, folder / ONNX_FILE)
        return cls(network, saved["bank"].astype(np.float32), saved["is_ai"], saved["mean"], saved["scale"],
                   int(saved["k"]), float(saved["threshold"]))  # fmt: skip


def log_odds(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def describe_copies(network: FaceNetwork, load, items: list, augment, seed: int, progress: str) -> np.ndarray:
    """The face network's features of COPIES draws of the training degradations (degradations.RandomDegrade,
    or none) of each item's image (`load(item)`), image by image (rows: item 0's copies, item 1's, ...),
    read CHUNK images at a time; the draws come from torch's generator seeded with `seed`, the caller's
    random state left alone."""
    chunks = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(items), CHUNK), desc=progress, unit="chunk"):
            images = [load(item) for item in items[start : start + CHUNK]]
            copies = [augment(image) if augment else image for image in images for _ in range(COPIES)]
            chunks.append(network.features(copies))
    return np.concatenate(chunks)


def fit(
    network: FaceNetwork,
    load,
    train: tuple[list, np.ndarray],
    val: tuple[list, np.ndarray],
    augment,
    seed: int,
) -> tuple[FaceVote, dict[str, float]]:
    """The vote from the training items (what `load` reads an image from, and is-AI flags) and its k and
    threshold from the validation items, both through COPIES degraded copies each (describe_copies); and
    what validation measured (into metrics)."""
    from sklearn.metrics import roc_auc_score  # here: the predictor imports this module, sklearn is slow to load

    (train_items, train_ai), (val_items, val_ai) = train, val
    if len(set(np.asarray(train_ai, bool).tolist())) < 2:
        raise ValueError("the face vote needs training faces of both classes")
    features = describe_copies(network, load, train_items, augment, seed, "face vote: training faces")
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    bank = unit_rows((features - mean) / scale).astype(np.float32)
    vote = FaceVote(network, bank, np.repeat(np.asarray(train_ai, bool), COPIES), mean, scale, KS[0], 0.5)
    val_features = describe_copies(network, load, val_items, augment, seed + 1, "face vote: validation faces")
    truth = np.repeat(np.asarray(val_ai, bool), COPIES)
    tried = {k: vote.vote(val_features, min(k, len(bank))) for k in KS}
    auc = {k: roc_auc_score(truth, p) if len(set(truth.tolist())) == 2 else 0.5 for k, p in tried.items()}
    best = max(auc, key=auc.get)  # the first of equals: the fewest neighbours
    vote.k, p = min(best, len(bank)), tried[best]
    vote.threshold = float(max(np.unique(p), key=lambda t: ((p >= t) == truth).mean()))
    figures = {"face_vote_k": float(vote.k), "face_vote_threshold": vote.threshold,
               "face_vote_val_roc_auc": float(auc[best]),
               "face_vote_val_accuracy": float(((p >= vote.threshold) == truth).mean())}  # fmt: skip
    return vote, figures


def fit_face_vote(
    params, train_rows: list[dict], val_rows: list[dict], folder: Path
) -> tuple[FaceVote, dict[str, float]]:
    """`fit` as the pipeline runs it, saved into `folder`: the manifests' rows read with split.max_pixels, the
    first class is AI, the train params' degradations and seed, the face network at model.face_vote_graph
    (exported to ONNX first, into `folder`, so that describing the faces runs on ONNX Runtime)."""
    from aivsreal.degradations import RandomDegrade
    from aivsreal.images import load_image

    def load(row: dict) -> Image.Image:
        return load_image(row["path"], params.split.max_pixels)

    def split(rows: list[dict]) -> tuple[list, np.ndarray]:
        return rows, np.array([row["label"] == params.data.class_names[0] for row in rows])

    network = FaceNetwork(Path(params.model.face_vote_graph))
    network.export_onnx(Path(folder) / ONNX_FILE)
    augment = RandomDegrade.from_train_params(params.train)
    vote, figures = fit(network, load, split(train_rows), split(val_rows), augment, params.train.seed)
    vote.save(folder, Path(params.model.face_vote_graph))
    return vote, figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The face vote's network (model.face_vote): " + __doc__.split("\n")[0])
    parser.add_argument("step", choices=["fetch"], help="fetch: download and check the face network's weights")
    parser.add_argument("--to", type=Path, default=DEFAULT_GRAPH.parent, help="folder (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(fetch(args.to))
    except FaceWeightsError as error:
        raise SystemExit(f"face_vote: {error}") from None


if __name__ == "__main__":
    main()
