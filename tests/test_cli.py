"""`python -m aivsreal.serving.cli` as a user runs it: folders, CSV, and from any folder of the project
without creating a stray MLflow store (issue 14)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT, champion_store, isolated_env
from helpers_images import write_image


def predict(*args: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "aivsreal.serving.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180, env=isolated_env(**env))


def test_a_folder_is_scored_recursively_and_written_as_csv(tmp_path, tiny_model_dir):
    photos = tmp_path / "photos"
    faces = [
        write_image(photos / "a.png", size=(40, 40), seed=1),
        write_image(photos / "x/y/b.jpg", (48, 40), 2, "JPEG"),
    ]
    (photos / "x" / "notes.txt").write_text("not an image")
    result = predict("--model", str(tiny_model_dir), "--csv", str(photos), cwd=tmp_path)
    assert result.returncode == 1  # notes.txt was skipped
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(row["path"] for row in rows) == sorted(str(face) for face in faces)
    assert set(rows[0]) == {"path", "label", "p_ai", "p_real", "warnings", "engine", "expert", "expert_reason"}
    assert all(abs(float(row["p_ai"]) + float(row["p_real"]) - 1) < 1e-6 for row in rows)
    assert "notes.txt: skipped: not an image file type (.txt)" in result.stderr


def new_project(folder: Path) -> Path:
    """A project folder: dvc.yaml, and params.yaml whose registered_model (ai-vs-real) names the default model."""
    folder.mkdir(exist_ok=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")
    (folder / "params.yaml").write_text((PROJECT / "params.yaml").read_text())
    return folder


@pytest.fixture
def project(tmp_path, tiny_model_dir) -> Path:
    """A project folder whose mlflow.db holds the tiny model as ai-vs-real @champion."""
    folder = new_project(tmp_path / "project")
    champion_store(folder, tiny_model_dir)
    return folder


def test_the_registered_model_is_found_from_any_folder_of_the_project(project):
    inside = project / "photos" / "2024"
    face = write_image(inside / "face.png", size=(40, 40), seed=3)
    result = predict("--json", face.name, cwd=inside)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"label": ' in result.stdout and '"warnings": []' in result.stdout
    assert not (inside / "mlflow.db").exists() and not (project / "photos" / "mlflow.db").exists()


def test_a_project_without_a_store_gets_a_clear_error_and_no_empty_store(tmp_path):
    new_project(tmp_path)
    face = write_image(tmp_path / "face.png", size=(40, 40), seed=4)
    result = predict(str(face), cwd=tmp_path)
    assert result.returncode == 2
    assert f"no MLflow store at {tmp_path / 'mlflow.db'}" in result.stderr and "make pipeline" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # reading never creates a store
