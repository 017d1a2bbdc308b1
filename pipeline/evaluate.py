"""Stage `evaluate`: score the test split like the detection literature does, write DVC
metrics and plots, log them into the training run, and promote the model on the gate."""

import json
import logging
import re
import sys

import mlflow

from aivsreal import plots, tracking
from aivsreal.evaluation import Evaluation, evaluate, passes_gate, promotion_gate
from aivsreal.images import BadImageError
from aivsreal.manifests import read_manifest
from aivsreal.predictor import Predictor
from pipeline import stage
from pipeline.mlflow_run import training_run
from pipeline.paths import MANIFESTS, METRICS, MODEL_DIR, PLOTS, metric_files

log = logging.getLogger("pipeline.evaluate")


def main(argv: list[str] | None = None) -> None:
    params = stage.start(__doc__, argv)
    run_info = training_run(params, "evaluate")
    predictor = Predictor.from_dir(MODEL_DIR)
    try:
        result = evaluate(
            predictor,
            read_manifest(MANIFESTS["test"]),
            read_manifest(MANIFESTS["train"]),
            params.evaluate,
            unseen_sources=params.split.test_sources,
        )
    except BadImageError as error:
        sys.exit(f"evaluate: a test image no longer loads ({error}): re-run `dvc repro split`")
    gate = promotion_gate(params.evaluate, unseen_sources=bool(params.split.test_sources))
    result.metrics["promoted"] = passes_gate(result.metrics, gate)  # the version number lives in MLflow

    for name, content in metric_files(result.metrics, result.robustness).items():
        stage.write_json(METRICS / name, content)
    stage.write_json(METRICS / "per_source.json", result.per_source)
    write_plot_tables(result)
    figures = draw_figures(result, predictor.class_names)
    log_to_run(run_info, result, figures, predictor.class_names, gate, predictor.engine)
    for name, figure in figures.items():
        plots.save(figure, PLOTS / name)
    _log_outcome(result.metrics, run_info, gate)
    if len(result.per_source) > 1:
        log.info("per source, worst first (metrics/per_source.json): %s", ", ".join(
            f"{source}{' (unseen)' if row['unseen'] else ''} {row['accuracy']:.3f}"
            for source, row in result.per_source.items()))  # fmt: skip


def write_plot_tables(result: Evaluation) -> None:
    """The CSV files `dvc plots` draws (confusion, ROC, robustness) and every test prediction."""
    PLOTS.mkdir(exist_ok=True)
    predictions = result.predictions
    stage.write_csv(
        PLOTS / "confusion.csv", [{"actual": p["actual"], "predicted": p["predicted"]} for p in predictions]
    )
    stage.write_csv(PLOTS / "roc.csv", [dict(zip(result.roc, values)) for values in zip(*result.roc.values())])
    stage.write_csv(PLOTS / "test_predictions.csv", predictions)
    stage.write_csv(PLOTS / "robustness.csv", result.robustness)


def draw_figures(result: Evaluation, class_names: list[str]) -> dict:
    """The four PNG figures, by file name: confusion matrix, ROC, reliability, robustness."""
    metrics = result.metrics
    return {
        "confusion_matrix.png": plots.confusion_figure(result.confusion, class_names),
        "roc.png": plots.roc_figure(result.roc["fpr"], result.roc["tpr"], metrics["roc_auc"], class_names[0]),
        "reliability.png": plots.reliability_figure(
            result.reliability_before,
            result.reliability_after,
            metrics["temperature"],
            class_names[0],
            result.reliability_sweep,
        ),
        "robustness.png": plots.robustness_figure(result.robustness),
    }


