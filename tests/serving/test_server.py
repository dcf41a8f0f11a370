"""A real ``pneumoscan serve`` (uvicorn) in a subprocess on a free 127.0.0.1 port.

The server runs the onnx backend with PyTorch made unimportable (``support.NO_TORCH_PRELUDE``), which is what
``pip install "pneumoscan[serve,onnx]"`` gives: it proves the whole serving path — CLI, app, backend — needs no torch.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pneumoscan.inference.predictor import Predictor
from tests.serving.support import NO_TORCH_MAIN, TinyModel, dicom_bytes, png_bytes, running_server


def test_real_server_without_torch(tiny: TinyModel, tmp_path: Path) -> None:
    key = {"X-API-Key": "k-123"}
    png = png_bytes(11)
    with running_server(["--checkpoint", str(tiny.onnx), "--backend", "onnx", "--max-files", "4"],
                        tmp_path / "server.log", block_torch=True, env={"PNEUMOSCAN_API_KEY": "k-123"}) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/healthz").json()["auth_required"] is True
            assert client.post("/v1/predict", files={"files": ("a.png", png)}).status_code == 401
            model = client.get("/v1/model", headers=key).json()
            assert model["backend"] == "onnx" and model["heatmaps"] is False

            first = client.post("/v1/predict", files={"files": ("a.png", png)}, headers=key)
            assert first.status_code == 200, first.text
            (result,) = first.json()["results"]
            want = Predictor.load(tiny.onnx).predict_sources([png], names=["a.png"])[0]
            assert result["probability"] == pytest.approx(want.probability, abs=1e-7)

            # Bad requests do not hurt the server.
            bad = [({"files": ("t.png", b"not an image")}, 415), ({"files": ("e.png", b"")}, 422),
                   ({"files": ("p.dcm", dicom_bytes(tmp_path, photometric="PALETTE COLOR"))}, 415),
                   ({"files": ("h.png", png[:40])}, 422)]
            for files, status in bad:
                r = client.post("/v1/predict", files=files, headers=key)
                assert r.status_code == status, r.text
                assert r.json()["detail"].startswith(files["files"][0] + ": ")
            r = client.post("/v1/predict?heatmap=true", files={"files": ("a.png", png)}, headers=key)
            assert r.status_code == 400
            r = client.post("/v1/predict", files=[("files", (f"{i}.png", png)) for i in range(5)], headers=key)
            assert r.status_code == 413
            r = client.post("/v1/predict", headers=key)
            assert r.status_code == 422

            again = client.post("/v1/predict", files=[("files", ("a.png", png)), ("files", ("x.txt", b"x"))],
                                headers=key)
            assert again.status_code == 200
            assert again.json()["results"][0]["probability"] == result["probability"]
            assert "error" in again.json()["results"][1]
            assert server.process.poll() is None
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=20) == 0, server.log_text()
    log = server.log_text()
    assert "Traceback" not in log, log
    assert "k-123" not in log, "the API key must never be logged"


def test_serve_bad_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    done = subprocess.run([sys.executable, "-c", NO_TORCH_MAIN, "serve", "--backend", "onnx", "--checkpoint",
                           str(missing), "--port", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "not found" in done.stderr


def test_serve_bad_option_is_a_one_line_error(tiny: TinyModel) -> None:
    done = subprocess.run([sys.executable, "-c", NO_TORCH_MAIN, "serve", "--checkpoint", str(tiny.onnx),
                           "--backend", "onnx", "--max-upload-mb", "-1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "max_upload_mb" in done.stderr and "Traceback" not in done.stderr
