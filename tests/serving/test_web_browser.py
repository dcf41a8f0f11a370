"""The web page in a real headless Chromium against a real uvicorn server (torch backend, API key required).

Uses Debian's /usr/bin/chromium through Python Playwright (never a downloaded browser); skipped when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures import write_dicom, write_png
from tests.serving.support import TinyModel, running_server, xray

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOT_DIR = Path(os.environ.get("PNEUMOSCAN_SCREENSHOT_DIR", "/tmp"))
API_KEY = "browser-test-key"

pytestmark = pytest.mark.browser


def _api_probability(url: str, path: Path) -> float:
    r = httpx.post(f"{url}/v1/predict", files={"files": (path.name, path.read_bytes())},
                   headers={"X-API-Key": API_KEY}, timeout=60)
    assert r.status_code == 200, r.text
    return float(r.json()["results"][0]["probability"])


def _wait_result(page: Any, filename: str) -> None:
    page.wait_for_function(
        "name => document.getElementById('file-name').textContent === name"
        " && document.getElementById('probability').dataset.value !== ''"
        " && !document.getElementById('result').hidden", arg=filename, timeout=60_000)


def test_web_page_end_to_end(tiny: TinyModel, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium); the page test needs a real browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")

    png = write_png(tmp_path / "chest_pa.png", xray(21, 256))
    dcm = write_dicom(tmp_path / "chest_cr.dcm", xray(22, 192, positive=False), photometric="MONOCHROME2")
    black = write_png(tmp_path / "black.png", np.zeros((128, 128), np.uint8))
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is a text file with a .png name")

    with running_server(["--checkpoint", str(tiny.checkpoint), "--precision", "fp32"], tmp_path / "server.log",
                        env={"PNEUMOSCAN_API_KEY": API_KEY}) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            foreign: list[str] = []
            page.on("request", lambda req: None if req.url.startswith((server.url, "data:")) else
                    foreign.append(req.url))
            console_errors: list[str] = []
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

            page.goto(server.url + "/")
            # The server requires a key: the page asks for it.
            page.wait_for_selector("#key-panel:not([hidden])", timeout=30_000)
            page.fill("#api-key", API_KEY)
            page.click("#key-form button")
            page.wait_for_selector("#key-panel[hidden]", state="attached", timeout=30_000)
            page.wait_for_function("() => document.getElementById('model-name').textContent === 'cnn'", timeout=30_000)

            # PNG: probability shown, equal to the API's number for the same file.
            page.set_input_files("#file-input", str(png))
            _wait_result(page, png.name)
            shown = page.text_content("#probability")
            exact = float(page.get_attribute("#probability", "data-value"))
            api = _api_probability(server.url, png)
            assert exact == pytest.approx(api, abs=1e-12)
            digits = len(shown.split(".")[1])  # 4, more only when needed to tell it from the threshold
            assert digits >= 4 and shown == f"{api:.{digits}f}"
            assert page.text_content("#label") in ("NORMAL", "PNEUMONIA")
            assert page.text_content("#threshold") not in ("", "–")
            assert page.is_visible("#preview")

            # Heatmap overlay: hidden until the checkbox is ticked, then a loaded image over the X-ray.
            assert not page.is_visible("#overlay")
            page.check("#heatmap-toggle")
            page.wait_for_selector("#overlay", state="visible", timeout=10_000)
            assert page.evaluate("document.getElementById('overlay').naturalWidth") > 0
            box_img, box_overlay = page.locator("#preview").bounding_box(), page.locator("#overlay").bounding_box()
            assert box_img and box_overlay
            assert abs(box_img["width"] - box_overlay["width"]) < 2
            assert abs(box_img["height"] - box_overlay["height"]) < 2
            page.screenshot(path=str(SCREENSHOT_DIR / "pneumoscan_page_png.png"), full_page=True)
            page.uncheck("#heatmap-toggle")
            assert not page.is_visible("#overlay")
            page.check("#heatmap-toggle")

            # DICOM: the browser cannot render it, the server's preview is shown.
            page.set_input_files("#file-input", str(dcm))
            _wait_result(page, dcm.name)
            assert float(page.get_attribute("#probability", "data-value")) == pytest.approx(
                _api_probability(server.url, dcm), abs=1e-12)
            assert page.evaluate("document.getElementById('preview').naturalWidth") == 192
            assert page.is_visible("#overlay")  # the toggle stays on for the next image
            page.screenshot(path=str(SCREENSHOT_DIR / "pneumoscan_page_dicom.png"), full_page=True)

            # An invalid file: a clear error, no stale result.
            page.set_input_files("#file-input", str(junk))
            page.wait_for_selector("#error:not([hidden])", timeout=30_000)
            error = page.text_content("#error-text") or ""
            assert error.startswith("notes.png: not an image")
            assert page.is_hidden("#result")
            page.screenshot(path=str(SCREENSHOT_DIR / "pneumoscan_page_error.png"), full_page=True)

            # A black image: the competence gate refuses it, and the page says so in words, with no label.
            page.set_input_files("#file-input", str(black))
            _wait_result(page, black.name)
            page.wait_for_selector("#scope-warning:not([hidden])", timeout=30_000)
            assert "Out of scope" in (page.text_content("#scope-warning") or "")
            assert "blank" in (page.text_content("#scope-reason") or "")
            assert page.text_content("#label") == "OUT OF SCOPE"
            page.screenshot(path=str(SCREENSHOT_DIR / "pneumoscan_page_out_of_scope.png"), full_page=True)

            # And a good file works again afterwards.
            page.set_input_files("#file-input", str(png))
            _wait_result(page, png.name)
            assert page.is_hidden("#error")
            assert page.is_hidden("#scope-warning") and page.text_content("#label") in ("NORMAL", "PNEUMONIA")

            assert foreign == [], f"the page requested outside the server: {foreign}"
            # Expected: the 401 of the first model request (before the key was entered) and the 415 of the junk file.
            expected = ("status of 401", "status of 415")
            assert not [e for e in console_errors if not any(x in e for x in expected)], console_errors
        finally:
            browser.close()