def log_to_run(
    run_info: dict, result: Evaluation, figures: dict, class_names: list[str], gate: dict, engine: str
) -> None:
    """Test metrics, figures and tables into the training run, tagged with the engine that computed
    them (`evaluate_engine`: the one serving will use); the @champion alias if the gate passed."""
    promoted = result.metrics["promoted"]
    with mlflow.start_run(run_id=run_info["run_id"]):
        mlflow.log_metrics(_flat_test_metrics(result.metrics, class_names))
        for name, figure in figures.items():
            mlflow.log_figure(figure, f"evaluation/{name}")
        table = {"actual": [], "predicted": [], "count": []}
        for i, actual in enumerate(class_names):
            for j, guessed in enumerate(class_names):
                table["actual"].append(actual)
                table["predicted"].append(guessed)
                table["count"].append(int(result.confusion[i, j]))
        mlflow.log_table(table, "evaluation/confusion_matrix.json")
        mlflow.log_table({k: [row[k] for row in result.robustness] for k in result.robustness[0]},
                         "evaluation/robustness.json")  # fmt: skip
        mlflow.log_dict(result.per_source, "evaluation/per_source.json")
        mlflow.log_metrics(_per_source_run_metrics(result.per_source))
        mlflow.set_tags({"promoted": str(promoted).lower(), "promotion_gate": json.dumps(gate),
                         "evaluate_engine": engine})  # fmt: skip
        if "unseen_sources" in result.metrics:  # split.test_sources: held out whole, never trained on
            mlflow.set_tag("unseen_sources", ",".join(result.metrics["unseen_sources"]))
        if promoted:
            tracking.set_alias(run_info["registered_model"], run_info["model_version"])


def _log_outcome(metrics: dict, run_info: dict, gate: dict) -> None:
    log.info(
        "test accuracy %.4f, ROC AUC %.4f, AP %.4f, TPR@5%%FPR %.3f, EER %.3f on %d images",
        metrics["accuracy"], metrics["roc_auc"], metrics["average_precision"], metrics["tpr_at_fpr_5pct"],
        metrics["eer"], metrics["n_images"],
    )  # fmt: skip
    if "unseen_source_accuracy" in metrics:
        log.info(
            "held-out sources %s (%d test images, never trained on): accuracy %.4f, ROC AUC %.4f, wild accuracy "
            "%.4f; accuracy on the trained sources' test images %.4f", ", ".join(metrics["unseen_sources"]),
            metrics["unseen_source_images"], metrics["unseen_source_accuracy"], metrics["unseen_source_roc_auc"],
            metrics["unseen_source_wild_accuracy"], metrics.get("seen_source_accuracy", float("nan")),
        )  # fmt: skip
    if metrics["metadata_shortcut"]["warning"]:
        log.warning(
            "metadata alone predicts the label (balanced accuracy %.3f, mostly from %s): the data may leak "
            "the label through how files are stored", metrics["metadata_shortcut"]["balanced_accuracy"],
            metrics["metadata_shortcut"]["top_feature"],
        )  # fmt: skip
    if metrics["promoted"]:
        log.info("gate %s passed: %s version %s is now @%s", gate, run_info["registered_model"],
                 run_info["model_version"], tracking.CHAMPION)  # fmt: skip
    else:
        log.warning("gate %s not passed: version %s stays unpromoted", gate, run_info["model_version"])


def _per_source_run_metrics(per_source: dict[str, dict]) -> dict[str, float]:
    """`test_source_<source>_accuracy` (and _roc_auc, _wild_accuracy) for the MLflow UI's metric columns."""
    flat = {}
    for source, scores in per_source.items():
        name = re.sub(r"[^0-9A-Za-z_.-]", "_", source)  # MLflow metric names: letters, digits, _ - . / and space
        flat |= {f"test_source_{name}_{key}": float(scores[key]) for key in ("accuracy", "roc_auc", "wild_accuracy")
                 if scores[key] is not None}  # fmt: skip
    return flat


def _flat_test_metrics(metrics: dict, class_names: list[str]) -> dict[str, float]:
    """Every number in the metrics, as `test_<name>` for MLflow."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            flat[f"test_{key}"] = float(value)
        elif key in class_names:
            flat |= {f"test_{key}_{k}": float(value[k]) for k in ("precision", "recall", "f1")}
    flat["test_metadata_shortcut_balanced_accuracy"] = metrics["metadata_shortcut"]["balanced_accuracy"]
    return flat


if __name__ == "__main__":
    main()
