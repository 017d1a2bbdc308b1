"""What the face vote (model.face_vote) costs on this machine: answering with and without it, and fitting it.

    python benchmarks/face_vote_cost.py                      # facebench's dev/ faces, the facebench preset
    python benchmarks/face_vote_cost.py --faces 64 --threads 2

A network of the preset's shape (untrained: the cost does not depend on the weights) answers the same
faces alone and with a face vote fitted on the faces' own degraded copies (the bank holds COPIES per face,
as the train stage's). Prints images per second (Predictor.predict_proba, batches of 64; the trained
network on eager PyTorch in every row, so only the vote differs; the face network on ONNX Runtime as the
train stage saves it, and in PyTorch as without onnxruntime), the export time and the fitting rate;
benchmarks/RESULTS.md records the numbers. Needs the face network's weights (fetched when missing).
Skips (exit 0) without facebench.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from heldout import preset_params
from wild import FACEBENCH

from aivsreal import face_vote
from aivsreal.degradations import RandomDegrade
from aivsreal.images import load_image
from aivsreal.model import ModelConfig, build_model
from aivsreal.predictor import Predictor
from aivsreal.split import scan_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=200, help="faces answered and fitted on (default 200)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--graph", type=Path, default=face_vote.DEFAULT_GRAPH, help="the face network's model.json")
    args = parser.parse_args()
    if not (FACEBENCH / "dev").is_dir():
        print(f"skipped: {FACEBENCH / 'dev'} not found")
        return
    torch.set_num_threads(args.threads)
    params, _ = preset_params("params/facebench.yaml", [])
    rows = scan_dataset(FACEBENCH / "dev", params.data.class_names, params.split.max_pixels)[0]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[: args.faces]]  # both classes
    images = [load_image(row.path) for row in rows]
    is_ai = np.array([row.label == params.data.class_names[0] for row in rows])
    config = ModelConfig.from_params(params)
    model, _ = build_model(config)
    alone = Predictor(model, config)

    face_vote.ensure_weights(args.graph)
    network = face_vote.FaceNetwork(args.graph)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        network.export_onnx(Path(scratch) / face_vote.ONNX_FILE)
    export_seconds = time.perf_counter() - started
    augment = RandomDegrade.from_train_params(params.train)
    started = time.perf_counter()
    vote, _ = face_vote.fit(network, lambda image: image, (images, is_ai), (images[:40], is_ai[:40]), augment, 0)
    fit_seconds = time.perf_counter() - started
    joined = Predictor(model, config, face_vote=vote)
    # the same vote with the face network as the TensorFlow.js graph in PyTorch (no ONNX file): as without onnxruntime
    in_torch = face_vote.FaceVote(face_vote.FaceNetwork(args.graph), vote.bank, vote.is_ai, vote.mean, vote.scale,
                                  vote.k, vote.threshold)  # fmt: skip

    rates = {}
    rows = {
        "alone": alone,
        "with the face vote (face network on ONNX Runtime)": joined,
        "with the face vote (face network in PyTorch)": Predictor(model, config, face_vote=in_torch),
    }
    for name, predictor in rows.items():
        predictor.predict_proba(images[:8])  # warm-up
        started = time.perf_counter()
        predictor.predict_proba(images)
        rates[name] = len(images) / (time.perf_counter() - started)
    described = (len(images) + 40) * face_vote.COPIES
    print(f"{len(images)} facebench dev/ faces (256 px PNG); {args.threads} torch thread(s), ONNX Runtime's default")
    print("| answer | images/s |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} |")
    print(f"exporting the face network to ONNX: {export_seconds:.1f} s")
    print(f"fitting (ONNX Runtime): {described} degraded copies described in {fit_seconds:.1f} s "
          f"({described / fit_seconds:.1f} copies/s; {len(images) / fit_seconds:.1f} training faces/s)")  # fmt: skip


if __name__ == "__main__":
    main()
