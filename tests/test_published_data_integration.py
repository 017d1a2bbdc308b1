"""A dataset as people publish it, through the real `dvc repro`: its own train/valid/test folders kept
file for file, its own class folder names mapped by data.class_map, and results per source. The run
(helpers_team.py) is shared with test_team_server.py, which checks where it logged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from helpers_project import STAGES, run, stages_run, training_run
from helpers_team import CLASS_MAP
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score


def test_given_splits_class_map_and_per_source_results_through_dvc_repro(published_project):
    repo, env, written = published_project["repo"], published_project["env"], published_project["written"]

    assert stages_run(published_project["output"]) == list(STAGES)
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

    uri = published_project["uri"]  # the team server's when PostgreSQL is installed (test_team_server.py)
    run_id = training_run(repo, uri)["run_id"]
    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(run_id, "data")} | {
        a.path for a in client.list_artifacts(run_id, "evaluation")
    }
    assert {"data/dataset_card.json", "evaluation/per_source.json"} <= logged
    assert client.get_run(run_id).data.metrics["test_source_gan_accuracy"] == per_source["gan"]["accuracy"]
