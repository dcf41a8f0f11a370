"""The HTML report renders in a real headless chromium, offline (product spec: checked in the test suite).

Uses the Debian chromium at /usr/bin/chromium through Playwright; skipped with a reason when either is missing
(browsers are never downloaded by the tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.evaluation.test_report import make_report

CHROMIUM = Path(os.environ.get("PNEUMOSCAN_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT = Path("/tmp/pneumoscan_report_browser.png")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


def test_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="python package 'playwright' is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"chromium not found at {CHROMIUM} (set PNEUMOSCAN_CHROMIUM)")
    make_report(tmp_path)
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda req: requests.append(req.url))
            page.goto((tmp_path / "report.html").as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth}))")
            metrics_rows = page.locator("table#metrics tbody tr").count()
            header = page.locator("h1").inner_text()
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert len(images) >= 7, images  # five figures and gallery images
    assert all(img["complete"] and img["w"] > 0 for img in images), [i for i in images if not i["w"]]
    assert metrics_rows == 9 and "resnet18 <b>&</b>" in header
    assert requests and all(url.startswith(("data:", "file:")) for url in requests), requests
