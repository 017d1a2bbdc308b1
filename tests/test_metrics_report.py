"""Test metrics on hand-checked examples, and the Markdown/HTML report renderers."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pytest
from helpers_images import write_image

from aivsreal.metrics import classification_metrics, confusion
from aivsreal.report import Figure, Heading, Paragraph, Table, to_html, to_markdown

CLASSES = ["ai", "real"]
#                 0     1     2       3       4     5       6
TRUE = ["ai", "ai", "ai", "real", "real", "real", "real"]
PREDICTED = ["ai", "ai", "real", "real", "ai", "real", "real"]


def test_accuracy_and_per_class_scores_match_hand_counts():
    metrics = classification_metrics(TRUE, PREDICTED, np.linspace(0, 1, len(TRUE)), CLASSES)
    # ai: rows 0, 1 right (TP 2), row 2 missed (FN 1), row 4 a false alarm (FP 1)
    ai_precision, ai_recall = 2 / (2 + 1), 2 / (2 + 1)
    # real: rows 3, 5, 6 right (TP 3), row 4 missed (FN 1), row 2 a false alarm (FP 1)
    real_precision, real_recall = 3 / (3 + 1), 3 / (3 + 1)
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["n_images"] == 7
    assert metrics["ai"]["precision"] == pytest.approx(ai_precision)
    assert metrics["ai"]["recall"] == pytest.approx(ai_recall)
    assert metrics["ai"]["f1"] == pytest.approx(2 * ai_precision * ai_recall / (ai_precision + ai_recall))
    assert metrics["ai"]["support"] == 3
    assert metrics["real"]["precision"] == pytest.approx(real_precision)
    assert metrics["real"]["recall"] == pytest.approx(real_recall)
    assert metrics["real"]["f1"] == pytest.approx(2 * real_precision * real_recall / (real_precision + real_recall))
    assert metrics["real"]["support"] == 4


def test_a_class_never_predicted_scores_zero_not_an_error():
    metrics = classification_metrics(["ai", "real"], ["real", "real"], np.array([0.2, 0.1]), CLASSES)
    assert metrics["ai"]["precision"] == 0.0 and metrics["ai"]["recall"] == 0.0


def test_roc_auc_is_for_the_first_class():
    true = ["ai", "ai", "real", "real"]
    separated = np.array([0.9, 0.8, 0.2, 0.1])  # p(ai): every AI image above every real one
    assert classification_metrics(true, true, separated, CLASSES)["roc_auc"] == 1.0
    assert classification_metrics(true, true, 1 - separated, CLASSES)["roc_auc"] == 0.0
    constant = np.full(4, 0.5)
    assert classification_metrics(true, true, constant, CLASSES)["roc_auc"] == 0.5
    assert classification_metrics(true, true, separated, CLASSES)["average_precision"] == 1.0


def test_threshold_free_scores_are_nan_with_one_class_only():
    metrics = classification_metrics(["ai", "ai"], ["ai", "ai"], np.array([0.9, 0.8]), CLASSES)
    assert math.isnan(metrics["roc_auc"]) and math.isnan(metrics["average_precision"])
    assert metrics["accuracy"] == 1.0


def test_confusion_rows_are_true_classes_in_class_names_order():
    true = ["ai", "ai", "ai", "real"]
    predicted = ["real", "ai", "real", "real"]
    # true ai: 1 predicted ai, 2 predicted real; true real: 0 predicted ai, 1 predicted real
    np.testing.assert_array_equal(confusion(true, predicted, ["ai", "real"]), [[1, 2], [0, 1]])
    np.testing.assert_array_equal(confusion(true, predicted, ["real", "ai"]), [[1, 0], [2, 1]])


@pytest.fixture
def report(tmp_path):
    report_dir = tmp_path / "reports"
    figure = write_image(report_dir / "figures" / "roc.png", size=(12, 8), seed=3)
    blocks = [
        Heading("Run <42>", 1),
        Paragraph("accuracy < 0.9 & AUC > 0.5"),
        Heading("Data"),
        Table(["split", "ai", "accuracy"], [["train", 14, 0.123456], ["test", 3, 1.0]]),
        Figure(figure, "ROC <curve>"),
    ]
    return report_dir, figure, blocks


def test_markdown_has_headings_tables_and_a_relative_figure_link(report):
    report_dir, _, blocks = report
    markdown = to_markdown(blocks, report_dir)
    lines = markdown.splitlines()
    assert "# Run <42>" in lines
    assert "## Data" in lines
    assert "| split | ai | accuracy |" in lines
    header_at = lines.index("| split | ai | accuracy |")
    assert re.fullmatch(r"\|(-+\|){3}", lines[header_at + 1])
    assert "| train | 14 | 0.1235 |" in lines
    assert "| test | 3 | 1.0000 |" in lines
    assert "![ROC <curve>](figures/roc.png)" in lines
    assert (report_dir / "figures/roc.png").is_file()


def test_markdown_figure_link_works_with_a_relative_report_dir(report, monkeypatch):
    report_dir, _, blocks = report
    monkeypatch.chdir(report_dir.parent)
    assert "![ROC <curve>](figures/roc.png)" in to_markdown(blocks, report_dir.relative_to(report_dir.parent))


def test_html_is_self_contained_and_escaped(report):
    _, figure, blocks = report
    page = to_html(blocks, "Title <b>")
    assert page.startswith("<!doctype html>")
    assert "<title>Title &lt;b&gt;</title>" in page
    assert "<h1>Run &lt;42&gt;</h1>" in page and "<h2>Data</h2>" in page
    assert "<p>accuracy &lt; 0.9 &amp; AUC &gt; 0.5</p>" in page
    assert "<th>split</th><th>ai</th><th>accuracy</th>" in page
    assert "<td>train</td><td>14</td><td>0.1235</td>" in page
    assert "<curve>" not in page and "<42>" not in page and "< 0.9" not in page
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded and base64.b64decode(embedded.group(1)) == figure.read_bytes()
    assert "figures/roc.png" not in page  # nothing to link: the page travels alone
