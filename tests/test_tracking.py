"""Where MLflow writes: absolute locations, also from DVC's temporary experiment copies."""

from pathlib import Path

import pytest
from conftest import PROJECT

from aivsreal.tracking import default_model_uri, git_commit, project_root, resolve_tracking_uri


def test_project_root_sees_through_dvc_temp_experiment_copy(tmp_path):
    temp_copy = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12" / "sub"
    temp_copy.mkdir(parents=True)
    assert project_root(temp_copy) == (tmp_path / "proj").resolve()


def test_project_root_is_the_nearest_folder_with_dvc_yaml_else_the_installed_project(tmp_path):
    (tmp_path / "proj" / "photos" / "2024").mkdir(parents=True)
    (tmp_path / "proj" / "dvc.yaml").write_text("stages: {}\n")
    assert project_root(tmp_path / "proj") == (tmp_path / "proj").resolve()
    assert project_root(tmp_path / "proj" / "photos" / "2024") == (tmp_path / "proj").resolve()
    assert project_root(tmp_path / "elsewhere") == PROJECT  # outside any project: the one installed from


def test_relative_sqlite_uri_is_made_absolute_against_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    temp_copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpx"
    temp_copy.mkdir(parents=True)
    uri = resolve_tracking_uri("sqlite:///mlflow.db", project_root(temp_copy))
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").resolve().as_uri()


def test_environment_variable_overrides_params(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///team.db")
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve() / 'team.db'}"


def test_git_commit_outside_git_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"


@pytest.mark.parametrize("dirty", [False, True])
def test_git_commit_marks_uncommitted_changes(tmp_path, dirty):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one")
    git("add", "a.txt")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "first")
    if dirty:
        Path(tmp_path / "a.txt").write_text("two")
    commit = git_commit(tmp_path)
    assert len(commit.split("-")[0]) == 40 and commit.endswith("-dirty") == dirty


def test_outputs_that_dvc_repro_deletes_do_not_make_the_commit_dirty(tmp_path):
    """`dvc repro` deletes a stage's git-tracked outputs (metrics/train.json) before running it: a run
    from an unmodified clone must still be tagged with the plain commit."""
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train.json").write_text("{}")
    (tmp_path / "train.py").write_text("print(1)")
    git("add", ".")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "first")
    (tmp_path / "metrics" / "train.json").unlink()
    assert not git_commit(tmp_path, ignore=["metrics/train.json", "dvc.lock"]).endswith("-dirty")
    assert git_commit(tmp_path).endswith("-dirty")
    (tmp_path / "train.py").write_text("print(2)")  # a code change still counts
    assert git_commit(tmp_path, ignore=["metrics/train.json"]).endswith("-dirty")


def test_the_default_model_is_the_registered_model_of_params_at_champion(tmp_path):
    assert default_model_uri() == "models:/ai-vs-real@champion"  # this project's params.yaml
    renamed = (PROJECT / "params.yaml").read_text().replace("registered_model: ai-vs-real", "registered_model: faces")
    (tmp_path / "params.yaml").write_text(renamed)
    assert default_model_uri(tmp_path / "params.yaml") == "models:/faces@champion"
    with pytest.raises(FileNotFoundError, match="name the model"):
        default_model_uri(tmp_path / "elsewhere" / "params.yaml")
