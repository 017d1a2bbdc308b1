"""The real thing, end to end: `dvc repro` in a fresh git repo, the MLflow store it fills,
`mlflow models serve` on the registered champion, and the CLI predictor.

Tiny params (a few dozen 64-pixel images, two epochs) keep it to a couple of minutes. This project
is a user's who set `data.faces: crop` (issue 17): the split finds the faces and trains on them,
and the served model finds the faces of a picture and judges each one. Whole mode, the default,
runs end to end in test_reliability.py, test_team_server.py and the committed pipeline.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import sys
from pathlib import Path

import pytest
import requests
from conftest import PROJECT, free_port, png_bytes, running_server
from helpers_faces import assert_one_box_per_face, group_and_wall
from helpers_project import STAGES, run, set_params, stages_run, tiny_project, training_run
from mlflow import MlflowClient

from aivsreal.faces import FaceBox


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git clone of the working tree with tiny params, after one full `dvc repro`."""
    repo = tmp_path_factory.mktemp("project")
    env = tiny_project(repo)
    set_params(repo, {"data": {"faces": "crop"}, "sample": {"size": 64}})  # faces of 32 px are too small to find
    run(["git", "commit", "-qam", "crop mode"], repo, env)
    output = run(["dvc", "repro"], repo, env)
    return {"repo": repo, "env": env, "first_output": output, "uri": f"sqlite:///{repo / 'mlflow.db'}"}


