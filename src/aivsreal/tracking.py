"""MLflow at the edges: where the store is, one run per training, the registry, its alias and the model card.

The store defaults to `sqlite:///mlflow.db` in the project root with artifacts in
`mlartifacts/`; MLFLOW_TRACKING_URI overrides both, so a team server needs no code change.
Relative locations are made absolute against the *project* root, also when DVC runs the
stage in a temporary copy (`dvc exp run --temp` / `--queue` work in .dvc/tmp/exps/...).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow 3's UI opens an experiment on its GenAI overview (traces) unless told it holds model training:
# the experiment tag and the UI's `workflowType` query parameter (both read by the 3.17 UI).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
UI_WORKFLOW = "workflowType=machine_learning"
ARTIFACTS_DIR = "mlartifacts"
CHAMPION = "champion"
# What every interface says when it finds no model to load.
NO_MODEL_HINT = "Train, evaluate and register one with `make pipeline` (or `dvc repro`) in the project folder"
MODEL_DIGEST_TAG = "model_digest"  # on the training run: tracking.model_digest of its saved model


def project_root(start: Path | None = None) -> Path:
    """The user's project folder: seen through a DVC experiment's temporary copy if needed, else the
    nearest folder at or above `start` (the working directory) holding dvc.yaml, else the project
    this package was installed from (`pip install -e .`), else `start` itself. So the CLI, the app
    and batch scoring find the project's store from any folder."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    installed_from = Path(__file__).resolve().parents[2]
    return installed_from if (installed_from / "dvc.yaml").is_file() else here


def require_store(uri: str) -> None:
    """Reading a model must not create a store: a local sqlite store that does not exist is an error
    that says where it was looked for (MLflow would create an empty one and then find nothing)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])  # sqlite:////abs/path or sqlite:///relative/to/cwd
        if not path.is_file():
            raise FileNotFoundError(
                f"no MLflow store at {path}. {NO_MODEL_HINT}, run this from inside the project, or set "
                "MLFLOW_TRACKING_URI"
            )


def resolve_tracking_uri(configured: str = DEFAULT_TRACKING_URI, root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else `configured`; relative sqlite/file paths made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    root = root or project_root()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri[len('sqlite:///') :]).resolve()}"
    if "://" not in uri:  # a plain folder: MLflow's file store
        return (root / uri).resolve().as_uri()
    return uri


def configure_tracking(configured: str = DEFAULT_TRACKING_URI, root: Path | None = None) -> str:
    """Point this process's MLflow client at the store; returns the absolute URI."""
    uri = resolve_tracking_uri(configured, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def check_tracking_store(uri: str, timeout_s: int = 5) -> None:
    """Fail before training starts when the store cannot be reached: one try, `timeout_s` seconds.

    MLflow's HTTP client otherwise retries with back-off for minutes (measured: 4 min 15 s
    against a closed port) before it gives up.
    """
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {name: os.environ.get(name) for name in quick}
    os.environ.update(quick)
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:
        raise RuntimeError(
            f"MLflow tracking store {uri} is not reachable ({type(error).__name__}: {str(error)[:200]}). "
            "Start the server or unset MLFLOW_TRACKING_URI to use the local sqlite store."
        ) from error
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def experiment_id(name: str, root: Path | None = None) -> str:
    """Get or create the experiment; a new local one keeps artifacts in <project>/mlartifacts."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if not EXPERIMENT_KIND.items() <= experiment.tags.items():  # a store made before the tag existed
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = ((root or project_root()) / ARTIFACTS_DIR).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def ui_url(base: str, experiment: str) -> str:
    """Where the MLflow UI shows the experiment's training runs (not the GenAI overview); the
    experiments list when the store has no such experiment yet. Reads the store, never creates one."""
    try:
        require_store(mlflow.get_tracking_uri())
        found = MlflowClient().get_experiment_by_name(experiment)
    except Exception:  # no store or no server: the list page still opens in the training view
        found = None
    page = f"experiments/{found.experiment_id}/runs" if found is not None else "experiments"
    return f"{base.rstrip('/')}/#/{page}?{UI_WORKFLOW}"


def main(argv: list[str] | None = None) -> None:
    """`python -m aivsreal.tracking ui-url --port 5000`: the link `make ui` prints;
    `python -m aivsreal.tracking default-model`: the model `make serve` serves unless MODEL=... is given."""
    import argparse

    from aivsreal.params import Params

    parser = argparse.ArgumentParser(prog="python -m aivsreal.tracking", description=main.__doc__)
    parser.add_argument("command", choices=["ui-url", "default-model"])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    if args.command == "default-model":
        print(default_model_uri(project_root() / args.params))
        return
    params = Params.load(project_root() / args.params)
    configure_tracking(params.mlflow.tracking_uri)
    print(ui_url(f"http://127.0.0.1:{args.port}", params.mlflow.experiment))


def process_tags() -> dict[str, str]:
    """Which process owns a run: lets a later run on this host close it if that process died."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def close_orphan_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs still RUNNING whose training process on this host is gone (kill -9, power loss).

    Only runs tagged with this host's name and a pid that no longer exists are touched, so a
    colleague's live run on a shared server is never closed. Returns the run ids closed.
    """
    client = MlflowClient()
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=100
    )
    closed = []
    for run in running:
        pid = run.data.tags.get("pid", "")
        if pid.isdigit() and not _alive(int(pid)):
            client.set_tag(run.info.run_id, "interrupted", "process gone")
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    if closed:
        log.warning("marked %d run(s) KILLED whose training process had died: %s", len(closed), ", ".join(closed))
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def git_commit(root: Path | None = None, ignore: list[str] | tuple[str, ...] = ()) -> str:
    """HEAD's commit, with `-dirty` when tracked files differ from it; `unknown` outside git.

    `ignore`: paths whose changes do not count, e.g. the pipeline's own outputs, which `dvc repro`
    deletes before re-running their stage (a fresh clone's run was tagged -dirty for that alone).
    """
    cwd = root or Path.cwd()
    excluded = [f":(exclude){path}" for path in ignore]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
            cwd=cwd, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def model_digest(model_dir: Path) -> str:
    """SHA-256 of a saved-model folder's files (names and bytes): the same weights give the same digest
    in any clone, so it names a model in git-tracked outputs where a run id or version number would not."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def training_run(model_dir: Path, experiment: str, registered_model: str, digest: str | None = None) -> dict:
    """The newest finished run of `experiment` tagged with `model_dir`'s digest (MODEL_DIGEST_TAG; pass
    `digest` when it is already computed), the version of `registered_model` it registered, and the
    digest; fails clearly when the store has no such run.

    Restored by DVC's run cache, the weights still find the run that trained them."""
    if not Path(model_dir).is_dir() or not any(Path(model_dir).iterdir()):
        raise FileNotFoundError(f"{model_dir} holds no trained model: run the train stage first (`dvc repro train`)")
    digest = digest or model_digest(model_dir)
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    runs = []
    if found is not None:
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.{MODEL_DIGEST_TAG} = '{digest}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    versions = (
        client.search_model_versions(f"name = '{registered_model}' and run_id = '{runs[0].info.run_id}'")
        if runs
        else []
    )
    if not versions:
        raise RuntimeError(
            f"no run in the tracking store {mlflow.get_tracking_uri()} (experiment {experiment!r}) trained and "
            f"registered the model in {model_dir} ({MODEL_DIGEST_TAG} {digest[:12]}): the store was moved, "
            "MLFLOW_TRACKING_URI changed or the weights came from elsewhere. Re-train and register with "
            "`dvc repro --force`."
        )
    run, version = runs[0], str(max(int(v.version) for v in versions))
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "registered_model": registered_model,
        "model_version": version,
        "model_uri": f"models:/{registered_model}/{version}",
        "model_digest": digest,
    }


