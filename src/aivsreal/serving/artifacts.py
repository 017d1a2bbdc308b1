"""The pyfunc model in MLflow: logged and registered from a saved-model folder, found again in a download
and loaded as a Predictor."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from aivsreal.model import CONFIG_FILE, WEIGHTS_FILE, ModelConfig
from aivsreal.predictor import Predictor

ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")
PACKAGE = Path(__file__).resolve().parents[1]  # aivsreal/: logged with the model, so it carries its own code


def log_pyfunc_model(model_dir: Path, signature, input_example, registered_model: str):
    """Log the saved model folder as a models-from-code pyfunc and register a new version."""
    import mlflow  # here and in download_model only: a local folder model loads without MLflow (CLI start-up)

    with tempfile.TemporaryDirectory() as neutral:  # MLmodel records the entry file's absolute path
        entry = shutil.copy(ENTRY_FILE, neutral)  # (model_code_path): a temporary folder's, not the clone's
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=entry,
            artifacts=model_files(model_dir),
            code_paths=[str(PACKAGE)],
            signature=signature,
            input_example=input_example,
            registered_model_name=registered_model,
            pip_requirements=pip_requirements(ModelConfig.read(model_dir).arch),
        )


def model_files(model_dir: Path) -> dict[str, str]:
    """The saved-model files the pyfunc carries: weights and config, the ONNX graphs its config names, and the
    forensic expert's folder in a two-expert model, and the face vote's folder (model.face_vote)."""
    config = ModelConfig.read(model_dir)
    files = {"weights": WEIGHTS_FILE, "config": CONFIG_FILE, "onnx": config.onnx_file, "int8": config.int8_file,
             "forensic": config.forensic, "face_vote": config.face_vote}  # fmt: skip
    return {name: str(model_dir / file) for name, file in files.items() if file and (model_dir / file).exists()}


def pip_requirements(arch: str = "resnet18") -> list[str]:
    """What a served copy of the model needs; versions match the training environment. A timm encoder
    (`arch` other than resnet18) needs timm to rebuild the network. OpenCV finds faces (faces.py: the
    Haar cascade); MTCNN's facenet-pytorch cannot be listed (its pins exclude this torch: pip could not
    resolve the environment), so a copy served in a fresh environment needs `pip install --no-deps
    facenet-pytorch==2.6.0` for a crop-mode MTCNN model; a whole-picture model looks with the cascade."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "torchvision", "mlflow", "pillow", "pandas", "numpy", "onnxruntime", "opencv-python-headless"]
    names += ["timm"] if arch != "resnet18" else []
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:  # onnxruntime is optional: without it the model runs on PyTorch
            continue
    return pins


def download_model(model_uri: str, folder: Path | None = None) -> Path:
    """The MLflow model at `model_uri` as a local folder (in `folder`, else a temporary one), read from
    the store `configure_tracking` points at; a local store that does not exist is an error, never created."""
    import mlflow

    from aivsreal.tracking import configure_tracking, require_store

    store = configure_tracking()
    if model_uri.startswith(("models:/", "runs:/")):
        require_store(store)
    destination = str(folder) if folder is not None else None
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=destination))


def saved_model_folder(mlflow_model_dir: Path) -> Path:
    """The saved-model folder (config.json + weights.pt) inside a downloaded MLflow model: where its
    MLmodel file says the pyfunc's `config` artifact is (artifacts/ as logged by log_pyfunc_model)."""
    import yaml

    flavors = yaml.safe_load((Path(mlflow_model_dir) / "MLmodel").read_text()).get("flavors", {})
    config = flavors.get("python_function", {}).get("artifacts", {}).get("config", {})
    return (Path(mlflow_model_dir) / config.get("path", f"artifacts/{CONFIG_FILE}")).parent


def load_predictor(source: str | Path) -> Predictor:
    """A local saved-model folder, or any MLflow model URI (models:/ai-vs-real@champion, runs:/...)."""
    if Path(source).is_dir() and (Path(source) / CONFIG_FILE).is_file():
        return Predictor.from_dir(source)
    # The files the pyfunc model wraps, read directly: what `mlflow.pyfunc.load_model` would end up
    # loading, without its machinery (0.8 s of the CLI's start-up, measured).
    return Predictor.from_dir(saved_model_folder(download_model(str(source))))
