"""Operating points, the metadata shortcut check, the mistake gallery and the full evaluate() on a tiny model."""

import dataclasses

import numpy as np
import pytest
from conftest import PROJECT
from helpers_images import random_image

from aivsreal.evaluation import confident_mistakes, describe_gate, evaluate, passes_gate, promotion_gate
from aivsreal.metrics import operating_points
from aivsreal.params import Params
from aivsreal.predictor import Predictor
from aivsreal.report import Alert, Paragraph, to_html, to_markdown
from aivsreal.shortcut import metadata_classifier_scores


def test_operating_points_on_hand_made_scores():
    is_ai = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    p_ai = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.2, 0.1])
    points = operating_points(is_ai, p_ai, p_ai >= 0.5, ["ai", "real"])
    assert points["ai_accuracy"] == 0.75 and points["real_accuracy"] == 0.75 and points["balanced_accuracy"] == 0.75
    # No real score reaches 0.7, so at 0 % false positives 3 of 4 AI images are caught.
    assert points["tpr_at_fpr_1pct"] == points["tpr_at_fpr_5pct"] == points["tpr_at_fpr_10pct"] == 0.75
    assert points["eer"] == pytest.approx(0.25)


def test_perfect_scores_have_zero_equal_error_rate():
    is_ai = np.array([True, False, True, False])
    points = operating_points(is_ai, np.array([0.9, 0.1, 0.8, 0.2]), is_ai, ["ai", "real"])
    assert points["eer"] == 0 and points["tpr_at_fpr_1pct"] == 1


def write(path, image, fmt, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **options)
    return str(path)


def test_shortcut_check_flags_a_format_leak_and_not_a_clean_set(tmp_path):
    def dataset(folder, ai_format):
        paths, labels = [], []
        for i in range(24):
            paths.append(
                write(folder / f"ai{i}", random_image((32, 32), seed=i), ai_format, compress_level=0)
                if ai_format == "PNG"
                else write(folder / f"ai{i}", random_image((32, 32), seed=i), ai_format)
            )
            labels.append("ai")
            paths.append(write(folder / f"real{i}", random_image((32, 32), seed=100 + i), "PNG", compress_level=0))
            labels.append("real")
        return paths, labels  # fmt: skip

    paths, labels = dataset(tmp_path / "leaky", "JPEG")
    leaky = metadata_classifier_scores(paths[:32], labels[:32], paths[32:], labels[32:], seed=0)
    assert leaky["balanced_accuracy"] == 1.0 and leaky["top_feature"] in ("is_jpeg", "is_png", "jpeg_q_mean",
                                                                          "file_bytes", "bytes_per_pixel")  # fmt: skip
    paths, labels = dataset(tmp_path / "clean", "PNG")  # same format, same size, same byte count
    clean = metadata_classifier_scores(paths[:32], labels[:32], paths[32:], labels[32:], seed=0)
    assert clean["balanced_accuracy"] == 0.5


def test_confident_mistakes_are_ordered_by_confidence():
    predictions = [
        {"path": "r1", "actual": "real", "predicted": "ai", "p_ai": 0.7},
        {"path": "r2", "actual": "real", "predicted": "ai", "p_ai": 0.95},
        {"path": "a1", "actual": "ai", "predicted": "real", "p_ai": 0.3},
        {"path": "a2", "actual": "ai", "predicted": "real", "p_ai": 0.05},
        {"path": "ok", "actual": "ai", "predicted": "ai", "p_ai": 0.99},
    ]
    mistakes = confident_mistakes(predictions, ["ai", "real"], limit=1)
    assert [p["path"] for p in mistakes["real called ai"]] == ["r2"]
    assert [p["path"] for p in mistakes["ai called real"]] == ["a2"]


def test_alert_is_a_visible_warning_in_both_report_formats(tmp_path):
    assert "> **Warning:** data <leaks>" in to_markdown([Alert("data <leaks>")], tmp_path)
    page = to_html([Alert("data <leaks>")], "t")
    assert 'class="warning"' in page and "data &lt;leaks&gt;" in page


