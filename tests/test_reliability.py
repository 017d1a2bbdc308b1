"""Faults injected into the real pipeline: a tracking server that is down, training killed mid-run.

Interrupted training restarts from scratch (the choice documented in pipeline/train.py and
docs/reliability.md): the killed run is marked KILLED, nothing half-done is registered or promoted,
and the next `dvc repro` trains, registers and promotes exactly one new model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import PROJECT, free_port, isolated_env
from helpers_project import run, set_params, stages_run, tiny_project
from mlflow import MlflowClient


def train_stage(uri: str) -> tuple[subprocess.CompletedProcess, float]:
    env = isolated_env(MLFLOW_TRACKING_URI=uri)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    return done, time.monotonic() - start


def test_train_fails_fast_naming_the_uri_when_the_server_refuses_connections():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done, seconds = train_stage(uri)
    assert done.returncode != 0 and uri in done.stderr and "not reachable" in done.stderr
    assert "Traceback" not in done.stderr
    assert seconds < 60, f"took {seconds:.0f} s"  # MLflow's own retries would take over 4 minutes


def test_train_fails_fast_when_the_server_accepts_but_never_answers():
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever reads or replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        done, seconds = train_stage(uri)
    assert done.returncode != 0 and uri in done.stderr and "not reachable" in done.stderr
    assert seconds < 60, f"took {seconds:.0f} s"


@pytest.fixture(scope="module")
def slow_project(tmp_path_factory):
    """A tiny project whose training lasts long enough to be killed in the middle."""
    repo = tmp_path_factory.mktemp("interrupted")
    env = tiny_project(repo)
    set_params(repo, {"train": {"epochs": 12, "patience": 12}})
    run(["git", "commit", "-qam", "longer training"], repo, env)
    return repo, env, MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")


def start_repro_and_kill_after_first_epoch(repo, env, client: MlflowClient, sig: int) -> str:
    """`dvc repro` in its own process group; once an epoch is logged, send `sig` to the group. Returns the run id."""

    def runs() -> list:
        experiment = (repo / "mlflow.db").exists() and client.get_experiment_by_name("ai-vs-real")
        return client.search_runs([experiment.experiment_id]) if experiment else []

    before = {r.info.run_id for r in runs()}
    repro = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            assert repro.poll() is None, "dvc repro ended before it could be interrupted"
            new = [r.info.run_id for r in runs() if r.info.run_id not in before]
            if new and client.get_metric_history(new[0], "val_loss"):
                os.killpg(repro.pid, sig)
                repro.wait(timeout=60)
                wait_for_group_to_exit(repro.pid)  # the stage outlives dvc by the time it takes to close its run
                return new[0]
            time.sleep(0.2)
        pytest.fail("no epoch was logged within 300 s")
    finally:
        if repro.poll() is None:
            os.killpg(repro.pid, signal.SIGKILL)


def wait_for_group_to_exit(group: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"processes of group {group} still running {timeout} s after the signal")


def test_interrupted_training_leaves_nothing_finished_and_the_next_repro_trains_from_scratch(slow_project):
    repo, env, client = slow_project

    killed = start_repro_and_kill_after_first_epoch(repo, env, client, signal.SIGTERM)

    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(killed).data.tags["interrupted"] == "signal"
    assert client.search_model_versions("name='ai-vs-real'") == []  # nothing registered
    assert not (repo / "models/model").exists()  # nothing saved for a later stage to pick up
    output = run(["dvc", "repro", "evaluate"], repo, env)  # up to the promotion; the report adds nothing here
    assert stages_run(output) == ["train", "evaluate"]  # sample and split had finished
    finished = [r for r in client.search_runs([client.get_experiment_by_name("ai-vs-real").experiment_id])
                if r.info.run_id != killed]  # fmt: skip
    assert len(finished) == 1 and finished[0].info.status == "FINISHED"
    versions = client.search_model_versions("name='ai-vs-real'")
    assert [v.run_id for v in versions] == [finished[0].info.run_id]
    assert client.get_model_version_by_alias("ai-vs-real", "champion").run_id == finished[0].info.run_id
    assert client.get_run(killed).info.status == "KILLED"


def test_training_killed_without_warning_is_closed_by_the_next_run(slow_project):
    repo, env, client = slow_project
    set_params(repo, {"train": {"epochs": 11, "patience": 11}})  # new params: train must run again
    versions_before = len(client.search_model_versions("name='ai-vs-real'"))

    orphan = start_repro_and_kill_after_first_epoch(repo, env, client, signal.SIGKILL)

    assert client.get_run(orphan).info.status == "RUNNING"  # kill -9: nobody could say otherwise
    assert len(client.search_model_versions("name='ai-vs-real'")) == versions_before
    run(["dvc", "repro", "train"], repo, env)  # the next training run closes the orphan
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(orphan).data.tags["interrupted"] == "process gone"
    assert len(client.search_model_versions("name='ai-vs-real'")) == versions_before + 1
