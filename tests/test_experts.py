"""Two experts, one answer (experts.py): an original lossless file goes to the forensic expert, a JPEG or a
resized copy to the wild one, and every interface says which expert answered and why."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers_images import encode, random_image

from aivsreal.experts import BOTH, FORENSIC, FORENSIC_FOLDER, SINGLE, WILD, route, shift_to_threshold
from aivsreal.images import load_image
from aivsreal.model import ModelConfig, build_model, save_model
from aivsreal.predictor import Predictor

FORENSIC_SIDE = 48  # the tiny forensic expert judges 48 px at native resolution


@pytest.fixture(scope="module")
def two_experts(tmp_path_factory, tiny_onnx_model_dir):
    """The tiny wild model with a tiny noise-residual forensic expert (48 px native crops) in forensic/,
    as the train stage saves a model trained with model.forensic: true."""
    from aivsreal.engines import export_onnx
    from aivsreal.training import seed_everything

    folder = tmp_path_factory.mktemp("two_experts")
    shutil.copytree(tiny_onnx_model_dir, folder, dirs_exist_ok=True)
    seed_everything(1)
    config = ModelConfig(class_names=["ai", "real"], hidden=8, dropout=0.0, image_size=32, resize=0,
                         eval_size=FORENSIC_SIDE, input_filter="residual", threshold=0.3, temperature=2.0)  # fmt: skip
    model, _ = build_model(config)
    (folder / FORENSIC_FOLDER).mkdir()
    config.onnx_file = export_onnx(model, config.eval_crop, folder / FORENSIC_FOLDER).name
    save_model(model, config, folder / FORENSIC_FOLDER)
    wild = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(wild | {"forensic": FORENSIC_FOLDER, "threshold": 0.6}))
    return folder


def decoded(fmt: str, size: int = 64, seed: int = 0):
    return load_image(encode(random_image((size, size), seed), fmt))


def test_route_sends_a_lossless_original_to_the_forensic_expert_and_the_rest_to_the_wild_one():
    assert route(decoded("PNG"), FORENSIC_SIDE)[0] == FORENSIC
    assert route(decoded("BMP"), FORENSIC_SIDE)[0] == FORENSIC
    expert, reason = route(decoded("JPEG"), FORENSIC_SIDE)
    assert expert == WILD and "JPEG" in reason
    assert route(decoded("WEBP"), FORENSIC_SIDE)[0] == WILD
    expert, reason = route(decoded("PNG", size=40), FORENSIC_SIDE)  # a shrunk copy
    assert expert == WILD and "40x40" in reason and "resized" in reason
    assert route(random_image((64, 64)), FORENSIC_SIDE)[0] == WILD  # pixels of unknown origin


def test_shifted_forensic_logits_keep_the_forensic_decisions_at_the_wild_threshold():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (200, 2))
    own_p = 1 / (1 + np.exp(-(logits[:, 0] - logits[:, 1]) / 2.0))  # temperature 2
    shifted = shift_to_threshold(logits, 2.0, 0.3, 0.6, 1.5)
    routed_p = 1 / (1 + np.exp(-(shifted[:, 0] - shifted[:, 1]) / 1.5))
    assert ((own_p >= 0.3) == (routed_p >= 0.6)).all()
    assert np.corrcoef(own_p, routed_p)[0, 1] > 0.9  # the same order: the ROC is the forensic expert's


def test_a_two_expert_model_answers_each_image_with_its_expert_and_says_why(two_experts, tiny_onnx_model_dir):
    predictor = Predictor.from_dir(two_experts)
    original, jpeg_copy, small = decoded("PNG", seed=1), decoded("JPEG", seed=1), decoded("PNG", size=40, seed=2)
    records = predictor.predict_records([original, jpeg_copy, small])
    assert [r["expert"] for r in records] == [FORENSIC, WILD, WILD]
    assert all(r["expert_reason"] for r in records)

    forensic_alone = Predictor.from_dir(two_experts / FORENSIC_FOLDER)
    (alone,) = forensic_alone.predict_records([original])
    assert records[0]["label"] == alone["label"]  # the forensic expert decided, at its own threshold
    wild_alone = Predictor.from_dir(tiny_onnx_model_dir)  # the same network without routing (threshold 0.5)
    p_wild = wild_alone.predict_proba([jpeg_copy, small])[:, 0]
    np.testing.assert_allclose([records[1]["p_ai"], records[2]["p_ai"]], p_wild, atol=1e-6)
    assert records[1]["label"] == ("ai" if p_wild[0] >= 0.6 else "real")  # the wild threshold of the config
    assert Predictor.from_dir(tiny_onnx_model_dir).predict_records([original])[0]["expert"] == SINGLE


def test_forensic_mix_mean_averages_both_experts_log_odds_on_originals_only(two_experts, tmp_path):
    """model.forensic_mix: mean: an original gets the mean of the wild expert's log-odds and the forensic
    expert's (shifted to the wild threshold), and says so; a JPEG still goes to the wild expert alone."""
    mixed = tmp_path / "mixed"
    shutil.copytree(two_experts, mixed)
    config = json.loads((mixed / "config.json").read_text())
    (mixed / "config.json").write_text(json.dumps(config | {"forensic_mix": "mean"}))
    original, jpeg_copy = decoded("PNG", seed=5), decoded("JPEG", seed=5)
    alone, both = Predictor.from_dir(two_experts), Predictor.from_dir(mixed)
    records = both.predict_records([original, jpeg_copy])
    assert [r["expert"] for r in records] == [BOTH, WILD]
    assert "averaged with the wild expert" in records[0]["expert_reason"]

    def log_odds(logits, temperature):
        return (logits[:, 0] - logits[:, 1]) / temperature

    temperature = both.config.temperature
    forensic_side = log_odds(alone.predict_logits([original]), temperature)  # the forensic expert, shifted
    wild_side = log_odds(alone.own_logits([original]), temperature)  # the wild network on the same image
    np.testing.assert_allclose(log_odds(both.predict_logits([original]), temperature), (forensic_side + wild_side) / 2)
    assert records[1]["p_ai"] == pytest.approx(alone.predict_records([jpeg_copy])[0]["p_ai"])
    assert route(original, FORENSIC_SIDE, "mean")[0] == BOTH and route(jpeg_copy, FORENSIC_SIDE, "mean")[0] == WILD


