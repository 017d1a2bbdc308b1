"""A dataset as people publish it, through one real `dvc repro` (helpers_team.py), logged to a team server
when PostgreSQL is installed: what the run did with the data (its own train/valid/test folders kept file for
file, its own class folder names mapped by data.class_map, results per source), then where it logged:
PostgreSQL from Debian's packages, `mlflow server` on it with an artifact root, the tiny pipeline pointed at it
only through MLFLOW_TRACKING_URI, then `mlflow models serve` of the champion it registered. One module for
both, so that test workers (pytest-xdist, one file per worker) run the pipeline once. Without PostgreSQL the
run logs to the project's sqlite store and only the team-server tests skip, saying why.
"""

from __future__ import annotations

import base64
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import free_port, running_server
from helpers_project import STAGES, run, stages_run, training_run
from helpers_team import CLASS_MAP, published_run
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

MODEL = "models:/ai-vs-real@champion"


@pytest.fixture(scope="module")
def published_project(tmp_path_factory):
    """The one `dvc repro` of the tiny pipeline on a published dataset (helpers_team.published_run)."""
    with published_run(tmp_path_factory.mktemp("published")) as project:
        yield project


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

    uri = published_project["uri"]  # the team server's when PostgreSQL is installed
    run_id = training_run(repo, uri)["run_id"]
    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(run_id, "data")} | {
        a.path for a in client.list_artifacts(run_id, "evaluation")
    }
    assert {"data/dataset_card.json", "evaluation/per_source.json"} <= logged
    assert client.get_run(run_id).data.metrics["test_source_gan_accuracy"] == per_source["gan"]["accuracy"]


@pytest.fixture(scope="module")
def team(published_project):
    """The shared pipeline run, logged to PostgreSQL + `mlflow server` through MLFLOW_TRACKING_URI alone."""
    if published_project["team"] is None:
        pytest.skip(published_project["no_team"])
    return published_project | published_project["team"]


def test_pipeline_logs_runs_and_registry_into_the_postgres_backed_server(team):
    repo, url = team["repo"], team["url"]
    assert stages_run(team["output"]) == list(STAGES)
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()  # nothing local
    info = training_run(repo, url)
    client = MlflowClient(url)
    run_ = client.get_run(info["run_id"])
    assert run_.info.status == "FINISHED" and run_.data.params["train.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(info["run_id"], "val_loss")] == [1, 2]
    champion = client.get_model_version_by_alias("ai-vs-real", "champion")
    assert str(champion.version) == info["model_version"] and champion.run_id == info["run_id"]

    import psycopg  # the server's rows really are in PostgreSQL

    with psycopg.connect(team["database"]) as connection:
        run_ids = [row[0] for row in connection.execute("SELECT run_uuid FROM runs")]
        aliases = list(connection.execute("SELECT name, alias, version FROM registered_model_aliases"))
    assert run_ids == [info["run_id"]]
    assert aliases == [("ai-vs-real", "champion", int(info["model_version"]))]
    stored = {p.name for p in team["artifacts"].rglob("*") if p.is_file()}  # the server's artifact root
    assert {"weights.pt", "config.json", "MLmodel", "confusion_matrix.png"} <= stored


def test_champion_served_from_the_team_server_matches_the_cli(team):
    repo, env = team["repo"], team["env"]
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", MODEL, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    images = sorted((repo / "data/published/test/gan").glob("*/*.png"))[::2]  # 2 fake, 2 real
    with running_server(command, port, "/ping", repo, env) as served:
        encoded = [[base64.b64encode(p.read_bytes()).decode()] for p in images]
        answer = requests.post(
            f"{served}/invocations", json={"dataframe_split": {"columns": ["image"], "data": encoded}}
        )
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
    cli = run([sys.executable, "-m", "aivsreal.serving.cli", "--json", "--model", MODEL, *map(str, images)], repo, env)
    expected = [json.loads(line) for line in cli.splitlines() if line.startswith("{")]
    assert [p["label"] for p in predictions] == [e["label"] for e in expected] and len(expected) == len(images)
    assert all(abs(p["p_ai"] - e["p_ai"]) < 1e-5 for p, e in zip(predictions, expected))
