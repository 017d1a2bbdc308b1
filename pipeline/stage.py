"""What every stage entry point does first: parse --params, set up logging, load params."""

import argparse
import csv
import json
import sys
from pathlib import Path

from aivsreal import tracking
from aivsreal.logs import setup_logging
from aivsreal.params import Params
from pipeline.paths import MODEL_DIR


def start(description: str, argv: list[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    setup_logging()
    return Params.load(args.params)


def training_run(params: Params, stage: str) -> dict:
    """The MLflow run that trained models/model (found by its digest, so no run id sits in a git-tracked
    file) and the version it registered; exits with a clear message if the store does not have it."""
    tracking.configure_tracking(params.mlflow.tracking_uri)
    try:
        return tracking.training_run(MODEL_DIR, params.mlflow.experiment, params.mlflow.registered_model)
    except (FileNotFoundError, RuntimeError) as error:
        sys.exit(f"{stage}: {error}")


def write_csv(path: Path, rows: list[dict]) -> None:
    """A stage's table output (DVC plots read these): header from the first row's keys."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, content: dict) -> None:
    """A stage's JSON output (metrics, summaries): indented, with a final newline, the folder made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