def test_the_cli_and_a_real_mlflow_server_name_the_expert(two_experts, tmp_path):
    import requests
    from conftest import champion_store, free_port, isolated_env, running_server

    files = {
        "original.png": encode(random_image((64, 64), 3), "PNG"),
        "copy.jpg": encode(random_image((64, 64), 3), "JPEG"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-m", "aivsreal.serving.cli", "--json", "--model", str(two_experts),
         str(tmp_path / "original.png"), str(tmp_path / "copy.jpg")],
        capture_output=True, text=True, env=isolated_env(), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cli = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in done.stdout.splitlines()}
    assert (cli["original.png"]["expert"], cli["copy.jpg"]["expert"]) == (FORENSIC, WILD)
    text = subprocess.run(
        [sys.executable, "-m", "aivsreal.serving.cli", "--model", str(two_experts), str(tmp_path / "copy.jpg")],
        capture_output=True, text=True, env=isolated_env(), timeout=300,
    ).stdout  # fmt: skip
    assert "expert: wild (a JPEG file" in text

    uri = champion_store(tmp_path, two_experts)  # the forensic folder travels inside the logged model
    rows = [[base64.b64encode(data).decode()] for data in files.values()]
    port = free_port()
    command = ["mlflow", "models", "serve", "-m", "models:/ai-vs-real@champion", "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    with running_server(command, port, "/ping", tmp_path, isolated_env(MLFLOW_TRACKING_URI=uri), timeout=120) as url:
        reply = requests.post(f"{url}/invocations", json={"dataframe_split": {"columns": ["image"], "data": rows}},
                              timeout=60)  # fmt: skip
    assert reply.status_code == 200, reply.text
    served = reply.json()["predictions"]
    assert [answer["expert"] for answer in served] == [FORENSIC, WILD]
    for answer, name in zip(served, files):
        assert answer["label"] == cli[name]["label"] and abs(answer["p_ai"] - cli[name]["p_ai"]) < 1e-4
        assert answer["expert_reason"] == cli[name]["expert_reason"]


def test_the_app_says_which_expert_answered(two_experts, monkeypatch):
    from conftest import PROJECT
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AIVSREAL_MODEL", str(two_experts))
    app = AppTest.from_file(str(PROJECT / "webapp" / "app.py"), default_timeout=120)
    app.run()
    upload = [("face.png", encode(random_image((64, 64), 4), "PNG"), "image/png"),
              ("face.jpg", encode(random_image((64, 64), 4), "JPEG"), "image/jpeg")]  # fmt: skip
    app.file_uploader[0].set_value(upload).run()
    assert not app.exception, app.exception
    captions = " ".join(caption.value for caption in app.caption)
    assert "Answered by **the forensic expert**" in captions and "Answered by **the wild expert**" in captions
    assert "Experts: two" in " ".join(m.value for m in app.sidebar.markdown)


def test_the_forensic_recipe_is_the_lossless_preset_without_the_wild_degradations(tmp_path, monkeypatch):
    from conftest import PROJECT

    from aivsreal.experts import forensic_recipe
    from aivsreal.params import Params, load_overrides

    wild = Params.load(PROJECT / "params.yaml").with_overrides(load_overrides(PROJECT / "params/facebench.yaml"))
    forensic = forensic_recipe(wild)
    assert wild.model.forensic and not forensic.model.forensic
    assert (forensic.model.input_filter, forensic.train.resize, forensic.train.eval_size) == ("residual", 0, 256)
    assert forensic.train.jpeg_prob == forensic.train.downscale_prob == forensic.train.blur_prob == 0.0
    assert forensic.data == wild.data and forensic.split == wild.split  # the same faces, the same split
    monkeypatch.chdir(tmp_path)  # the recipe is read from the project folder given, wherever the caller runs
    assert forensic_recipe(wild, PROJECT) == forensic
    # the run's hardware settings reach the forensic expert too (the recipe's own num_workers is for 2 CPU cores)
    on_gpu = wild.with_overrides({"train.num_workers": "auto", "train.precision": "bf16", "train.device": "cuda"})
    train = forensic_recipe(on_gpu, PROJECT).train
    assert (train.num_workers, train.precision, train.device) == ("auto", "bf16", "cuda")


def test_evaluate_names_the_expert_of_every_test_image(two_experts, tmp_path):
    """The evaluate stage's predictions (plots/test_predictions.csv) and metrics say which expert answered
    each test image as stored: the large PNG originals the forensic one, the JPEGs and small PNGs the wild one."""
    import dataclasses
    from pathlib import Path

    from aivsreal.evaluation import evaluate
    from aivsreal.params import Params

    rows = []
    for i, (fmt, side) in enumerate([("PNG", 64), ("JPEG", 64), ("PNG", 24), ("PNG", 64)] * 2):
        path = tmp_path / f"{i}.{fmt.lower()}"
        path.write_bytes(encode(random_image((side, side), seed=i), fmt))
        rows.append({"path": str(path), "label": "ai" if i % 2 else "real", "sha256": "", "source": "x"})
    settings = dataclasses.replace(Params.load(Path(__file__).parents[1] / "params.yaml").evaluate, batch_size=4,
                                   jpeg_qualities=[90], blur_sigmas=[0.0], downscales=[1.0])  # fmt: skip
    result = evaluate(Predictor.from_dir(two_experts), rows, rows, settings)
    experts = [p["expert"] for p in result.predictions]
    assert experts == [FORENSIC, WILD, WILD, FORENSIC] * 2
    assert result.metrics["experts_as_stored"] == {FORENSIC: 4, WILD: 4}


def test_the_report_says_which_expert_answered_the_originals(monkeypatch):
    from conftest import PROJECT

    monkeypatch.syspath_prepend(str(PROJECT))  # pipeline/ is the project's stage package, not installed
    from pipeline.report import expert_paragraph

    assert expert_paragraph({}) == []  # one expert: nothing to say
    (alone,) = expert_paragraph({"experts_as_stored": {FORENSIC: 7, WILD: 3}})
    assert (
        "7 are originals" in alone.text
        and "by the forensic expert" in alone.text
        and "3 went to the wild" in alone.text
    )
    (mixed,) = expert_paragraph({"experts_as_stored": {BOTH: 5, WILD: 2}})
    assert "5 are originals" in mixed.text and "both experts, averaged" in mixed.text