def test_repro_runs_every_stage_and_writes_outputs(project):
    repo = project["repo"]
    assert stages_run(project["first_output"]) == list(STAGES)
    for name in ("train", "val", "test"):
        lines = (repo / f"data/processed/{name}.csv").read_text().splitlines()
        assert lines[0] == "path,label,sha256,source" and len(lines) > 1
    split = json.loads((repo / "metrics/split.json").read_text())
    summary = json.loads((repo / "data/processed/split_summary.json").read_text())
    per_file = list(csv.DictReader((repo / "data/processed/faces.csv").open()))
    assert len(per_file) == 60 and summary["faces"] == "crop"  # every file looked at
    no_face = [row["path"] for row in per_file if row["faces"] == "0"]
    assert sorted(r["path"] for r in summary["rejected"]) == sorted(no_face) and len(no_face) <= 6  # ~5 % measured
    assert all(r["reason"].startswith("no face found") for r in summary["rejected"])
    crops = sum(int(row["faces"]) for row in per_file)
    assert split["total_kept"] == crops and split["total_rejected"] == len(no_face)
    for name in ("train", "val", "test"):  # the manifests list the face crops, each in its file's split
        listed = (repo / f"data/processed/{name}.csv").read_text().splitlines()[1:]
        assert listed and all(line.startswith(f"data/processed/faces/{name}/") for line in listed)
    trained = json.loads((repo / "metrics/train.json").read_text())
    assert trained["pretrained_used"].startswith("none")  # offline: never pretend ImageNet was loaded
    tested = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(tested) == {"accuracy", "roc_auc", "wild_accuracy", "eer", "n_images", "promoted"}  # the headline
    details = json.loads((repo / "metrics/test_details.json").read_text())
    calibration = json.loads((repo / "metrics/calibration.json").read_text())
    for key in ("accuracy", "roc_auc"):
        assert 0.0 <= tested[key] <= 1.0
    assert 0.0 <= details["average_precision"] <= 1.0
    assert {"precision", "recall", "f1", "support"} <= set(details["ai"]) and tested["promoted"] is True
    assert (repo / "models/model/weights.pt").is_file() and (repo / "models/model/config.json").is_file()
    for name in ("confusion_matrix.png", "roc.png", "confusion.csv", "roc.csv", "train_history.csv",
                 "reliability.png", "robustness.png", "robustness.csv"):  # fmt: skip
        assert (repo / "plots" / name).stat().st_size > 0
    robustness = json.loads((repo / "metrics/robustness.json").read_text())
    assert set(robustness) == {"jpeg", "blur", "downscale", "webp", "shrink", "social", "wild"}
    assert {"30", "95", "85", "75"} <= set(robustness["jpeg"]) and 0 <= tested["wild_accuracy"] <= 1
    assert robustness["wild"]["accuracy"] == tested["wild_accuracy"]
    assert 0 <= tested["eer"] <= 1 and {"balanced_accuracy", "ai_accuracy"} <= set(details)
    for key in ("balanced_accuracy", "tpr_at_fpr_1pct"):
        assert 0 <= details[key] <= 1, key
    for key in ("ece_uncalibrated", "ece_calibrated", "ece_sweep_pooled"):
        assert 0 <= calibration[key] <= 1, key
    assert calibration["temperature"] == trained["temperature"] and calibration["threshold"] == trained["threshold"]
    assert trained["temperature"] >= 1.0  # calibration.min_temperature: a separable split cannot sharpen it
    assert 0 <= trained["val_ece_wild_pooled"] <= 1
    assert set(json.loads((repo / "metrics/shortcut.json").read_text())) >= {"balanced_accuracy", "warning"}
    config = json.loads((repo / "models/model/config.json").read_text())
    assert config["demo"] is True and config["min_side"] == 32 and config["max_confidence"] == 0.9999
    assert config["faces"] == "crop" and config["face_margin"] == 0.25 and config["face_summary"] == "any"
    assert set(config["validated"]["accuracy"]) == {"none", "jpeg", "webp", "shrink", "social"}
    report = (repo / "reports/report.md").read_text()
    assert "demo model trained on the built-in sample faces" in report
    assert "with no face found were left out" in report and "data.faces: crop" in report
    assert "robustness sweep, every level pooled" in report
    assert "69.58%" in report and "Confusion matrix" in report
    for section in ("## Operating points", "## Calibration", "## Robustness", "## Shortcut check", "## Most confident"):
        assert section in report
    assert "data:image/png;base64," in (repo / "reports/report.html").read_text()
    metrics_show = run(["dvc", "metrics", "show"], repo, project["env"]).splitlines()
    assert "wild_accuracy" in metrics_show[0] and len(metrics_show) == 2  # one row: the headline file
    assert max(len(line.rstrip()) for line in metrics_show) <= 100
    assert "jpeg.95.accuracy" in run(["dvc", "metrics", "show", "metrics/robustness.json"], repo, project["env"])
    run(["dvc", "plots", "show", "-o", "plots_html"], repo, project["env"])
    page = (repo / "plots_html" / "index.html").read_text()
    assert page.count("vegaEmbed") == 5 and page.count("<img") == 4  # each plot drawn once, not twice
    summary = run([sys.executable, "-m", "pipeline.summary"], repo, project["env"]).splitlines()
    assert max(len(line) for line in summary) <= 100  # readable in a terminal, unlike `dvc metrics show`
    text = "\n".join(summary)
    assert f"test accuracy     {tested['accuracy']:.3f}" in text and "ai-vs-real version 1, @champion" in text
    assert "reports/report.html" in text and "demo" in text and f"{tested['wild_accuracy']:.3f}" in text


def test_a_fresh_clone_reproduces_the_committed_results_to_the_byte(project, tmp_path):
    """Per-run bookkeeping (run ids, versions, timings) lives in MLflow: after the results are committed,
    `dvc repro` in a fresh clone, in another folder and with its venv at another path, rebuilds every
    stage and leaves git status clean, dvc.lock and the model's files byte-identical."""
    repo, env = project["repo"], project["env"]
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "pipeline results"], repo, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    other_venv = tmp_path / "another-venv"  # the stages' `python` sees its packages under this path
    other_venv.symlink_to(Path(sys.prefix).resolve(), target_is_directory=True)
    clone_env = env | {"PYTHONPATH": str(clone / "src"), "PATH": f"{other_venv / 'bin'}:{env['PATH']}"}
    assert str(other_venv) in run(["python", "-c", "import torchvision; print(torchvision.__file__)"], clone, clone_env)

    output = run(["dvc", "repro"], clone, clone_env)

    assert stages_run(output) == list(STAGES)  # no cache in a fresh clone: every stage really ran
    assert run(["git", "status", "--porcelain"], clone, clone_env) == ""
    assert (clone / "dvc.lock").read_bytes() == (repo / "dvc.lock").read_bytes()
    for ours in (repo / "models/model").iterdir():
        assert (clone / "models/model" / ours.name).read_bytes() == ours.read_bytes(), ours.name
    ours, theirs = training_run(repo, project["uri"]), training_run(clone, f"sqlite:///{clone / 'mlflow.db'}")
    assert ours["run_id"] != theirs["run_id"]  # a new run in the clone's own store, found by the same weights
    tag = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}").get_run(theirs["run_id"]).data.tags["git_commit"]
    assert tag == run(["git", "rev-parse", "HEAD"], clone, clone_env).strip()  # not -dirty


