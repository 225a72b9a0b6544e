"""The web page in a real browser: headless Debian Chromium, driven by Playwright (which never downloads
a browser of its own here), uploads a real CIFAR row on the page with the keyboard alone, reads the top 3
from the page, uploads a text file and reads a plain error, and saves screenshots. Chromium is installed
with apt-get when missing (CI runs as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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


BROKEN_IMAGES = """[...document.images].filter((i) => !i.hidden && i.offsetParent !== null &&
                                             (!i.complete || i.naturalWidth === 0)).length"""


def opened(page, choosers: list, timeout_s: float = 30.0):
    """The file chooser the last key opened (the page's listener collects them)."""
    deadline = time.monotonic() + timeout_s
    while not choosers:
        assert time.monotonic() < deadline, "the key did not open the file chooser"
        page.wait_for_timeout(50)
    return choosers.pop()


def test_keyboard_upload_on_the_page_shows_the_top_3_and_a_plain_error_for_a_text_file(server, tiny_served,
                                                                                        cifar_images, tmp_path):
    """Only the keyboard: Tab to the upload button (its focus drawn), Enter opens the file chooser, the top 3 of a
    real CIFAR row appear; Space opens it again, a text file gets a plain sentence and leaves no broken image."""
    playwright = pytest.importorskip("playwright.sync_api")
    png = encode(cifar_images[3], "PNG")
    image = tmp_path / "cifar-3.png"
    image.write_bytes(png)
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    with trtinfer.load(tiny_served) as model:
        expected = model.predict([decode_image_bytes(png)], top_k=3)[0]
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            # Listen before any key is pressed: the listener turns on Chromium's file-chooser interception, which
            # expect_file_chooser() would only request as the key goes out (a race it lost under load in CI).
            choosers: list = []
            page.on("filechooser", lambda chooser: choosers.append(chooser))
            page.goto(server.url + "/")
            page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=30_000)
            assert "tiny" in page.inner_text("#facts")
            for _ in range(5):  # the model list, then the upload button
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.id") == "pick":
                    break
            assert page.evaluate("document.activeElement.id") == "pick"
            assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
            page.keyboard.press("Enter")
            opened(page, choosers).set_files(str(image))
            page.wait_for_selector(".prediction", timeout=30_000)
            rows = page.locator(".prediction")
            labels = [rows.nth(i).locator(".label").inner_text() for i in range(rows.count())]
            percents = [float(rows.nth(i).locator(".pct").inner_text().split()[0]) for i in range(rows.count())]
            bars = [rows.nth(i).locator(".fill").bounding_box()["width"] / rows.nth(i).locator(".bar").bounding_box()["width"]
                    for i in range(rows.count())]
            page.wait_for_selector("#preview", state="visible", timeout=10_000)
            page.screenshot(path=str(SCREENSHOT_DIR / "serve-page.png"), full_page=True)

            assert page.evaluate("document.activeElement.id") == "pick"  # focus came back to the button
            page.keyboard.press(" ")
            opened(page, choosers).set_files(str(text))
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
            error = page.inner_text("#error")
            broken = page.evaluate(BROKEN_IMAGES)
            predictions_left = page.locator(".prediction").count()
            page.screenshot(path=str(SCREENSHOT_DIR / "serve-page-not-an-image.png"), full_page=True)
        finally:
            browser.close()
    assert labels == [label for label, _ in expected]
    assert percents == pytest.approx([100 * p for _, p in expected], abs=0.06)
    assert bars == pytest.approx([p for _, p in expected], abs=0.01)  # the confidence bars are drawn to scale
    assert (SCREENSHOT_DIR / "serve-page.png").stat().st_size > 1000
    assert error.startswith("That file is not a JPEG, PNG or WebP image."), error
    assert "b'" not in error and "{" not in error
    assert broken == 0 and predictions_left == 0
