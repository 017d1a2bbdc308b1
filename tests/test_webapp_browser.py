"""End to end in a real browser: Debian's Chromium, driven by Playwright, against `streamlit run`."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import PROJECT, free_port, png_bytes, running_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT / "test-artifacts"
# Flags the machine needs: no sandbox as root, and no background calls into a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


@contextlib.contextmanager
def streamlit_app(model_dir: Path):
    """`streamlit run webapp/app.py` on a free port with `model_dir` as its model; its URL."""
    port = free_port()
    env = dict(os.environ, AIVSREAL_MODEL=str(model_dir))
    command = [shutil.which("streamlit") or "streamlit", "run", "webapp/app.py", "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port)]  # fmt: skip
    with running_server(command, port, "/_stcore/health", PROJECT, env, timeout=60) as url:
        yield url


@pytest.fixture(scope="module")
def app_url(tiny_model_dir):
    """One app for the module's tests (about 14 s to start); each test opens its own page, so its own session."""
    with streamlit_app(tiny_model_dir) as url:
        yield url


@pytest.fixture()
def crop_app_url(tiny_crop_model_dir):
    """The app on a model trained on face crops: it finds the faces by default (issue 17)."""
    with streamlit_app(tiny_crop_model_dir) as url:
        yield url


@contextlib.contextmanager
def app_page(app_url: str):
    """The app's page in headless Chromium, loaded and showing its title."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)  # screenshots land here

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(app_url)
            expect(page.get_by_text("AI-generated or real face?")).to_be_visible(timeout=60_000)
            yield page
        finally:
            browser.close()


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no browser: Debian's chromium is not installed (.ci/run installs it)"
)
def test_upload_a_face_and_see_the_verdict_in_a_real_browser(app_url, tmp_path):
    from playwright.sync_api import expect

    face = tmp_path / "face.png"
    face.write_bytes(png_bytes(7, size=96))
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"plain text pretending to be a PNG")
    with app_page(app_url) as page:
        page.locator('input[type="file"]').set_input_files([str(face), str(not_an_image)])
        expect(page.get_by_text("Verdict:")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("p(ai) =")).to_be_visible()
        expect(page.get_by_text("p(real) =")).to_be_visible()
        expect(page.get_by_text("notes.png: cannot use this file")).to_be_visible()
        expect(page.get_by_text("face.png: Grad-CAM for")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "webapp_verdict.png"), full_page=True)
    assert (ARTIFACTS / "webapp_verdict.png").stat().st_size > 10_000


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no browser: Debian's chromium is not installed (.ci/run installs it)"
)
def test_a_50_mb_upload_and_a_decompression_bomb_are_refused_and_the_next_upload_is_served(app_url, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.write(png_bytes(1) + os.urandom(50_000_000))  # 50 MB, over the 25 MB upload limit
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb, optimize=True)  # 100 MP in a file of about 12 KB
    assert bomb.stat().st_size < 100_000
    face = tmp_path / "face.png"
    face.write_bytes(png_bytes(8, size=96))
    with app_page(app_url) as page:
        uploader = page.locator('input[type="file"]')
        uploader.set_input_files([str(huge)])
        expect(page.get_by_text("File must be 25.0MB or smaller.")).to_be_visible(timeout=60_000)
        uploader.set_input_files([str(bomb)])
        expect(page.get_by_text("bomb.png: cannot use this file")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("too large", exact=False).first).to_be_visible()
        uploader.set_input_files([str(face)])
        expect(page.get_by_text("Verdict:")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("face.png: Grad-CAM for")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "webapp_refusals.png"), full_page=True)


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no browser: Debian's chromium is not installed (.ci/run installs it)"
)
def test_each_face_of_a_group_photo_is_judged_and_a_picture_without_one_is_flagged(crop_app_url, tmp_path):
    import re

    from helpers_faces import group_and_wall
    from playwright.sync_api import expect

    group, _, wall = group_and_wall(tmp_path)
    with app_page(crop_app_url) as page:
        page.locator('input[type="file"]').set_input_files([str(group), str(wall)])
        expect(page.get_by_text("3 face(s) found.")).to_be_visible(timeout=60_000)
        titles = page.get_by_text(re.compile(r"^Face [0-9]: (ai|real) \(p_(ai|real) = [0-9.]+%\)$"))
        expect(titles).to_have_count(3)
        expect(titles.first).to_contain_text("Face 1: ")
        expect(page.get_by_text("face 1: Grad-CAM")).to_be_visible()  # the first face's panel is open
        expect(page.get_by_text("wall.jpg: no face found")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "webapp_faces.png"), full_page=True)
