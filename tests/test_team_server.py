"""Team setup, for real: PostgreSQL from Debian's packages, `mlflow server` on it with an artifact root,
the tiny pipeline pointed at it only through MLFLOW_TRACKING_URI, then `mlflow models serve` of the
champion it registered. The pipeline run is the one test_published_data_integration.py checks the data
of (helpers_team.py: one run for both). Without PostgreSQL this module skips and says so.
"""

from __future__ import annotations

import base64
import json
import sys

import pytest
import requests
from conftest import free_port, running_server
from helpers_project import STAGES, run, stages_run, training_run
from mlflow import MlflowClient

MODEL = "models:/ai-vs-real@champion"


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
