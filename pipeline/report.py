"""Stage `report`: reports/report.md and report.html from the split, train and evaluate outputs."""

import argparse
import csv
import json
import logging
import shutil
import sys

import mlflow

from aivsreal import plots, tracking
from aivsreal.logs import setup_logging
from aivsreal.params import Params
from aivsreal.report import Figure, Heading, Paragraph, Table, to_html, to_markdown
from pipeline.paths import METRICS, PLOTS, REPORTS, RUN_INFO, SPLIT_SUMMARY

log = logging.getLogger("pipeline.report")


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
        sys.exit(f"report: {error}")
    split = json.loads(SPLIT_SUMMARY.read_text())
    trained = json.loads((METRICS / "train.json").read_text())
    tested = json.loads((METRICS / "evaluate.json").read_text())
    with open(PLOTS / "train_history.csv", newline="") as handle:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]

    figures = REPORTS / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plots.save(plots.training_curves_figure(history, trained["best_epoch"]), figures / "training_curves.png")
    for name in ("confusion_matrix.png", "roc.png"):
        shutil.copyfile(PLOTS / name, figures / name)

    blocks = build_blocks(params, split, trained, tested, run_info, figures)
    (REPORTS / "report.md").write_text(to_markdown(blocks, REPORTS))
    (REPORTS / "report.html").write_text(to_html(blocks, params.report.title))
    with mlflow.start_run(run_id=run_info["run_id"]):
        mlflow.log_artifact(str(REPORTS / "report.html"), "report")
        mlflow.log_artifact(str(REPORTS / "report.md"), "report")
        mlflow.log_artifacts(str(figures), "report/figures")
    log.info("wrote %s and %s", REPORTS / "report.md", REPORTS / "report.html")


def build_blocks(params, split, trained, tested, run_info, figures):
    class_names = params.data.class_names
    counts = split["counts"]
    seed = params.report.seed_accuracy
    accuracy = tested["accuracy"]
    verdict = "better than" if accuracy > seed else "not better than"
    return [
        Heading(params.report.title, 1),
        Paragraph(
            f"Model {run_info['registered_model']} version {run_info['model_version']} "
            f"(MLflow run {run_info['run_id']}). Pretrained weights used: {trained['pretrained_used']}. "
            f"Promoted to @champion: {'yes' if tested['promoted'] else 'no'} "
            f"(gate: accuracy >= {params.evaluate.min_accuracy}, ROC AUC >= {params.evaluate.min_roc_auc})."
        ),
        Heading("Data"),
        Paragraph(f"Images from {split['data_dir']}, split {params.split.train}/{params.split.val}/{params.split.test}"
                  f" (seed {params.split.seed}), duplicates kept within one split."),
        Table(
            ["split", *class_names, "total"],
            [[name, *[counts[name].get(c, 0) for c in class_names], sum(counts[name].values())]
             for name in ("train", "val", "test", "rejected")],
        ),
        Paragraph(f"{counts['total_rejected']} file(s) left out; reasons in data/processed/split_summary.json."),
        Heading("Training"),
        Paragraph(
            f"ResNet18, fine-tuning `{params.train.finetune}`, {params.train.optimizer} lr {params.train.lr}, "
            f"batch {params.train.batch_size}, image size {params.train.image_size}. Best epoch "
            f"{trained['best_epoch']} of {trained['epochs_run']} (validation loss {trained['best_val_loss']:.4f}, "
            f"validation accuracy {trained['best_val_accuracy']:.4f})."
        ),
        Figure(figures / "training_curves.png", "Loss and accuracy per epoch"),
        Heading("Test metrics"),
        Table(["metric", "value"], [["accuracy", accuracy], ["ROC AUC", tested["roc_auc"]],
                                    ["average precision", tested["average_precision"]],
                                    ["images", tested["n_images"]]]),
        Table(["class", "precision", "recall", "F1", "support"],
              [[c, tested[c]["precision"], tested[c]["recall"], tested[c]["f1"], tested[c]["support"]]
               for c in class_names]),
        Figure(figures / "confusion_matrix.png", "Confusion matrix on the test split"),
        Figure(figures / "roc.png", "ROC curve on the test split"),
        Heading("Compared with the seed project"),
        Paragraph(
            f"The seed reported {seed:.2%} test accuracy (F1 0.70 AI / 0.69 real) on its own data. "
            f"This run: {accuracy:.2%}, {verdict} the seed's figure. The datasets differ, so the comparison "
            "only means something when this pipeline runs on comparable face data."
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
