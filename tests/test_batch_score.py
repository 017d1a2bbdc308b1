"""Batch scoring with Spark: the real command on local[2], a real registered model, real image files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT, champion_store, png_bytes
from helpers_images import write_image

MODEL_URI = "models:/ai-vs-real@champion"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java (install Java 17)")


def batch_score(*args: str, cwd: Path, env_uri: str | None = None, **env_changes) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ) | env_changes
    if env_uri:
        env["MLFLOW_TRACKING_URI"] = env_uri
    command = [sys.executable, "-m", "aivsreal.serving.batch", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_onnx_model_dir) -> str:
    """The tiny model with its ONNX graph, as ai-vs-real version 1 @champion in a throwaway sqlite store."""
    return champion_store(tmp_path_factory.mktemp("store"), tiny_onnx_model_dir)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> tuple[Path, list[Path], dict[Path, str]]:
    """(folder, good image files, bad files -> what the reason must say) in nested folders."""
    folder = tmp_path_factory.mktemp("photos").resolve()
    good = [write_image(folder / "ai" / f"face_{i}.png", size=(40, 48), seed=i) for i in range(16)]
    good += [write_image(folder / "real" / "2024" / f"photo {i}.jpg", size=(48, 40), seed=100 + i, fmt="JPEG")
             for i in range(14)]  # fmt: skip
    good.append(write_image(folder / "real" / "UPPER.PNG", size=(33, 33), seed=7))
    bad = {
        folder / "ai" / "truncated.png": "corrupt or truncated",
        folder / "real" / "notes.png": "not an image",
        folder / "real" / "empty.jpg": "empty file",
    }
    (folder / "ai" / "truncated.png").write_bytes(png_bytes(3)[:200])
    (folder / "real" / "notes.png").write_text("meeting notes, not a picture\n")
    (folder / "real" / "empty.jpg").write_bytes(b"")
    (folder / "README.txt").write_text("not an image suffix: not read, not in the output\n")
    return folder, good, bad


@pytest.fixture(scope="module")
def scored(store, image_folder, tmp_path_factory) -> tuple[subprocess.CompletedProcess, pd.DataFrame]:
    """One real run of the command (one Spark start for the whole module)."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java (install Java 17)")
    folder, _, _ = image_folder
    work = tmp_path_factory.mktemp("run")
    result = batch_score("--input", str(folder), "--output", "out.parquet", "--model", MODEL_URI,
                         "--master", "local[2]", "--batch-size", "8", cwd=work, env_uri=store)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result, pd.read_parquet(work / "out.parquet")


@needs_java
def test_every_image_file_gets_exactly_one_row_under_its_plain_path(scored, image_folder):
    _, table = scored
    _, good, bad = image_folder
    assert list(table.columns) == [
        "path", "label", "p_ai", "p_real", "warnings", "engine", "expert", "expert_reason", "error"
    ]  # fmt: skip
    assert set(table["expert"].dropna()) == {"single"}  # which expert answered: the model has one
    assert sorted(table["path"]) == sorted(str(p) for p in [*good, *bad])
    scored_rows = table[table["error"].isna()]
    assert set(scored_rows["engine"]) == {"onnx"}  # which engine answered: the model's ONNX graph, by default


@needs_java
def test_bad_files_carry_a_reason_and_no_prediction(scored, image_folder):
    _, table = scored
    _, _, bad = image_folder
    rows = table.set_index("path")
    for path, reason in bad.items():
        row = rows.loc[str(path)]
        assert reason in row["error"], (path, row["error"])
        assert row[["label", "p_ai", "p_real"]].isna().all()


@needs_java
def test_scores_match_the_cli_predictor_forced_to_pytorch(scored, image_folder, store, monkeypatch):
    from aivsreal.engines import ENGINE_ENV
    from aivsreal.serving.artifacts import load_predictor

    _, table = scored
    _, good, _ = image_folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv(ENGINE_ENV, "torch")  # Spark answered on ONNX Runtime: the same answers as PyTorch
    predictor = load_predictor(MODEL_URI)
    assert predictor.engine == "torch"
    expected = pd.DataFrame(predictor.predict_records(predictor.load_many(good)), index=[str(p) for p in good])
    rows = table.set_index("path").loc[expected.index]
    assert rows["error"].isna().all()
    assert (rows["label"] == expected["label"]).all()
    for column in ("p_ai", "p_real"):
        assert (rows[column] - expected[column]).abs().max() <= 1e-4  # the bar between engines
    assert ((rows["p_ai"] + rows["p_real"]) - 1).abs().max() < 1e-9


@needs_java
def test_summary_counts_scored_and_skipped_files(scored):
    result, _ = scored
    assert "scored 31 of 34 image files" in result.stdout
    for reason in ("corrupt or truncated image", "not an image", "empty file"):
        assert f"1  {reason}\n" in result.stdout
    assert "Traceback" not in result.stderr


