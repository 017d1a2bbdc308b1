"""Cross-source estimate: train on one facebench source, test on another it never saw.

    python benchmarks/cross_source.py                       # train on extra/, test on dev/
    python benchmarks/cross_source.py --train dev --test extra

Uses params.yaml with the `make facebench` overrides (128 px native crops, lr 3e-4, batch 32,
25 epochs, best on validation, no early stop); validation is a stratified 15 % of the training source. Prints
accuracy and ROC AUC on every image of the test source: an honest estimate for held-out faces
from a source like that one. Skips (exit 0) when ../shared/facebench is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from aivsreal.evaluation import evaluate
from aivsreal.params import Params
from aivsreal.predictor import Predictor
from aivsreal.split import scan_dataset
from aivsreal.training import calibrate, train

FACEBENCH = Path(__file__).resolve().parents[2] / "shared" / "facebench"
PRESET = {"image_size": 128, "resize": 0, "batch_size": 32, "lr": 0.0003, "epochs": 25, "patience": 25}


def rows_of(records) -> list[dict[str, str]]:
    return [{"path": r.path, "label": r.label, "sha256": r.sha256} for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="extra", help="source to train on (default: extra)")
    parser.add_argument("--test", default="dev", help="source to test on (default: dev)")
    args = parser.parse_args()
    if not FACEBENCH.is_dir():
        print(f"skipped: {FACEBENCH} not present")
        return
    params = Params.load("params.yaml")
    params = dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, **PRESET),
        model=dataclasses.replace(params.model, pretrained="none"),
    )
    classes = params.data.class_names
    train_records, _ = scan_dataset(FACEBENCH / args.train, classes, params.split.max_pixels)
    test_records, _ = scan_dataset(FACEBENCH / args.test, classes, params.split.max_pixels)
    rng = np.random.default_rng(params.split.seed)  # stratified 85/15 train/val within the source
    train_rows, val_rows = [], []
    for label in classes:
        members = [r for r in rows_of(train_records) if r["label"] == label]
        order = rng.permutation(len(members))
        cut = round(len(members) * 0.15)
        val_rows += [members[i] for i in order[:cut]]
        train_rows += [members[i] for i in order[cut:]]
    started = time.perf_counter()
    result = train(params, train_rows, val_rows)
    calibrate(result, val_rows, params.calibration)
    minutes = (time.perf_counter() - started) / 60
    metrics = evaluate(
        Predictor(result.model, result.config), rows_of(test_records), train_rows, params.evaluate
    ).metrics
    print("| train on | test on | train images | training min | accuracy | ROC AUC | balanced acc | TPR@5%FPR |")
    print("|---|---|---|---|---|---|---|---|")
    scores = " | ".join(f"{metrics[k]:.3f}" for k in ("accuracy", "roc_auc", "balanced_accuracy", "tpr_at_fpr_5pct"))
    print(f"| {args.train} | {args.test} | {len(train_rows)} | {minutes:.1f} | {scores} |")


if __name__ == "__main__":
    main()
