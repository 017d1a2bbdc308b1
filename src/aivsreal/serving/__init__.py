"""Serving a trained model, one module per job.

- `pyfunc.py`: the MLflow pyfunc model (base64 images in, label and probabilities out), its signature
  and request decoding; `pyfunc_entry.py` is the file MLflow runs to get it ("models from code").
- `artifacts.py`: logs and registers the pyfunc from a saved-model folder, downloads a model and
  finds the saved-model folder inside the download.
- `server.py`: MLflow's scoring server behind a guard for hostile requests (`python -m aivsreal.serving.server`).
- `cli.py`: the command-line predictor for files and folders (`python -m aivsreal.serving.cli`).
- `spark.py`: the Spark job that scores a folder; `batch.py` its command (`python -m aivsreal.serving.batch`).

All of them predict through `aivsreal.predictor.Predictor`; the default model is
`tracking.default_model_uri()` (params.yaml's registered model at @champion).
"""


def __getattr__(name: str):
    """`AiVsRealModel` for models registered before this package existed: their entry file runs
    `from aivsreal.serving import AiVsRealModel`, and a process that has already imported `aivsreal` (the
    guarded server, a script calling `mlflow.pyfunc.load_model`) finds this package, not the model's code copy."""
    if name == "AiVsRealModel":
        from aivsreal.serving.pyfunc import AiVsRealModel

        return AiVsRealModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
