"""Team setup, for real: PostgreSQL from Debian's packages, `mlflow server` on it with an artifact root,
the tiny pipeline pointed at it only through MLFLOW_TRACKING_URI, then `mlflow models serve` of the
champion it registered.

PostgreSQL runs from a throwaway data folder on 127.0.0.1 and is stopped after; `.ci/run` installs the
package when it is missing. Without it this module skips and says so.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from conftest import free_port, running_server
from helpers_project import STAGES, run, stages_run, tiny_project, training_run
from mlflow import MlflowClient

MODEL = "models:/ai-vs-real@champion"


def postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    candidates = [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]
    for pg_ctl in filter(None, candidates):
        if Path(pg_ctl).with_name("initdb").exists():
            return Path(pg_ctl).resolve().parent
    return None


@contextlib.contextmanager
def postgres_server():
    """A PostgreSQL server on 127.0.0.1 with a database `mlflow`; yields its SQLAlchemy URI."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="aivsreal-pg-"))  # not under pytest's root-only tmp folder
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as Debian's `postgres` user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without `runuser` to start PostgreSQL as another user")
        shutil.chown(folder, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), folder / "data"
    try:
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w",
             "start"],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        import psycopg

        with psycopg.connect(f"postgresql://mlflow@127.0.0.1:{port}/postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """PostgreSQL + `mlflow server` + the tiny pipeline run against it with MLFLOW_TRACKING_URI alone."""
    root = tmp_path_factory.mktemp("team")
    with postgres_server() as database:
        port = free_port()
        artifacts = root / "artifacts"
        command = ["mlflow", "server", "--backend-store-uri", database, "--artifacts-destination", str(artifacts),
                   "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]  # fmt: skip
        with running_server(command, port, "/health", root, dict(os.environ), timeout=120) as url:
            repo = root / "project"
            repo.mkdir()
            env = tiny_project(repo) | {"MLFLOW_TRACKING_URI": url}
            output = run(["dvc", "repro"], repo, env)
            yield {"repo": repo, "env": env, "url": url, "database": database, "artifacts": artifacts, "output": output}


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
    images = sorted((repo / "data/sample/ai").glob("*.png"))[:2] + sorted((repo / "data/sample/real").glob("*.png"))[:2]
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
