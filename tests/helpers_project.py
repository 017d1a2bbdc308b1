"""A throwaway copy of this project as a new user would have it: a fresh git repo with tiny params.

Shared by the integration tests that run the real pipeline (local store, team server).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import PROJECT, isolated_env, mlflow_uris_kept

# A few dozen 32-pixel images, two epochs: the whole pipeline in about a minute.
TINY = {
    "sample": {"n_per_class": 30, "size": 32},
    "train": {"epochs": 2, "patience": 2, "batch_size": 16, "image_size": 32, "resize": 32},
    "evaluate": {"min_accuracy": 0.0, "min_roc_auc": 0.0},  # the tiny model must be promoted
    "model": {"int8_max_drop": 100.0},  # keep the int8 graph whatever 12 validation images say (the default path)
}
STAGES = ("sample", "split", "train", "evaluate", "report")


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{output[-4000:]}"
    return output


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def set_params(repo: Path, changes: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def tiny_project(repo: Path) -> dict:
    """Copy the working tree's tracked files into `repo`, drop the pipeline's results, set TINY params, commit.

    Returns the environment to run its commands in: no MLFLOW_*/DVC_* from the caller, the copy's code first.
    """
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, tracked):
        source = PROJECT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    for generated in ("dvc.lock", "metrics", "plots"):  # start as a new user would after editing params
        shutil.rmtree(repo / generated, ignore_errors=True) if (repo / generated).is_dir() else (
            repo / generated
        ).unlink(missing_ok=True)
    set_params(repo, TINY)
    env = isolated_env(PYTHONPATH=str(repo / "src"))  # the copy's code, not the editable install's
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.com"
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny params"], repo, env)
    return env


def training_run(repo: Path, uri: str) -> dict:
    """The run that trained `repo`'s models/model and the version it registered, as the stages find it.

    Leaves MLflow's URIs as it found them: called from a module fixture, whose setup runs before conftest's
    per-test reset takes its snapshot, a URI left behind would answer for every later MlflowClient."""
    import mlflow

    from aivsreal import tracking

    with mlflow_uris_kept():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        return tracking.training_run(repo / "models" / "model", "ai-vs-real", "ai-vs-real")
