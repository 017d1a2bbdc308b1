"""Shared test setup: the virtual environment's tools on PATH, a throwaway MLflow store."""

import contextlib
import os
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def venv_on_path():
    """Stage commands run `python`, and `mlflow models serve` needs uvicorn: use this interpreter's bin."""
    bin_dir = str(Path(sys.executable).parent)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = bin_dir + os.pathsep + old
    yield
    os.environ["PATH"] = old


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A real (untrained) saved model: 32-pixel input, 8 hidden units; loads in a second."""
    from aivsreal.model import ModelConfig, build_model, save_model
    from aivsreal.training import seed_everything

    seed_everything(0)
    folder = tmp_path_factory.mktemp("tiny_model")
    model, used = build_model(2, hidden=8, dropout=0.0, pretrained="none")
    config = ModelConfig(
        class_names=["ai", "real"], hidden=8, dropout=0.0, image_size=32, resize=32, pretrained_used=used
    )
    save_model(model, config, folder)
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(command: list[str], port: int, health_path: str, cwd: Path, env: dict, timeout: float = 90):
    """Start a real server process on 127.0.0.1:port, wait for `health_path` to answer 200, stop it after."""
    import subprocess
    import time

    import requests

    server = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(url + health_path, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, f"{command[0]} exited:\n{server.stdout.read()[-3000:]}"
            if time.monotonic() > deadline:
                pytest.fail(f"{' '.join(command[:3])} did not answer {health_path} within {timeout} s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
