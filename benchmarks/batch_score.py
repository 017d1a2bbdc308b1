"""Batch scoring: the Spark command (local[*]) against the plain batch predictor, same folder, same model.

    python benchmarks/batch_score.py                        # data/sample (after `make pipeline`), the champion
    python benchmarks/batch_score.py --input ../shared/facebench/dev --model models:/ai-vs-real@champion
    python benchmarks/batch_score.py --copies 1 5           # also the folder 5 times over (hard links)

Both run as fresh processes, as a user would run them: `python -m aivsreal.serving.batch` and a
plain loop (`load_predictor`, then `load_many` + `predict_records` per batch). Prints whole-process
wall time and the scoring part alone: for Spark the two jobs (read + check, score + write) after
the JVM and the session are up; for the plain loop the batches after the model is loaded. The two
outputs are compared file by file. On one machine Spark adds a JVM, Python worker processes that
each import torch and load the model, and Arrow serialisation; it pays off on a cluster, not here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def plain(input_dir: str, model: str, batch_size: int, records_path: str) -> None:
    """The plain batch predictor in this process; prints its timings as JSON, writes the records."""
    started = time.perf_counter()
    from aivsreal.images import list_image_files
    from aivsreal.serving.artifacts import load_predictor

    predictor = load_predictor(model)
    paths, _ = list_image_files(Path(input_dir).resolve())
    loaded = time.perf_counter()
    records = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        records += predictor.predict_records(predictor.load_many(batch), batch_size)
    scored = time.perf_counter()
    table = pd.DataFrame(records, index=[str(p) for p in paths])
    table.to_parquet(records_path)
    print(json.dumps({"images": len(paths), "load": loaded - started, "score": scored - loaded}))


def run_plain(input_dir: Path, model: str, batch_size: int, out: Path) -> dict:
    command = [sys.executable, __file__, "--plain", "--input", str(input_dir), "--model", model,
               "--batch-size", str(batch_size), "--records", str(out)]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1]) | {"wall": time.perf_counter() - started}


def run_spark(input_dir: Path, model: str, batch_size: int, master: str, out: Path) -> dict:
    command = [sys.executable, "-m", "aivsreal.serving.batch", "--input", str(input_dir), "--output", str(out),
               "--model", model, "--master", master, "--batch-size", str(batch_size)]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"batch_score failed:\n{result.stderr[-3000:]}")
    timing = re.search(r"start ([\d.]+) s, read and check ([\d.]+) s, score and write ([\d.]+) s", result.stdout)
    images = int(re.search(r"scored (\d+) of", result.stdout).group(1))
    start, check, score = (float(x) for x in timing.groups())
    return {"images": images, "wall": wall, "start": start, "check": check, "score": score}


def replicate(folder: Path, copies: int, into: Path) -> Path:
    """`folder` `copies` times over as hard links (copies where links fail), distinct names."""
    from aivsreal.images import list_image_files

    paths, _ = list_image_files(folder)
    for i in range(copies):
        for path in paths:
            target = into / f"copy{i}" / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
    return into


def agreement(spark_out: Path, plain_out: Path) -> tuple[bool, float]:
    """(same labels, largest probability difference) over the files both scored."""
    spark = pd.read_parquet(spark_out).set_index("path")
    reference = pd.read_parquet(plain_out)
    spark = spark.loc[reference.index]
    columns = [c for c in reference.columns if c.startswith("p_")]
    return bool((spark["label"] == reference["label"]).all()), float(
        (spark[columns] - reference[columns]).abs().max().max()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default="data/sample", help="folder of images (default: data/sample)")
    parser.add_argument("--model", help="MLflow model URI (default: the champion, tracking.default_model_uri())")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call, both methods")
    parser.add_argument("--copies", type=int, nargs="+", default=[1], help="sizes: the folder this many times over")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # internal: one plain run
    parser.add_argument("--records", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain(args.input, args.model, args.batch_size, args.records)
        return
    if args.model is None:
        from aivsreal.tracking import default_model_uri

        args.model = default_model_uri()

    folder = Path(args.input).resolve()
    if not folder.is_dir():
        sys.exit(f"{folder} not found: run `make pipeline` (makes data/sample) or pass --input")
    print(f"# {platform.node()} | {os.cpu_count()} cores | {time.strftime('%Y-%m-%d')} | input {args.input} | "
          f"model {args.model} | master {args.master} | batch {args.batch_size}")  # fmt: skip
    print("| images | method | whole command s | images/s whole | start s | scoring s | images/s scoring |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for copies in args.copies:
            source = folder if copies == 1 else replicate(folder, copies, scratch / f"x{copies}")
            plain_out, spark_out = scratch / f"plain{copies}.parquet", scratch / f"spark{copies}.parquet"
            p = run_plain(source, args.model, args.batch_size, plain_out)
            s = run_spark(source, args.model, args.batch_size, args.master, spark_out)
            n = p["images"]
            print(f"| {n} | plain predictor (1 process) | {p['wall']:.1f} | {n / p['wall']:.1f} | "
                  f"{p['wall'] - p['score']:.1f} | {p['score']:.1f} | {n / p['score']:.1f} |")  # fmt: skip
            scoring = s["check"] + s["score"]
            print(f"| {s['images']} | Spark {args.master} | {s['wall']:.1f} | {s['images'] / s['wall']:.1f} | "
                  f"{s['wall'] - scoring:.1f} | {scoring:.1f} (read+check {s['check']:.1f}, "
                  f"score+write {s['score']:.1f}) | {s['images'] / scoring:.1f} |", flush=True)  # fmt: skip
            same_labels, difference = agreement(spark_out, plain_out)
            print(f"#   {n} images: same labels {same_labels}, largest probability difference {difference:.1e}")


if __name__ == "__main__":
    main()
