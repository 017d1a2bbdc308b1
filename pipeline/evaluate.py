"""Stage `evaluate`: score the test split, write DVC metrics/plots, log them, promote on the gate."""

import argparse
import csv
import json
import logging
import sys

import mlflow

from aivsreal import plots, tracking
from aivsreal.images import BadImageError
from aivsreal.logs import setup_logging
from aivsreal.metrics import classification_metrics, confusion, roc_points
from aivsreal.params import Params
from aivsreal.predictor import Predictor
from aivsreal.training import read_manifest
from pipeline.paths import MANIFESTS, METRICS, MODEL_DIR, PLOTS, RUN_INFO

log = logging.getLogger("pipeline.evaluate")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    setup_logging()
    params = Params.load(args.params)
    tracking.configure_tracking(params.mlflow.tracking_uri)
    try:
        run_info = tracking.read_run_info(RUN_INFO)
    except (FileNotFoundError, RuntimeError) as error:
        sys.exit(f"evaluate: {error}")

    predictor = Predictor.from_dir(MODEL_DIR)
    class_names = predictor.class_names
    rows = read_manifest(MANIFESTS["test"])
    try:
        images = [predictor.load(row["path"]) for row in rows]
    except BadImageError as error:
        sys.exit(f"evaluate: a test image no longer loads ({error}): re-run `dvc repro split`")
    probabilities = predictor.predict_proba(images, params.evaluate.batch_size)
    predicted = predictor.labels(probabilities)
    truth = [row["label"] for row in rows]
    p_positive = probabilities[:, 0]

    metrics = classification_metrics(truth, predicted, p_positive, class_names)
    matrix = confusion(truth, predicted, class_names)
    gate = {"min_accuracy": params.evaluate.min_accuracy, "min_roc_auc": params.evaluate.min_roc_auc}
    promoted = metrics["accuracy"] >= gate["min_accuracy"] and metrics["roc_auc"] >= gate["min_roc_auc"]
    metrics |= {
        "threshold": predictor.config.threshold,
        "promoted": promoted,
        "model_version": run_info["model_version"],
    }

    METRICS.mkdir(exist_ok=True)
    (METRICS / "evaluate.json").write_text(json.dumps(metrics, indent=2) + "\n")
    PLOTS.mkdir(exist_ok=True)
    _write_csv(PLOTS / "confusion.csv", ["actual", "predicted"], zip(truth, predicted))
    roc = roc_points(truth, p_positive, class_names[0])
    _write_csv(PLOTS / "roc.csv", ["fpr", "tpr", "threshold"], zip(roc["fpr"], roc["tpr"], roc["threshold"]))
    _write_csv(
        PLOTS / "test_predictions.csv",
        ["path", "actual", "predicted", f"p_{class_names[0]}"],
        zip([row["path"] for row in rows], truth, predicted, p_positive),
    )
    confusion_fig = plots.confusion_figure(matrix, class_names)
    roc_fig = plots.roc_figure(roc["fpr"], roc["tpr"], metrics["roc_auc"], class_names[0])

    with mlflow.start_run(run_id=run_info["run_id"]):
        mlflow.log_metrics(_flat_test_metrics(metrics, class_names))
        mlflow.log_figure(confusion_fig, "evaluation/confusion_matrix.png")
        mlflow.log_figure(roc_fig, "evaluation/roc.png")
        table = {"actual": [], "predicted": [], "count": []}
        for i, actual in enumerate(class_names):
            for j, guessed in enumerate(class_names):
                table["actual"].append(actual)
                table["predicted"].append(guessed)
                table["count"].append(int(matrix[i, j]))
        mlflow.log_table(table, "evaluation/confusion_matrix.json")
        mlflow.set_tags({"promoted": str(promoted).lower(), "promotion_gate": json.dumps(gate)})
        if promoted:
            tracking.set_alias(run_info["registered_model"], run_info["model_version"])
    plots.save(confusion_fig, PLOTS / "confusion_matrix.png")
    plots.save(roc_fig, PLOTS / "roc.png")

    log.info(
        "test accuracy %.4f, ROC AUC %.4f, AP %.4f on %d images",
        metrics["accuracy"], metrics["roc_auc"], metrics["average_precision"], len(rows),
    )  # fmt: skip
    if promoted:
        log.info("gate %s passed: %s version %s is now @%s", gate, run_info["registered_model"],
                 run_info["model_version"], tracking.CHAMPION)  # fmt: skip
    else:
        log.warning("gate %s not passed: version %s stays unpromoted", gate, run_info["model_version"])


def _flat_test_metrics(metrics: dict, class_names: list[str]) -> dict[str, float]:
    flat = {f"test_{k}": float(metrics[k]) for k in ("accuracy", "roc_auc", "average_precision")}
    for name in class_names:
        flat |= {f"test_{name}_{k}": float(metrics[name][k]) for k in ("precision", "recall", "f1")}
    return flat


def _write_csv(path, header, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


if __name__ == "__main__":
    main()
