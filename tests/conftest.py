"""Shared test setup: the virtual environment's tools on PATH, a throwaway MLflow store."""

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