def test_html_report_renders_code_spans_as_code_and_escapes_the_rest(tmp_path):
    page = to_html([Paragraph("fine-tuning `all` when a < b"), Alert("run `make facebench`")], "t")
    assert "fine-tuning <code>all</code> when a &lt; b" in page and "run <code>make facebench</code>" in page
    assert "`" not in page.split("<body>")[1]
    assert "<code>" not in to_html([Paragraph("one ` backtick")], "t").split("<body>")[1]


def test_evaluate_on_a_tiny_model_reports_everything(tmp_path, tiny_model_dir):
    rows = []
    for label, shift in (("ai", 50), ("real", -50)):
        for i in range(8):
            image = random_image((40, 40), seed=i + (50 if label == "ai" else 0))
            image = image.point(lambda v, s=shift: max(0, min(255, v + s)))
            rows.append({"path": write(tmp_path / f"{label}{i}.png", image, "PNG"), "label": label, "sha256": ""})
    params = Params.load(PROJECT / "params.yaml")
    settings = dataclasses.replace(params.evaluate, jpeg_qualities=[90, 30], blur_sigmas=[0.0, 2.0],
                                   downscales=[0.5])  # fmt: skip
    result = evaluate(Predictor.from_dir(tiny_model_dir), rows, rows, settings)
    metrics = result.metrics
    for key in ("accuracy", "roc_auc", "balanced_accuracy", "tpr_at_fpr_5pct", "eer", "ece_calibrated"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["temperature"] == 1.0 and metrics["threshold"] == 0.5
    assert result.confusion.sum() == 16 and len(result.predictions) == 16
    assert {r["kind"] for r in result.robustness} == {"jpeg", "blur", "downscale", "webp", "shrink", "social"}
    assert 0 <= metrics["wild_accuracy"] <= 1 and 0 <= metrics["wild_roc_auc"] <= 1
    n_levels = len(result.robustness)
    assert 0 <= metrics["ece_sweep_pooled"] <= 1 and result.reliability_sweep["count"].sum() == 16 * n_levels
    assert "warning" in metrics["metadata_shortcut"]


def test_promotion_gate_needs_every_minimum_wild_accuracy_included():
    settings = Params.load(PROJECT / "params.yaml").with_overrides({"evaluate.min_wild_accuracy": 0.8}).evaluate
    gate = promotion_gate(settings)
    assert gate["min_wild_accuracy"] == 0.8
    good = {"accuracy": 0.99, "roc_auc": 0.99, "wild_accuracy": 0.8}
    assert passes_gate(good, gate)
    assert not passes_gate(good | {"wild_accuracy": 0.79}, gate)  # perfect as stored, collapses when re-saved
    assert not passes_gate(good | {"accuracy": 0.5}, gate)
    words = describe_gate(gate)  # what the report and the summary print
    assert words.endswith("wild accuracy >= 0.8") and f"ROC AUC >= {settings.min_roc_auc:g}" in words


def test_unseen_and_per_source_scores_match_a_recount_and_the_held_out_images_scored_alone(
    tmp_path, tiny_model_dir, monkeypatch
):
    from sklearn.metrics import roc_auc_score

    monkeypatch.syspath_prepend(str(PROJECT))  # pipeline/ is the project's stage package, not installed
    from pipeline.paths import HEADLINE, UNSEEN_HEADLINE, metric_files

    rows = []
    for source, offset in (("sd21", 0), ("dev", 200)):  # held out first: the sweep's random draws then match alone
        for label, shift in (("ai", 50), ("real", -50)):
            for i in range(4):
                image = random_image((40, 40), seed=offset + i + (50 if label == "ai" else 0))
                image = image.point(lambda v, s=shift: max(0, min(255, v + s)))
                path = write(tmp_path / source / f"{label}{i}.png", image, "PNG")
                rows.append({"path": path, "label": label, "sha256": "", "source": source})
    settings = dataclasses.replace(Params.load(PROJECT / "params.yaml").evaluate, batch_size=4, jpeg_qualities=[90],
                                   blur_sigmas=[0.0], downscales=[1.0])  # fmt: skip
    predictor = Predictor.from_dir(tiny_model_dir)

    result = evaluate(predictor, rows, rows, settings, unseen_sources=["sd21"])
    metrics, per_source = result.metrics, result.per_source

    predictions = evaluate(predictor, rows, rows, settings).predictions
    for source, key in (("sd21", "unseen_source_accuracy"), ("dev", "seen_source_accuracy")):
        mine = [p for p in predictions if p["source"] == source]
        assert metrics[key] == pytest.approx(np.mean([p["actual"] == p["predicted"] for p in mine])), key
    held_out = [p for p in predictions if p["source"] == "sd21"]
    recount = roc_auc_score([p["actual"] == "ai" for p in held_out], [p["p_ai"] for p in held_out])
    assert metrics["unseen_source_roc_auc"] == pytest.approx(recount) and metrics["unseen_source_images"] == 8
    alone_result = evaluate(predictor, rows[:8], rows, settings)  # the held-out images as the whole test split
    alone, alone_rows = alone_result.metrics, alone_result.robustness
    assert metrics["unseen_source_wild_accuracy"] == pytest.approx(alone["wild_accuracy"])
    assert metrics["unseen_source_accuracy"] == pytest.approx(alone["accuracy"])
    assert not any(key in alone for key in UNSEEN_HEADLINE)  # no held-out sources, no unseen-source scores
    # metrics/per_source.json: every source's numbers match a recount from the predictions, worst first
    assert list(per_source) == sorted(per_source, key=lambda source: per_source[source]["accuracy"])
    for source, row in per_source.items():
        mine = [p for p in predictions if p["source"] == source]
        assert row["n_images"] == len(mine) == 8 and row["unseen"] == (source == "sd21")
        assert row["accuracy"] == pytest.approx(np.mean([p["actual"] == p["predicted"] for p in mine]))
        assert row["roc_auc"] == pytest.approx(
            roc_auc_score([p["actual"] == "ai" for p in mine], [p["p_ai"] for p in mine])
        )
        for label in ("ai", "real"):
            recall = np.mean([p["predicted"] == label for p in mine if p["actual"] == label])
            assert row[f"{label}_recall"] == pytest.approx(recall)
        assert set(row["wild"]) == {"jpeg_95", "jpeg_85", "jpeg_75", "webp_80", "shrink_0.5", "social_1"}
    assert per_source["sd21"]["wild_accuracy"] == pytest.approx(alone["wild_accuracy"])
    assert per_source["sd21"]["wild"]["jpeg_85"] == pytest.approx(
        next(r["accuracy"] for r in alone_rows if (r["kind"], r["level"]) == ("jpeg", 85))
    )
    files = metric_files(metrics | {"promoted": True}, [])  # the headline `dvc metrics show` lists
    assert set(files["evaluate.json"]) == {*HEADLINE, *UNSEEN_HEADLINE}
    assert (
        files["test_details.json"]["unseen_sources"] == ["sd21"]
        and "unseen_source_accuracy" not in files["test_details.json"]
    )


def test_held_out_sources_missing_from_the_test_split_are_an_error(tiny_model_dir):
    settings = Params.load(PROJECT / "params.yaml").evaluate
    rows = [{"path": "x.png", "label": "ai", "sha256": "", "source": "dev"}]
    with pytest.raises(ValueError, match=r"no test image comes from split.test_sources \(sd15\).*dvc repro split"):
        evaluate(Predictor.from_dir(tiny_model_dir), rows, rows, settings, unseen_sources=["sd15"])


def test_the_unseen_source_gate_counts_only_with_held_out_sources():
    settings = Params.load(PROJECT / "params.yaml").with_overrides({"evaluate.min_unseen_wild_accuracy": 0.7}).evaluate
    assert "min_unseen_source_wild_accuracy" not in promotion_gate(settings)  # no held-out sources: not gated
    gate = promotion_gate(settings, unseen_sources=True)
    good = {"accuracy": 0.99, "roc_auc": 0.99, "wild_accuracy": 0.9, "unseen_source_wild_accuracy": 0.7}
    assert passes_gate(good, gate)
    assert not passes_gate(good | {"unseen_source_wild_accuracy": 0.69}, gate)  # fine on seen sources only
    assert describe_gate(gate).endswith("unseen source wild accuracy >= 0.7")
