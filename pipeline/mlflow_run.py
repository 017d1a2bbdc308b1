"""The train stage's MLflow run as the later steps (evaluate, report, summary) find it: by the digest
of models/model, so no run id sits in a git-tracked file."""

import sys

from aivsreal import tracking
from aivsreal.params import Params
from pipeline.paths import MODEL_DIR


def training_run(params: Params, step: str) -> dict:
    """The run that trained models/model and the version it registered, in the configured store (never
    created here); exits with a message naming `step` and what to do when the store lacks them."""
    uri = tracking.configure_tracking(params.mlflow.tracking_uri)
    try:
        tracking.require_store(uri)
        return tracking.training_run(MODEL_DIR, params.mlflow.experiment, params.mlflow.registered_model)
    except (FileNotFoundError, RuntimeError) as error:
        sys.exit(f"{step}: {error}")
