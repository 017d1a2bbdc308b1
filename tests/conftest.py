"""Shared test setup: the virtual environment's tools on PATH, a throwaway MLflow store."""

import contextlib
import os
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist, each worker's own torch work gets its share of the cores (1 thread each for 2
    workers on 2 cores): two workers with a thread per core each would oversubscribe the machine. Processes
    the tests start (dvc repro, servers, torchrun) keep torch's default."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


@pytest.fixture(scope="session", autouse=True)
def venv_on_path():
    """Stage commands run `python`, and `mlflow models serve` needs uvicorn: use this interpreter's bin."""
    bin_dir = str(Path(sys.executable).parent)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = bin_dir + os.pathsep + old
    yield
    os.environ["PATH"] = old


@contextlib.contextmanager
def mlflow_uris_kept():
    """MLflow's set_tracking_uri/set_registry_uri keep module globals and export MLFLOW_* variables
    (set_registry_uri(None) never takes its variable back): undo both on the way out, so a store
    pointed at inside cannot answer for a later MlflowClient."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    try:
        yield
    finally:
        if "mlflow" in sys.modules:
            import mlflow

            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
        for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
            del os.environ[name]
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def mlflow_uris_restored():
    """Every test leaves MLflow's URIs as it found them. Module and session fixtures set up before this
    snapshot: they must use `mlflow_uris_kept` themselves."""
    with mlflow_uris_kept():
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A real (untrained) saved model: 32-pixel input, 8 hidden units; loads in a second."""
    from aivsreal.model import ModelConfig, build_model, save_model
    from aivsreal.training import seed_everything

    seed_everything(0)
    folder = tmp_path_factory.mktemp("tiny_model")
    config = ModelConfig(class_names=["ai", "real"], hidden=8, dropout=0.0, image_size=32, resize=32)
    model, config.pretrained_used = build_model(config)
    save_model(model, config, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_onnx_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny saved model with its ONNX graph beside it, as the train stage leaves it (engines.py)."""
    from aivsreal.engines import export_onnx
    from aivsreal.model import load_saved_model, save_model

    folder = tmp_path_factory.mktemp("tiny_onnx_model")
    model, config = load_saved_model(tiny_model_dir)
    config.onnx_file = export_onnx(model, config.eval_crop, folder).name
    save_model(model, config, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_crop_model_dir(tmp_path_factory, tiny_onnx_model_dir) -> Path:
    """The tiny ONNX model with `faces: crop` in its config, as the train stage saves a model trained with
    `data.faces: crop`: every interface finds the faces of a picture and judges each one."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("tiny_crop_model")
    shutil.copytree(tiny_onnx_model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"faces": "crop"}, indent=2))
    return folder


def png_bytes(seed: int, size: int = 48) -> bytes:
    """A small real PNG file of noise."""
    import io

    import numpy as np
    from PIL import Image

    array = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def isolated_env(**overrides: str) -> dict[str, str]:
    """This process's environment without MLFLOW_* and DVC_* settings, plus `overrides`: for a subprocess
    that must find only the store and project it is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    return env | overrides


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(command: list[str], port: int, health_path: str, cwd: Path, env: dict, timeout: float = 90):
    """Start a real server process on 127.0.0.1:port, wait for `health_path` to answer 200, stop it after."""
    import subprocess
    import tempfile
    import time

    import requests

    # The server's output goes to a file: a pipe nobody reads fills up (uvicorn logs every request) and blocks it.
    log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.seek(0)
        return log.read()[-3000:]

    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(url + health_path, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, f"{command[0]} exited:\n{output()}"
            if time.monotonic() > deadline:
                pytest.fail(f"{' '.join(command[:3])} did not answer {health_path} within {timeout} s:\n{output()}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="session")
def tiny_champion_store(tmp_path_factory, tiny_model_dir) -> str:
    """A throwaway sqlite MLflow store holding the tiny model as ai-vs-real version 1 @champion; yields its URI."""
    return champion_store(tmp_path_factory.mktemp("store"), tiny_model_dir)


@pytest.fixture(scope="session")
def lossless_only_model_dir(tmp_path_factory) -> Path:
    """A tiny saved model whose config says what calibration measured for a detector that only works on
    lossless files (issue 13): 100 % on the validation images, 50 % on their JPEG copies, none of them
    smaller than 48 px; images below 32 px are refused."""
    from aivsreal.model import ModelConfig, build_model, save_model
    from aivsreal.training import seed_everything

    seed_everything(0)
    folder = tmp_path_factory.mktemp("lossless_only_model")
    validated = {"min_side": 48, "accuracy": {"none": 1.0, "jpeg": 0.5, "webp": 0.97, "shrink": 0.6, "social": 0.5}}
    config = ModelConfig(
        class_names=["ai", "real"], hidden=8, dropout=0.0, image_size=32, resize=32,
        min_side=32, validated=validated, max_confidence=0.9999,
    )  # fmt: skip
    model, config.pretrained_used = build_model(config)
    save_model(model, config, folder)
    return folder


@pytest.fixture(scope="session")
def lossless_only_store(tmp_path_factory, lossless_only_model_dir) -> str:
    """The lossless-only model as ai-vs-real version 1 @champion in its own throwaway store; its URI."""
    return champion_store(tmp_path_factory.mktemp("lossless_store"), lossless_only_model_dir)


def champion_store(folder: Path, model_dir: Path) -> str:
    """Log `model_dir` as ai-vs-real version 1 @champion into a new sqlite store in `folder`; its URI."""
    import mlflow
    import pandas as pd

    from aivsreal import tracking
    from aivsreal.model import ModelConfig
    from aivsreal.serving.artifacts import log_pyfunc_model
    from aivsreal.serving.pyfunc import encode_image, signature

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:  # undone after: the variables go back to what they were
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.setenv("MLFLOW_REGISTRY_URI", uri)  # set_registry_uri() exports it and never takes it back
        tracking.configure_tracking(uri)
        try:
            with mlflow.start_run(experiment_id=tracking.experiment_id("tiny", folder)):
                example = pd.DataFrame({"image": [encode_image(png_bytes(0))]})
                answers = signature(["ai", "real"], ModelConfig.read(model_dir).faces)
                info = log_pyfunc_model(model_dir, answers, example, "ai-vs-real")
            tracking.set_alias("ai-vs-real", info.registered_model_version)
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
    return uri


def listening_addresses(port: int) -> set[str]:
    """The local IP addresses with a TCP socket listening on `port` (Linux /proc/net/tcp and tcp6)."""
    import ipaddress

    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
                found.add(str(ipaddress.ip_address(words)))
    return found
