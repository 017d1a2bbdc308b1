"""What every stage entry point does first (parse --params, set up logging, load params), and how stages
write their tables and JSON."""

import argparse
import csv
import json
from pathlib import Path

from aivsreal.logs import setup_logging
from aivsreal.params import Params


def start(description: str, argv: list[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    setup_logging()
    return Params.load(args.params)


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