def test_no_saved_or_logged_model_file_holds_an_absolute_path_of_the_machine(project):
    """The model's files (models/model, the train stage's outputs) and every artifact logged to MLflow are
    free of the project's, the venv's and the home folder's absolute paths (the ONNX exporter writes stack
    traces: engines.strip_metadata). Only MLmodel's `artifact_path`, the artifact's own address in the
    store MLflow writes it to, names the store's folder."""
    repo = project["repo"]
    machine_paths = {str(repo), str(PROJECT), str(Path(sys.prefix)), str(Path(sys.prefix).resolve()), f"{Path.home()}/"}
    files = [*(repo / "models").rglob("*"), repo / "metrics/train.json", repo / "plots/train_history.csv",
             *(repo / "mlartifacts").rglob("*")]  # fmt: skip
    scanned = 0
    for path in filter(Path.is_file, files):
        content = path.read_bytes()
        if path.name == "MLmodel":
            content = b"\n".join(line for line in content.splitlines() if not line.startswith(b"artifact_path: "))
        found = [p for p in machine_paths if p.encode() in content]
        assert not found, f"{path.relative_to(repo)} holds {found}"
        scanned += 1
    assert scanned > 20 and any(p.suffix == ".onnx" for p in (repo / "mlartifacts").rglob("*.onnx"))


