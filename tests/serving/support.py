"""Helpers shared by tests/serving and tests/export: one tiny trained model per session, test images, and a real
uvicorn server in a subprocess on a free loopback port.

The tiny model is trained and exported at most once per test session (cached under pytest's session base temp
folder), whichever of the two test folders asks first.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from tests.fixtures import make_dataset_folder, make_xray_like, write_dicom

if TYPE_CHECKING:
    from pneumoscan.inference.predictor import Predictor

IMAGE_SIZE = 32
#: Python source that makes PyTorch (and what needs it) unimportable, as in ``pip install "pneumoscan[serve,onnx]"``.
#: A meta-path finder rather than ``sys.modules["torch"] = None``: with the latter, ``"torch" in sys.modules`` is true
#: and libraries that probe ``sys.modules`` for torch tensors (scipy's array-API helpers) crash, which a real install
#: without torch never does. Every ``import torch`` still fails, which is what the tests need.
NO_TORCH_PRELUDE = (
    "import sys, importlib.abc\n"
    "class _NoTorch(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'torchvision', 'timm', 'pytorch_grad_cam'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r} (blocked: slim install)', name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, _NoTorch())\n"
)
#: Runs ``pneumoscan`` without PyTorch.
NO_TORCH_MAIN = NO_TORCH_PRELUDE + "from pneumoscan.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
WITH_TORCH_MAIN = "import sys; from pneumoscan.cli.main import main; sys.exit(main(sys.argv[1:]))"


@dataclass(frozen=True)
class TinyModel:
    checkpoint: Path
    onnx: Path


def tiny_checkpoint(base: Path) -> Path:
    """Train (once per session) a 2-epoch ``cnn`` at 32 px on a synthetic Kaggle-layout folder; returns best.pt."""
    run = base / "tiny-run"
    best = run / "best.pt"
    if best.is_file():
        return best
    from pneumoscan.cli.main import main

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = make_dataset_folder(base / "tiny-data", size=IMAGE_SIZE, seed=0)
    code = main(["train", "--data", str(data), "--model", "cnn", "--image-size", str(IMAGE_SIZE), "--epochs", "2",
                 "--batch-size", "8", "--workers", "1", "--output", str(run), "--cache-dir", str(base / "tiny-cache")])
    assert code == 0 and best.is_file(), f"training the tiny test model failed (exit {code})"
    return best


def tiny_model(base: Path) -> TinyModel:
    """The tiny checkpoint and its ONNX export (dynamo exporter, the default), both built once per session."""
    checkpoint = tiny_checkpoint(base)
    onnx_path = base / "tiny-run" / "model.onnx"
    if not onnx_path.is_file():
        from pneumoscan.export.onnx import export_onnx

        export_onnx(checkpoint, onnx_path)
    return TinyModel(checkpoint, onnx_path)


@pytest.fixture(scope="module")
def torch_predictor(tiny: TinyModel) -> Predictor:
    """The tiny model through the PyTorch backend (fp32, CPU); needs a ``tiny`` fixture in scope."""
    from pneumoscan.inference.predictor import Predictor

    return Predictor.from_checkpoint(tiny.checkpoint, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def onnx_predictor(tiny: TinyModel) -> Predictor:
    """The tiny model's ONNX export through ONNX Runtime; needs a ``tiny`` fixture in scope."""
    from pneumoscan.inference.predictor import Predictor

    return Predictor.load(tiny.onnx, backend="onnx")


def xray(seed: int = 1, size: int = 64, positive: bool = True) -> np.ndarray:
    return make_xray_like(np.random.default_rng(seed), size, positive=positive)


def png_bytes(seed: int = 1, size: int = 64, positive: bool = True) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(xray(seed, size, positive)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int = 2, size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(xray(seed, size)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(xray(3)).save(buf, format="GIF")
    return buf.getvalue()


def dicom_bytes(tmp: Path, **kwargs: object) -> bytes:
    """A DICOM written by tests.fixtures.write_dicom (default: a 64×64 X-ray-like CR image)."""
    path = write_dicom(tmp / f"img-{time.monotonic_ns()}.dcm", **kwargs)  # type: ignore[arg-type]
    return path.read_bytes()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the tiny race until the server binds it is acceptable in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running_server(args: Sequence[str], log: Path, *, block_torch: bool = False, env: dict[str, str] | None = None,
                   startup_timeout: float = 90.0) -> Iterator[Server]:
    """Start ``pneumoscan serve ARGS`` on a free 127.0.0.1 port; yield once /healthz answers; stop it with SIGINT.

    Args:
        args: serve options (``--checkpoint ...``), without host and port.
        log: file receiving the server's stdout and stderr (read it when a test fails).
        block_torch: run with PyTorch unimportable (:data:`NO_TORCH_PRELUDE`: the slim, ONNX-only install).
        env: extra environment variables (e.g. ``PNEUMOSCAN_API_KEY``).
    """
    import httpx

    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMOSCAN_")}
    environment.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    cmd = [sys.executable, "-c", NO_TORCH_MAIN if block_torch else WITH_TORCH_MAIN, "serve", "--host", "127.0.0.1",
           "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=environment)
    server = Server(url, proc, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode} before answering:\n{server.log_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not answer /healthz in {startup_timeout} s:\n{server.log_text()}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
