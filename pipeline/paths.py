"""Where each stage writes; dvc.yaml declares the same paths as outs, metrics and plots."""

from pathlib import Path

SAMPLE_DIR = Path("data/sample")
PROCESSED = Path("data/processed")
MANIFESTS = {name: PROCESSED / f"{name}.csv" for name in ("train", "val", "test")}
SPLIT_SUMMARY = PROCESSED / "split_summary.json"
MODEL_DIR = Path("models/model")
RUN_INFO = Path("models/mlflow_run.json")
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
