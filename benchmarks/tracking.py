"""What MLflow bookkeeping costs per training run: the local SQLite store against a team server.

    python benchmarks/tracking.py                                   # local sqlite store only
    python benchmarks/tracking.py --server http://127.0.0.1:5000    # and a running `mlflow server`

For each store it does what the train and evaluate stages do, with the real saved model in
`models/model` (after `make pipeline`): start a run, log the resolved params, log per-epoch
metrics, log and register the pyfunc model (weights uploaded as artifacts), set @champion.
Prints seconds per step; run it beside a training run's wall time to see the share.
Each store gets its own throwaway experiment and registered model name.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from aivsreal.model import ModelConfig
from aivsreal.params import Params
from aivsreal.serving.artifacts import log_pyfunc_model
from aivsreal.serving.pyfunc import signature


def bookkeeping(uri: str, model_dir: Path, epochs: int) -> dict[str, float]:
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    params = Params.load("params.yaml").flat()
    class_names = ModelConfig.read(model_dir).class_names
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    mlflow.set_experiment(name)
    with mlflow.start_run():
        seconds["start run"] = time.perf_counter() - start
        tick = time.perf_counter()
        mlflow.log_params(params)
        seconds[f"log {len(params)} params"] = time.perf_counter() - tick
        tick = time.perf_counter()
        for epoch in range(1, epochs + 1):
            mlflow.log_metrics({k: 0.5 for k in ("train_loss", "val_loss", "val_accuracy", "lr", "seconds")}, epoch)
        seconds[f"{epochs} epochs x 5 metrics"] = time.perf_counter() - tick
        tick = time.perf_counter()
        info = log_pyfunc_model(model_dir, signature(class_names), None, name)
        seconds["log + register model"] = time.perf_counter() - tick
    tick = time.perf_counter()
    MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)
    seconds["set @champion"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="append", default=[], help="tracking server URI (repeatable)")
    parser.add_argument("--model-dir", type=Path, default=Path("models/model"))
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    weights_mb = sum(p.stat().st_size for p in args.model_dir.iterdir()) / 1e6
    with tempfile.TemporaryDirectory() as folder:
        stores = {"local sqlite": f"sqlite:///{folder}/mlflow.db", **{f"server {u}": u for u in args.server}}
        results = {label: bookkeeping(uri, args.model_dir, args.epochs) for label, uri in stores.items()}
    steps = list(next(iter(results.values())))
    print(f"# model folder {weights_mb:.1f} MB, {args.epochs} epochs; seconds per step")
    print("| step | " + " | ".join(results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for step in steps:
        print(f"| {step} | " + " | ".join(f"{r[step]:.2f}" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
