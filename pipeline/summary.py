"""What `make pipeline` and `make facebench` print last: the few numbers that matter, in a short table
(at most 100 columns), and where to look next. `dvc metrics show` has the headline, metrics/*.json the rest."""

import argparse
import json
import sys
import textwrap

from aivsreal.evaluation import describe_gate, promotion_gate
from aivsreal.input_range import DEMO_NOTICE
from aivsreal.params import Params
from pipeline.mlflow_run import training_run
from pipeline.paths import METRICS, REPORTS, is_sample_data

WIDTH = 100


def summary_lines(tested: dict, run_info: dict, data_dir: str, gate: dict, per_source: dict | None = None) -> list[str]:
    name, version = run_info["registered_model"], run_info["model_version"]
    status = "@champion" if tested["promoted"] else "not promoted (below the gate)"
    rows = [
        ("model", f"{name} version {version}, {status}"),
        ("data", data_dir + ("  (demo: built-in sample faces)" if is_sample_data(data_dir) else "")),
        ("test accuracy", f"{tested['accuracy']:.3f}  (test images as stored, {tested['n_images']} images)"),
        ("ROC AUC", f"{tested['roc_auc']:.3f}"),
        ("wild accuracy", f"{tested['wild_accuracy']:.3f}  (JPEG, WebP, half size, social; both classes alike)"),
        *unseen_rows(tested),
        *worst_source_rows(per_source or {}),
        ("equal error rate", f"{tested['eer']:.3f}"),
        ("gate", describe_gate(gate)),
        ("report", f"{REPORTS / 'report.html'}  (and report.md)"),
        ("next", "make ui (MLflow runs)  make serve  make app  dvc metrics show"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}"[:WIDTH] for label, value in rows]
    if is_sample_data(data_dir):
        lines += textwrap.wrap(f"note: this is a {DEMO_NOTICE}", WIDTH)
    rule = "-" * min(WIDTH, max(len(line) for line in lines))
    return [rule, *lines, rule]


def unseen_rows(tested: dict) -> list[tuple[str, str]]:
    """With held-out sources (split.test_sources): how the model does on the sources it never trained on."""
    if "unseen_source_accuracy" not in tested:
        return []
    return [
        ("unseen sources", f"accuracy {tested['unseen_source_accuracy']:.3f}, wild "
                           f"{tested['unseen_source_wild_accuracy']:.3f}  (held out whole: split.test_sources)"),
    ]  # fmt: skip


def worst_source_rows(per_source: dict[str, dict]) -> list[tuple[str, str]]:
    """With several sources in the test split: the worst one (metrics/per_source.json is ordered so)."""
    if len(per_source) < 2:
        return []
    source, scores = next(iter(per_source.items()))
    return [("worst source", f"{source}{' (unseen)' if scores['unseen'] else ''}: accuracy {scores['accuracy']:.3f}, "
                             f"wild {scores['wild_accuracy']:.3f}  (all: metrics/per_source.json)")]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    params = Params.load(parser.parse_args(argv).params)
    try:
        tested = json.loads((METRICS / "evaluate.json").read_text())
    except FileNotFoundError as error:
        sys.exit(f"summary: {error.filename} not found: run `dvc repro` (or `make pipeline`) first")
    run_info = training_run(params, "summary")
    gate = promotion_gate(params.evaluate, unseen_sources=bool(params.split.test_sources))
    per_source_file = METRICS / "per_source.json"
    per_source = json.loads(per_source_file.read_text()) if per_source_file.exists() else {}
    print("\n".join(summary_lines(tested, run_info, params.data.dir, gate, per_source)))


if __name__ == "__main__":
    main()
