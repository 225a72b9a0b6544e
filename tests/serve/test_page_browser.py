"""The web page in a real browser: headless Debian Chromium, driven by Playwright (which never downloads
a browser of its own here), uploads a real CIFAR row on the page, reads the top 3 from the page, and
saves a screenshot. Chromium is installed with apt-get when missing (CI runs as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import trtinfer
from trtinfer.preprocess import decode_image_bytes

from .conftest import encode

SCREENSHOT_DIR = Path(os.environ.get("TRTINFER_SCREENSHOTS", "build/screenshots"))


def chromium_path() -> str:
    """Debian's chromium, installed on first use where this process may (root, apt-get present)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Chromium is not installed and this user cannot install it (apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed: {result.stderr[-500:]}")
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


def test_upload_on_the_page_shows_the_top_3(server, tiny_served, cifar_images, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    png = encode(cifar_images[3], "PNG")
    image = tmp_path / "cifar-3.png"
    image.write_bytes(png)
    with trtinfer.load(tiny_served) as model:
        expected = model.predict([decode_image_bytes(png)], top_k=3)[0]
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=30_000)
            assert "tiny" in page.inner_text("#facts")
            page.set_input_files("#file", str(image))
            page.wait_for_selector(".prediction", timeout=30_000)
            rows = page.locator(".prediction")
            labels = [rows.nth(i).locator(".label").inner_text() for i in range(rows.count())]
            percents = [float(rows.nth(i).locator(".pct").inner_text().split()[0]) for i in range(rows.count())]
            bars = [rows.nth(i).locator(".fill").bounding_box()["width"] / rows.nth(i).locator(".bar").bounding_box()["width"]
                    for i in range(rows.count())]
            assert page.locator("#preview").is_visible()
            page.screenshot(path=str(SCREENSHOT_DIR / "serve-page.png"), full_page=True)
        finally:
            browser.close()
    assert labels == [label for label, _ in expected]
    assert percents == pytest.approx([100 * p for _, p in expected], abs=0.06)
    assert bars == pytest.approx([p for _, p in expected], abs=0.01)  # the confidence bars are drawn to scale
    assert (SCREENSHOT_DIR / "serve-page.png").stat().st_size > 1000
