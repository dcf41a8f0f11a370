"""Fuzz targets: one function per decoder entry point, ``bytes -> None``.

The contract they check is the project's rule for bad input: the only acceptable outcomes are a valid result or one
of pneumoscan's own errors (:class:`~pneumoscan.errors.PneumoError`). Any other exception escapes (and is a bug); a
result that breaks its own contract (an image outside [0, 1], a 500 from the server) raises :class:`FuzzBug`.

Shared by the bounded property tests (``tests/security/test_fuzz.py``, hypothesis) and the coverage-guided harness
(``fuzz/harness.py``, atheris).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.errors import PneumoError

#: Pixel limit while fuzzing: a mutated header may declare any size; keep each decode small and fast.
FUZZ_MAX_PIXELS = 1_000_000


class FuzzBug(AssertionError):
    """A result that breaks its contract (as opposed to an unexpected exception, which escapes by itself)."""


def check_image(arr: object) -> None:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2 or 0 in arr.shape:
        raise FuzzBug(f"read_image returned {type(arr).__name__} {getattr(arr, 'dtype', '')} "
                      f"{getattr(arr, 'shape', '')}")
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
        raise FuzzBug(f"read_image returned values outside [0, 1]: {arr.min()} .. {arr.max()}")


def image(data: bytes) -> None:
    """``read_image`` and ``probe_image`` on bytes (every format: sniffing, Pillow, DICOM)."""
    from pneumoscan.data.io import probe_image, read_image

    try:
        check_image(read_image(data, name="fuzz", max_pixels=FUZZ_MAX_PIXELS))
    except PneumoError:
        pass
    try:
        info = probe_image(data, name="fuzz")
        if info.width < 0 or info.height < 0:
            raise FuzzBug(f"probe_image returned a negative size {info}")
    except PneumoError:
        pass


def dicom(data: bytes) -> None:
    """The DICOM decoder through its two doors: a Part 10 file (preamble + ``DICM``) and a preamble-less stream."""
    image(data if data[128:132] == b"DICM" else b"\0" * 128 + b"DICM" + data)
    image(data)


_TMP = Path(tempfile.mkdtemp(prefix="pneumoscan-fuzz-"))


def _as_file(data: bytes, name: str) -> Path:
    path = _TMP / f"{os.getpid()}-{name}"
    path.write_bytes(data)
    return path


def manifest(data: bytes) -> None:
    """A manifest CSV (``--data manifest.csv``) and the public collections' CSV reader."""
    from pneumoscan.data.records import load_manifest
    from pneumoscan.data.sources import load_records
    from pneumoscan.data.sources._common import read_table

    path = _as_file(data, "manifest.csv")
    calls: tuple[Callable[[], Any], ...] = (lambda: load_manifest(path), lambda: load_records(path),
                                            lambda: read_table(path, ["path"]))
    for call in calls:
        try:
            rows = call()
        except PneumoError:
            continue
        if not isinstance(rows, list):
            raise FuzzBug(f"a manifest loader returned {type(rows).__name__}")


def config(data: bytes) -> None:
    """A YAML config file (``train --config``) → ``TrainConfig``."""
    from pneumoscan.training.config import TrainConfig, load_config_file

    path = _as_file(data, "config.yaml")
    try:
        cfg = TrainConfig.from_dict(load_config_file(path))
    except PneumoError:
        return
    if TrainConfig.from_dict(cfg.to_dict()) != cfg:
        raise FuzzBug("a TrainConfig does not survive to_dict/from_dict")


_CLIENT: Any = None


def _client() -> Any:
    """One TestClient (onnx backend) on the tiny model that tests.serving.support trains once per folder."""
    global _CLIENT
    if _CLIENT is None:
        from fastapi.testclient import TestClient
        from tests.serving.support import tiny_model

        from pneumoscan.serving.app import create_app
        from pneumoscan.serving.settings import ServeSettings

        model = tiny_model(Path(os.environ.get("PNEUMOSCAN_FUZZ_MODEL_DIR", str(_TMP))))
        settings = ServeSettings(checkpoint=model.onnx, backend="onnx", max_pixels=FUZZ_MAX_PIXELS, max_files=4,
                                 max_upload_mb=1)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        _CLIENT = client
    return _CLIENT


def start_client() -> None:
    """Build the upload targets' TestClient now (the tiny model is trained on first use, which takes a while)."""
    _client()


def use_client(client: Any) -> None:
    """Fuzz the uploads against this (already started) TestClient instead of building one."""
    global _CLIENT
    _CLIENT = client


ALLOWED_STATUS = {200, 400, 401, 413, 415, 422}


def upload_body(body: bytes, content_type: str = "multipart/form-data; boundary=fuzzb") -> None:
    """A raw request body to ``POST /v1/predict``: the multipart parser, the form handling and the decoders."""
    r = _client().post("/v1/predict", content=body, headers={"content-type": content_type})
    if r.status_code not in ALLOWED_STATUS:
        raise FuzzBug(f"POST /v1/predict answered {r.status_code}: {r.text[:200]}")
    if r.status_code != 200 and not isinstance(r.json().get("detail"), str):
        raise FuzzBug(f"error answer without a string detail: {r.text[:200]}")


def upload(data: bytes) -> None:
    """``data`` as one uploaded file in a well-formed multipart body (so the decoders behind the server are reached)."""
    boundary = b"fuzzb"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"files\"; filename=\"f.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n")
    upload_body(body)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "image": image, "dicom": dicom, "manifest": manifest, "config": config, "upload": upload,
    "multipart": upload_body,
}
