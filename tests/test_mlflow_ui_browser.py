"""The MLflow UI in a real browser (Debian's Chromium, Playwright): the link `make ui` prints opens the
training runs, not MLflow 3's GenAI overview (issue 14). The screenshot is the README's."""

from __future__ import annotations

import shutil
import sys

import pytest
from conftest import free_port, isolated_env, running_server
from test_webapp_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

from aivsreal import tracking


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no browser: Debian's chromium is not installed (.ci/run installs it)"
)
def test_the_ui_link_opens_the_training_runs_with_the_model_registry_at_hand(tiny_champion_store, tmp_path):
    from mlflow import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    client = MlflowClient(tiny_champion_store)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    run_name = client.search_runs([experiment.experiment_id])[0].info.run_name
    port = free_port()
    mlflow = shutil.which("mlflow") or f"{sys.prefix}/bin/mlflow"
    command = [mlflow, "ui", "--backend-store-uri", tiny_champion_store, "-h", "127.0.0.1", "-p", str(port)]
    with running_server(command, port, "/health", tmp_path, isolated_env(), timeout=120) as base:
        tracking.configure_tracking(tiny_champion_store)
        url = tracking.ui_url(base, "tiny")
        assert url.endswith(f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning")
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 800})
                page.goto(url)
                expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=60_000)
                expect(page.get_by_text(run_name)).to_be_visible(timeout=30_000)
                expect(page.get_by_text("Model registry")).to_be_visible()
                expect(page.get_by_text("No data available for the selected time range")).to_have_count(0)
                page.screenshot(path=str(ARTIFACTS / "mlflow_ui_runs.png"))
            finally:
                browser.close()
    assert (ARTIFACTS / "mlflow_ui_runs.png").stat().st_size > 10_000
