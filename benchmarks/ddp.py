"""DistributedDataParallel on this machine: 2 gloo processes against 1 process, same params and data.

    python benchmarks/ddp.py                 # sample data manifests (after `make pipeline`), 3 epochs
    python benchmarks/ddp.py --epochs 5 --preset params/facebench.yaml   # any manifests/preset

Both runs go through `python -m aivsreal.training` (the training loop the train stage uses),
both under torchrun (`--nproc_per_node=1`, then 2). Prints wall time, training images per second
and the final validation metrics of both. On a 2-core CPU, 2 processes x 1 thread cannot beat
1 process x 2 threads: the number shows the cost of the distribution itself (gradient
all-reduce over gloo, duplicated work), not a speed-up; that needs more cores or GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import tempfile
from pathlib import Path

import yaml

from aivsreal.distributed import torchrun_command
from aivsreal.params import Params, load_overrides


def run(nproc: int, params_path: Path, train_csv: str, val_csv: str, out: Path) -> dict:
    args = ["--params", str(params_path), "--train", train_csv, "--val", val_csv, "--out", str(out)]
    subprocess.run(torchrun_command("aivsreal.training", nproc, args), check=True, capture_output=True)
    return json.loads((out / "history.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="data/processed/train.csv")
    parser.add_argument("--val", default="data/processed/val.csv")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--preset", help="overrides file applied to params.yaml")
    args = parser.parse_args()
    params = Params.load("params.yaml")
    if args.preset:
        params = params.with_overrides(load_overrides(args.preset))
    params = params.with_overrides({"train.epochs": args.epochs, "train.patience": args.epochs, "train.nproc": 2})
    n_train = sum(1 for _ in open(args.train)) - 1
    with tempfile.TemporaryDirectory() as folder:
        params_path = Path(folder) / "params.yaml"
        params_path.write_text(yaml.safe_dump(dataclasses.asdict(params)))
        print(f"# {n_train} training images, {args.epochs} epochs, batch {params.train.batch_size} in all, "
              f"image_size {params.train.image_size}, input_filter {params.model.input_filter}")  # fmt: skip
        print("| processes | threads each | wall s | train img/s | final val loss | final val accuracy |")
        print("|---|---|---|---|---|---|")
        for nproc in (1, 2):
            result = run(nproc, params_path, args.train, args.val, Path(folder) / f"p{nproc}")
            last = result["history"][-1]
            threads = 2 if nproc == 1 else 1  # torchrun sets OMP_NUM_THREADS=1 per process
            speed = n_train * args.epochs / result["seconds"]
            print(f"| {nproc} | {threads} | {result['seconds']:.1f} | {speed:.1f} | "
                  f"{last['val_loss']:.4f} | {last['val_accuracy']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