def set_alias(registered_model: str, version: str, alias: str = CHAMPION) -> None:
    MlflowClient().set_registered_model_alias(registered_model, alias, str(version))


def default_model_uri(params_file: Path | None = None) -> str:
    """The model the CLI, the app, the guarded server and batch scoring use unless told another:
    `mlflow.registered_model` of the project's params.yaml (or `params_file`) at @champion."""
    from aivsreal.params import Params

    path = Path(params_file) if params_file else project_root() / "params.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {path.name} in {path.parent} to name the default model: run this inside the project folder "
            f"or name the model (an MLflow URI such as models:/NAME@{CHAMPION})"
        )
    return f"models:/{Params.load(path).mlflow.registered_model}@{CHAMPION}"


def model_card(model_uri: str) -> dict:
    """What a user should know about a registered model: version, when, data, test metrics, weights.

    `model_uri` is `models:/NAME@ALIAS` or `models:/NAME/VERSION`; other sources give an empty card.
    """
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if not match:
        return {}
    name, alias, number = match.groups()
    client = MlflowClient()
    version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    run = client.get_run(version.run_id) if version.run_id else None
    card = {
        "name": name,
        "version": str(version.version),
        "aliases": list(getattr(version, "aliases", []) or []),
        "registered": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run_id": version.run_id,
    }
    if run is not None:
        metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
        card |= {
            "data": params.get("data.dir", "?"),
            "data_hash": tags.get("data_hash", "?"),
            "git_commit": tags.get("git_commit", "?")[:12]
            + (" + local changes" if "-dirty" in tags.get("git_commit", "") else ""),
            "pretrained_used": params.get("pretrained_used", "?"),
            "test_metrics": {k[len("test_") :]: v for k, v in sorted(metrics.items()) if k.startswith("test_")},
        }
    return card


if __name__ == "__main__":
    main()
