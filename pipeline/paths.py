"""Where each stage writes; dvc.yaml declares the same paths as outs, metrics and plots."""

import json
from pathlib import Path

SAMPLE_DIR = Path("data/sample")
PROCESSED = Path("data/processed")
MANIFESTS = {name: PROCESSED / f"{name}.csv" for name in ("train", "val", "test")}
SPLIT_SUMMARY = PROCESSED / "split_summary.json"
FACE_CROPS = PROCESSED / "faces"  # data.faces: crop: the face crops the manifests list
FACES_TABLE = PROCESSED / "faces.csv"  # data.faces: crop: faces found per file
MODEL_DIR = Path("models/model")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")


def dvc_outputs(root: Path) -> list[str]:
    """Every file or folder a stage of `root`/dvc.yaml writes (outs, metrics, plots), and dvc.lock."""
    import yaml

    stages = (yaml.safe_load((Path(root) / "dvc.yaml").read_text()) or {}).get("stages", {})
    outputs = ["dvc.lock"]
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                outputs.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return outputs


def is_sample_data(data_dir: str | Path) -> bool:
    """True when `data.dir` is the built-in sample: the model trained on it is a demo (ModelConfig.demo)."""
    return Path(data_dir).resolve() == SAMPLE_DIR.resolve()


HEADLINE = ("accuracy", "roc_auc", "wild_accuracy", "eer", "n_images", "promoted")
# With held-out sources (split.test_sources) the headline also carries the unseen-source scores.
UNSEEN_HEADLINE = ("unseen_source_accuracy", "unseen_source_roc_auc", "unseen_source_wild_accuracy",
                   "seen_source_accuracy")  # fmt: skip
CALIBRATION = ("temperature", "threshold", "ece_uncalibrated", "ece_calibrated", "ece_sweep_pooled")


def metric_files(metrics: dict, robustness: list[dict]) -> dict[str, dict]:
    """The evaluate stage's metrics, grouped into small files: `dvc metrics show` reads the headline
    (evaluate.json, the only one declared as DVC metrics); `dvc metrics show metrics/<file>` each group."""
    sweep = {}
    for row in robustness:
        level = {"accuracy": row["accuracy"], "roc_auc": row["roc_auc"]}
        sweep.setdefault(row["kind"], {})[f"{row['level']:g}"] = level
    sweep["wild"] = {"accuracy": metrics["wild_accuracy"], "roc_auc": metrics["wild_roc_auc"]}
    grouped = {*HEADLINE, *UNSEEN_HEADLINE, *CALIBRATION, "metadata_shortcut", "wild_roc_auc"}
    return {
        "evaluate.json": {key: metrics[key] for key in HEADLINE + UNSEEN_HEADLINE if key in metrics},
        "test_details.json": {key: value for key, value in metrics.items() if key not in grouped},
        "calibration.json": {key: metrics[key] for key in CALIBRATION},
        "robustness.json": sweep,
        "shortcut.json": metrics["metadata_shortcut"],
    }


def read_metrics() -> dict:
    """Every evaluate metric in one dict again, as `evaluate()` returned it (the report reads them so)."""
    files = {
        name: json.loads((METRICS / name).read_text())
        for name in ("evaluate.json", "test_details.json", "calibration.json", "shortcut.json")
    }
    wild = json.loads((METRICS / "robustness.json").read_text())["wild"]
    return (files["evaluate.json"] | files["test_details.json"] | files["calibration.json"]
            | {"metadata_shortcut": files["shortcut.json"], "wild_roc_auc": wild["roc_auc"]})  # fmt: skip
