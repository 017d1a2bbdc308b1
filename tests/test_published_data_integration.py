"""A dataset as people publish it, through the real `dvc repro`: its own train/valid/test folders kept
file for file, its own class folder names mapped by data.class_map, and results per source."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from helpers_images import encode, random_image
from helpers_project import STAGES, run, set_params, stages_run, tiny_project, training_run
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

CLASS_MAP = {"fake": "ai", "FAKE": "ai", "real": "real", "REAL": "real"}


def publish(root: Path) -> dict[str, set[str]]:
    """root/{train,valid,test}/{gan,diffusion}/{fake|FAKE,real|REAL}/: brighter fakes (something to learn),
    diffusion's folders in upper case as some sets have them. The files written per split, as manifest paths."""
    written: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    seed = 0
    for folder, split, n in (("train", "train", 8), ("valid", "val", 3), ("test", "test", 4)):
        for source in ("gan", "diffusion"):
            for name in ("fake", "real"):
                name = name.upper() if source == "diffusion" else name
                for i in range(n):
                    seed += 1
                    lift = 128 * (name.lower() == "fake")
                    image = random_image((32, 32), seed).point(lambda v, lift=lift: v // 2 + lift)
                    path = root / folder / source / name / f"{i}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(encode(image, "PNG"))
                    written[split].add(f"data/published/{folder}/{source}/{name}/{i}.png")
    return written


def test_given_splits_class_map_and_per_source_results_through_dvc_repro(tmp_path):
    repo = tmp_path / "project"
    env = tiny_project(repo)
    written = publish(repo / "data" / "published")
    set_params(repo, {"data": {"dir": "data/published", "class_map": CLASS_MAP}})

    output = run(["dvc", "repro"], repo, env)

    assert stages_run(output) == list(STAGES)
    for split, files in written.items():  # kept file for file, labels as the model's classes
        rows = list(csv.DictReader((repo / f"data/processed/{split}.csv").open()))
        assert {row["path"] for row in rows} == files
        assert all(row["label"] == CLASS_MAP[Path(row["path"]).parent.name] for row in rows)
        assert {row["source"] for row in rows} == {"gan", "diffusion"}
    summary = json.loads((repo / "data/processed/split_summary.json").read_text())
    assert summary["layout"] == "given" and summary["cross_split_duplicates"]["images"] == 0
    assert summary["dataset_card"]["split_folders"] == {"train": "train", "val": "valid", "test": "test"}

    per_source = json.loads((repo / "metrics/per_source.json").read_text())
    predictions = list(csv.DictReader((repo / "plots/test_predictions.csv").open()))
    assert set(per_source) == {"gan", "diffusion"}
    ranks = [(row["accuracy"], row["wild_accuracy"]) for row in per_source.values()]
    assert ranks == sorted(ranks)  # worst first
    for source, scores in per_source.items():  # the numbers match a recount from the predictions
        mine = [p for p in predictions if p["source"] == source]
        assert scores["n_images"] == len(mine) == 8
        assert scores["accuracy"] == np.mean([p["actual"] == p["predicted"] for p in mine])
        auc = roc_auc_score([p["actual"] == "ai" for p in mine], [float(p["p_ai"]) for p in mine])
        assert scores["roc_auc"] == auc
        assert scores["real_recall"] == np.mean([p["predicted"] == "real" for p in mine if p["actual"] == "real"])

    report = (repo / "reports/report.md").read_text()
    assert "in the data's own splits (train = train/, val = valid/, test = test/), kept file for file" in report
    assert "Dataset card" in report
    table = report[report.index("## Per source") :]
    assert table.index(f"| {list(per_source)[0]} |") < table.index(f"| {list(per_source)[1]} |")  # worst first

    summary_text = run(["python", "-m", "pipeline.summary"], repo, env)  # what `make pipeline` prints last
    worst, scores = next(iter(per_source.items()))
    assert f"worst source      {worst}: accuracy {scores['accuracy']:.3f}" in summary_text

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    run_id = training_run(repo, uri)["run_id"]
    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(run_id, "data")} | {
        a.path for a in client.list_artifacts(run_id, "evaluation")
    }
    assert {"data/dataset_card.json", "evaluation/per_source.json"} <= logged
    assert client.get_run(run_id).data.metrics["test_source_gan_accuracy"] == per_source["gan"]["accuracy"]