def test_mlflow_run_has_params_epochs_model_and_champion(project):
    repo = project["repo"]
    info = training_run(repo, project["uri"])
    client = MlflowClient(project["uri"])
    run_ = client.get_run(info["run_id"])
    assert run_.info.status == "FINISHED"
    assert run_.data.params["train.epochs"] == "2" and run_.data.params["pretrained_used"].startswith("none")
    assert {"git_commit", "data_hash", "pretrained_used", "promoted"} <= set(run_.data.tags)
    assert run_.data.tags["demo_model"] == "true"
    assert re.fullmatch(r"[0-9a-f]{40}", run_.data.tags["git_commit"])
    history = client.get_metric_history(info["run_id"], "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert "test_accuracy" in run_.data.metrics
    artifacts = {a.path for a in client.list_artifacts(info["run_id"], "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/confusion_matrix.json"} <= artifacts
    champion = client.get_model_version_by_alias("ai-vs-real", "champion")
    assert str(champion.version) == info["model_version"] and champion.run_id == info["run_id"]


def test_registered_model_is_code_plus_state_dict_with_signature(project):
    """Models from code: weights as a state_dict and config.json, no pickled nn.Module."""
    import mlflow

    mlflow.set_tracking_uri(project["uri"])
    try:
        model_info = mlflow.models.get_model_info("models:/ai-vs-real@champion")
        assert model_info.signature.inputs.input_names() == ["image"]
        assert model_info.signature.outputs.input_names()[-1] == "faces"  # a crop-mode model answers per face
        assert model_info.saved_input_example_info is not None
        local = Path(mlflow.artifacts.download_artifacts("models:/ai-vs-real@champion"))
    finally:
        mlflow.set_tracking_uri(None)
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"artifacts/weights.pt", "artifacts/config.json", "MLmodel"} <= files
    assert not any(name.endswith((".pkl", ".pickle")) or name == "python_model.pkl" for name in files)
    assert "model_code_path" in (local / "MLmodel").read_text()
    carried = json.loads((local / "artifacts/config.json").read_text())
    trained = json.loads((project["repo"] / "metrics/train.json").read_text())
    assert carried["temperature"] == trained["temperature"] and carried["threshold"] == trained["threshold"]
    import torch

    state = torch.load(local / "artifacts/weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_second_repro_runs_nothing_and_report_param_reruns_only_report(project):
    repo, env = project["repo"], project["env"]
    client = MlflowClient(project["uri"])
    runs_before = len(client.search_runs([client.get_experiment_by_name("ai-vs-real").experiment_id]))
    assert stages_run(run(["dvc", "repro"], repo, env)) == []
    set_params(repo, {"report": {"title": "Renamed report"}})
    assert stages_run(run(["dvc", "repro"], repo, env)) == ["report"]
    assert (repo / "reports/report.md").read_text().startswith("# Renamed report")
    runs_after = len(client.search_runs([client.get_experiment_by_name("ai-vs-real").experiment_id]))
    assert runs_after == runs_before  # report logs into the train run, it does not start one


def test_served_champion_answers_per_face_warns_without_one_and_rejects_bad_payloads(project, tmp_path):
    repo, env = project["repo"], dict(project["env"])
    env["MLFLOW_TRACKING_URI"] = project["uri"]
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", "models:/ai-vs-real@champion", "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    with running_server(command, port, "/ping", repo, env) as url:
        group, placed, wall = group_and_wall(tmp_path)
        images = [group, sorted((repo / "data/sample/real").glob("*.png"))[1], wall]
        encoded = [base64.b64encode(p.read_bytes()).decode() for p in images]
        answer = requests.post(
            f"{url}/invocations", json={"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}}
        )
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 3 and [len(p["faces"]) for p in predictions] == [3, 1, 0]
        assert_one_box_per_face([FaceBox(**face["box"]) for face in predictions[0]["faces"]], placed)
        for face in [face for picture in predictions[:2] for face in picture["faces"]]:
            assert face["label"] in ("ai", "real") and abs(face["p_ai"] + face["p_real"] - 1) < 1e-6
            assert isinstance(face["warnings"], list) and 1e-4 - 1e-12 <= face["p_ai"] <= 0.9999 + 1e-12
            assert face["engine"] == "onnx-int8"  # the pipeline's model carries its int8 graph: ONNX Runtime runs it
        assert predictions[0]["p_ai"] == max(face["p_ai"] for face in predictions[0]["faces"])  # face_summary: any
        assert predictions[2]["label"] is None and predictions[2]["p_ai"] is None  # JSON null: not judged
        assert predictions[2]["warnings"][0].startswith("no face found")

        cli = run([sys.executable, "-m", "aivsreal.serving.cli", "--json", "--model", "models:/ai-vs-real@champion",
                   *map(str, images)], repo, env)  # fmt: skip
        cli_predictions = [json.loads(line) for line in cli.splitlines() if line.startswith("{")]
        served_faces = [face for p in predictions for face in p["faces"]] + [predictions[2]]
        assert [c["label"] for c in cli_predictions] == [p["label"] for p in served_faces]  # one line per face
        assert all(
            c["p_ai"] == p["p_ai"] or abs(c["p_ai"] - p["p_ai"]) < 1e-5 for c, p in zip(cli_predictions, served_faces)
        )

        def frame(column: str, value: str) -> dict:
            return {"dataframe_split": {"columns": [column], "data": [[value]]}}

        bad_payloads = {  # expected words in the 400 message: payload
            "not valid base64": frame("image", "%%%not base64%%%"),
            "not an image": frame("image", base64.b64encode(b"hello").decode()),
            "missing inputs": frame("picture", encoded[0]),
            "16x16 px, too small to judge": frame("image", base64.b64encode(png_bytes(3, size=16)).decode()),
        }
        for expected, payload in bad_payloads.items():
            reply = requests.post(f"{url}/invocations", json=payload)
            assert 400 <= reply.status_code < 500, (expected, reply.status_code)
            assert expected in reply.json()["message"], reply.json()["message"]
            assert requests.get(f"{url}/ping").status_code == 200  # still serving


@pytest.fixture(scope="module")
def experiment(project, tmp_path_factory):
    """One `dvc exp run --temp` shared by the tests below (a pipeline run costs a minute): it trains under
    `train.launcher: torchrun` (2 gloo processes), sets a `model.int8_max_drop` no int8 graph can meet and an
    `evaluate.min_wild_accuracy` no model can meet, and adds a face vote (model.face_vote) on a small
    stand-in face network. Returns what was there before it and its one new run."""
    from helpers_tfjs import small_network

    from aivsreal.face_vote import LAYER

    repo, env = project["repo"], project["env"]
    face_network = small_network(tmp_path_factory.mktemp("face_network"), pool=LAYER)  # 2 features, no download
    client = MlflowClient(project["uri"])
    experiment_id = client.get_experiment_by_name("ai-vs-real").experiment_id
    before = {
        "original": training_run(repo, project["uri"]),
        "champion": client.get_model_version_by_alias("ai-vs-real", "champion").version,
        "params": (repo / "params.yaml").read_text(),
    }
    runs_before = {r.info.run_id for r in client.search_runs([experiment_id])}
    settings = EXPERIMENT | {"model.face_vote": True, "model.face_vote_graph": str(face_network)}
    flags = [flag for key, value in settings.items() for flag in ("-S", f"{key}={value}")]
    output = run(["dvc", "exp", "run", "--temp", *flags], repo, env)
    new = [r for r in client.search_runs([experiment_id]) if r.info.run_id not in runs_before]
    assert len(new) == 1, output[-3000:]
    return before | {"output": output, "run": new[0], "client": client, "experiment_id": experiment_id,
                     "settings": settings}  # fmt: skip


EXPERIMENT = {"train.launcher": "torchrun", "train.nproc": 2, "train.lr": 0.001, "model.int8_max_drop": -100,
              "evaluate.min_wild_accuracy": 1.01}  # fmt: skip


def test_exp_run_temp_logs_into_the_project_store_drops_a_lossy_int8_graph_and_a_wild_gate_blocks_promotion(
    project, experiment, monkeypatch
):
    """`dvc exp run --temp` works in .dvc/tmp/exps: its run must land in the project's mlflow.db. The
    experiment's `model.int8_max_drop` makes the train stage drop the int8 graph and say so, and the model
    answers on the float graph (the committed pipeline's answers on int8). Its `evaluate.min_wild_accuracy`:
    the new version is evaluated, not promoted, and the report names the gate (the boundary, exactly met =
    promoted, is test_evaluation.py's)."""
    from aivsreal.engines import ENGINE_ENV
    from aivsreal.serving.artifacts import load_predictor

    repo, client, new, output = project["repo"], experiment["client"], experiment["run"], experiment["output"]
    assert new.data.params["train.lr"] == "0.001"
    assert not (repo / ".dvc/tmp/exps").exists() or not list((repo / ".dvc/tmp/exps").rglob("mlflow.db"))

    assert "not passed" in output and new.data.tags["promoted"] == "false"  # the wild gate
    assert client.get_model_version_by_alias("ai-vs-real", "champion").version == experiment["champion"]
    report = Path(client.download_artifacts(new.info.run_id, "report/report.md")).read_text()
    assert "wild accuracy >= 1.01)" in report and "Promoted to @champion: no" in report

    assert "int8 graph dropped" in output and new.data.metrics["int8_kept"] == 0
    assert new.data.tags["evaluate_engine"] == "onnx"  # its test metrics are those of what serves
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project["uri"])
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    dropped = load_predictor(f"runs:/{new.info.run_id}/model")
    assert dropped.engine == "onnx" and dropped.config.int8_file == ""
    kept = load_predictor(repo / "models/model")  # the committed params keep it (int8_max_drop 100 in TINY)
    assert kept.engine == "onnx-int8" and (repo / "models/model" / kept.config.int8_file).is_file()
    monkeypatch.setenv(ENGINE_ENV, "onnx")  # the float graph is still there to choose
    assert load_predictor(repo / "models/model").engine == "onnx"


def test_exp_run_with_a_face_vote_saves_it_in_the_logged_model_which_answers_with_it(project, experiment, monkeypatch):
    """model.face_vote: the train stage fits the vote on the training faces (rank 0 of the torchrun launch),
    logs its figures, saves it inside the logged model, and the report says how it was set up."""
    from aivsreal.face_vote import FOLDER, KS
    from aivsreal.serving.artifacts import load_predictor

    client, new, output = experiment["client"], experiment["run"], experiment["output"]
    assert new.data.tags["face_vote"] == "true" and new.data.metrics["face_vote_k"] in KS
    assert 0 <= new.data.metrics["face_vote_threshold"] <= 1 and "face vote: k" in output
    assert set(new.data.params) >= {"face_vote_sha256.model.json", "face_vote_sha256.w.bin"}  # which network
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project["uri"])
    logged = load_predictor(f"runs:/{new.info.run_id}/model")
    assert logged.config.face_vote == FOLDER and logged.face_vote.k == new.data.metrics["face_vote_k"]
    images = [logged.load(png_bytes(seed, size=64)) for seed in range(4)]
    joined, network_alone = logged.predict_logits(images), logged.routed_logits(images)
    assert abs(joined - network_alone).max() > 1e-6  # the served answer is the joined one
    report = Path(client.download_artifacts(new.info.run_id, "report/report.md")).read_text()
    assert "Face vote (model.face_vote)" in report


def test_exp_run_under_torchrun_logs_once_and_the_run_cache_restores_it_without_a_new_run_or_version(
    project, experiment
):
    """`train.launcher: torchrun`: the stage restarts itself as 2 gloo processes; only rank 0 logs and writes.
    DVC keeps the experiment's stages in its run cache: the same params set in the workspace are restored,
    not run, with no new MLflow run or model version, and the restored weights find the run that trained
    them; back to the committed params, the committed model is restored the same way."""
    repo, env, client, new = project["repo"], project["env"], experiment["client"], experiment["run"]
    assert new.data.tags["processes"] == "2" and new.data.params["train.launcher"] == "torchrun"
    epochs = client.get_metric_history(new.info.run_id, "val_loss")
    assert [m.step for m in epochs] == [1, 2]  # one value per epoch: rank 0 alone logs

    runs = len(client.search_runs([experiment["experiment_id"]]))
    versions = len(client.search_model_versions("name='ai-vs-real'"))
    changes: dict = {}
    for key, value in experiment["settings"].items():  # params DVC has run (in the experiment)
        section, name = key.split(".")
        changes.setdefault(section, {})[name] = value
    set_params(repo, changes)
    try:
        output = run(["dvc", "repro"], repo, env)
        assert "train" not in stages_run(output) and "Stage 'train' is cached" in output
        assert training_run(repo, project["uri"])["run_id"] == new.info.run_id
    finally:
        (repo / "params.yaml").write_text(experiment["params"])
        output = run(["dvc", "repro"], repo, env)
    assert "train" not in stages_run(output)  # the committed params: restored from the run cache too
    assert training_run(repo, project["uri"]) == experiment["original"]
    assert len(client.search_runs([experiment["experiment_id"]])) == runs  # no new run,
    assert len(client.search_model_versions("name='ai-vs-real'")) == versions  # no new version


def test_dvc_remote_round_trip_restores_a_fresh_clone_up_to_date(project, tmp_path):
    """Team flow: `dvc push` to a remote, `git clone` + `dvc pull` elsewhere, and `dvc repro` has nothing to do."""
    repo, env = project["repo"], project["env"]
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], repo, env)
    run(["dvc", "push"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "pipeline results and remote"], repo, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "models" / "model" / "weights.pt").exists()  # git holds no data or models

    run(["dvc", "pull"], clone, env | {"PYTHONPATH": str(clone / "src")})

    assert (clone / "models" / "model" / "weights.pt").read_bytes() == (repo / "models/model/weights.pt").read_bytes()
    assert len(list((clone / "data" / "sample").rglob("*.png"))) == len(list((repo / "data" / "sample").rglob("*.png")))
    output = run(["dvc", "repro"], clone, env | {"PYTHONPATH": str(clone / "src")})
    assert stages_run(output) == [] and "up to date" in output