def test_help_explains_options_and_cluster_use():
    result = batch_score("--help", cwd=PROJECT)
    assert result.returncode == 0
    for text in ("--input DIR", "--output PATH", "--master URL", "--batch-size N", "spark-submit", "@champion"):
        assert text in result.stdout


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("no_images", "no image files under"),
        ("output_exists", "pass --overwrite"),
    ],
)
def test_bad_arguments_fail_fast_with_a_clear_message(tmp_path, case, message):
    folder = tmp_path / "photos"
    if case != "missing":
        folder.mkdir()
        (folder / "notes.txt").write_text("no pictures here")
    if case == "output_exists":
        write_image(folder / "a.png")
        (tmp_path / "out.parquet").mkdir()
    result = batch_score("--input", str(folder), "--output", "out.parquet", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unknown_model_says_how_to_get_one(tmp_path, store):
    write_image(tmp_path / "photos" / "a.png")
    result = batch_score("--input", "photos", "--model", "models:/no-such-model@champion", cwd=tmp_path, env_uri=store)
    assert result.returncode == 2
    assert "make pipeline" in result.stderr and "Traceback" not in result.stderr


def test_missing_java_says_to_install_java_17(tmp_path):
    write_image(tmp_path / "photos" / "a.png")
    no_java = {"PATH": str(Path(sys.executable).parent), "JAVA_HOME": ""}
    result = batch_score("--input", "photos", cwd=tmp_path, **no_java)
    assert result.returncode == 2
    assert "Install Java 17" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def crop_scored(tmp_path_factory, tiny_crop_model_dir):
    """One real run of the command with a model trained on face crops (issue 17) over a group photo
    (3 real faces), a picture with no face and a bad file: (stdout, table, where the faces were pasted)."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java (install Java 17)")
    from helpers_faces import group_and_wall

    store_uri = champion_store(tmp_path_factory.mktemp("crop_store"), tiny_crop_model_dir)
    folder = tmp_path_factory.mktemp("group_photos").resolve()
    _, placed, _ = group_and_wall(folder)
    (folder / "notes.png").write_text("meeting notes, not a picture\n")
    work = tmp_path_factory.mktemp("crop_run")
    result = batch_score("--input", str(folder), "--output", "faces.parquet", "--model", MODEL_URI,
                         "--master", "local[1]", cwd=work, env_uri=store_uri)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result.stdout, pd.read_parquet(work / "faces.parquet"), folder, placed


@needs_java
def test_crop_model_writes_one_row_per_face_with_its_box_and_the_pictures_label(crop_scored):
    from helpers_faces import assert_one_box_per_face

    from aivsreal.faces import FaceBox

    _, table, folder, placed = crop_scored
    assert list(table.columns) == ["path", "face", "left", "top", "width", "height", "label", "p_ai", "p_real",
                                   "warnings", "engine", "expert", "expert_reason", "image_label", "error"]  # fmt: skip
    faces = table[table["path"] == str(folder / "group.png")].sort_values("face")
    assert list(faces["face"]) == [1, 2, 3]
    boxes = [FaceBox(*(int(row[side]) for side in ("left", "top", "width", "height"))) for _, row in faces.iterrows()]
    assert_one_box_per_face(boxes, placed)
    assert [box.width * box.height for box in boxes] == sorted((b.width * b.height for b in boxes), reverse=True)
    assert set(faces["label"]) <= {"ai", "real"}
    assert ((faces["p_ai"] + faces["p_real"]) - 1).abs().max() < 1e-6
    assert faces["error"].isna().all() and set(faces["engine"]) == {"onnx"}
    assert all(list(warnings) == [] for warnings in faces["warnings"])
    image_label = faces["image_label"].unique()
    assert len(image_label) == 1  # the picture's verdict on each of its rows
    assert image_label[0] == ("ai" if (faces["label"] == "ai").any() else "real")  # face_summary "any"


@needs_java
def test_crop_model_flags_a_picture_without_a_face_and_keeps_a_bad_files_reason(crop_scored):
    from aivsreal.faces import NO_FACE_WARNING

    stdout, table, folder, _ = crop_scored
    assert sorted(table["path"]) == sorted(str(folder / name) for name in ["group.png"] * 3 + ["notes.png", "wall.jpg"])
    wall = table[table["path"] == str(folder / "wall.jpg")].iloc[0]
    assert wall[["face", "left", "top", "width", "height", "label", "p_ai", "p_real", "image_label"]].isna().all()
    assert list(wall["warnings"]) == [NO_FACE_WARNING]
    assert pd.isna(wall["error"])
    bad = table[table["path"] == str(folder / "notes.png")].iloc[0]
    assert "not an image" in bad["error"]
    assert bad.drop(["path", "error"]).isna().all()
    assert "scored 2 of 3 image files" in stdout and "1  not an image\n" in stdout
