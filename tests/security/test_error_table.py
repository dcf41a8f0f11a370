"""One table of error classes → HTTP status (pneumoscan.errors.ERROR_TABLE), checked per class for JPEG, PNG and
DICOM: the decoder raises the class, the table gives the status, and the server answers exactly that status.

Images for the decode cases are 24×24 (576 pixels) so that the server's pixel limit (1,000) is not what refuses them;
the "too large" cases use 64×64 (4,096 pixels).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pneumoscan.data.io import read_image
from pneumoscan.errors import (
    ERROR_TABLE,
    CorruptDicomError,
    CorruptImageError,
    DicomError,
    ImageReadError,
    ImageTooLargeError,
    RequestTooLargeError,
    UnsupportedImageError,
    error_kind,
    http_status,
)
from pneumoscan.serving.app import create_app
from pneumoscan.serving.settings import ServeSettings
from tests.fixtures import make_xray_like, write_dicom
from tests.serving.support import TinyModel, tiny_model

SMALL, BIG = 24, 64


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tiny: TinyModel = tiny_model(tmp_path_factory.getbasetemp())
    settings = ServeSettings(checkpoint=tiny.onnx, backend="onnx", max_upload_mb=0.03, max_pixels=1000, max_files=3)
    with TestClient(create_app(settings)) as c:
        yield c


def _pixels(size: int) -> np.ndarray:
    return make_xray_like(np.random.default_rng(size), size, positive=True)


def _pil(fmt: str, size: int = SMALL) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels(size)).save(buf, format=fmt)
    return buf.getvalue()


def _dicom(tmp: Path, size: int = SMALL, **kwargs: object) -> bytes:
    return write_dicom(tmp / f"x{size}-{len(kwargs)}.dcm", _pixels(size), **kwargs).read_bytes()  # type: ignore[arg-type]


def _corrupt_middle(data: bytes) -> bytes:
    """Overwrite the middle third with 0xFF bytes: the header survives, the coded data does not."""
    n = len(data)
    return data[: n // 3] + b"\xff" * (n // 3) + data[2 * n // 3:]


Make = Callable[[Path], bytes]
# (family, case, bytes, decoder error class, HTTP status, words in the message)
CASES: list[tuple[str, str, Make, type[ImageReadError], int, str]] = [
    ("jpeg", "truncated", lambda t: _pil("JPEG")[:-60], CorruptImageError, 422, "truncated or corrupt JPEG"),
    ("jpeg", "truncated header", lambda t: _pil("JPEG")[:300], CorruptImageError, 422, "JPEG"),
    ("jpeg", "corrupt header", lambda t: _pil("JPEG")[:4] + b"\x00" * 300, CorruptImageError, 422, "JPEG"),
    ("jpeg", "empty", lambda t: b"", CorruptImageError, 422, "empty file"),
    ("jpeg", "too many pixels", lambda t: _pil("JPEG", BIG), ImageTooLargeError, 413, "image too large"),
    ("png", "truncated", lambda t: _pil("PNG")[:-30], CorruptImageError, 422, "truncated or corrupt PNG"),
    ("png", "corrupt data", lambda t: _corrupt_middle(_pil("PNG")), CorruptImageError, 422, "PNG"),
    ("png", "too many pixels", lambda t: _pil("PNG", BIG), ImageTooLargeError, 413, "image too large"),
    ("dicom", "truncated pixel data", lambda t: _dicom(t)[:-100], CorruptDicomError, 422,
     "truncated or corrupt DICOM pixel data"),
    ("dicom", "truncated header", lambda t: _dicom(t)[:200], CorruptDicomError, 422, "truncated or corrupt DICOM"),
    ("dicom", "corrupt header", lambda t: b"\0" * 128 + b"DICM" + b"\xff" * 64, CorruptDicomError, 422,
     "truncated or corrupt DICOM"),
    ("dicom", "too many pixels", lambda t: _dicom(t, BIG), ImageTooLargeError, 413, "image too large"),
    ("dicom", "palette colour", lambda t: _dicom(t, photometric="PALETTE COLOR"), DicomError, 415, "PALETTE COLOR"),
    ("dicom", "no pixel data", lambda t: _dicom(t, no_pixels=True), DicomError, 415, "no pixel data"),
    ("other", "WebP", lambda t: _pil("WEBP"), UnsupportedImageError, 415, "unsupported image format WebP"),
    ("other", "GIF", lambda t: _pil("GIF"), UnsupportedImageError, 415, "unsupported image format GIF"),
    ("other", "random bytes", lambda t: np.random.default_rng(0).bytes(2000), UnsupportedImageError, 415,
     "not an image"),
]
IDS = [f"{c[0]}-{c[1].replace(' ', '-')}" for c in CASES]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on garbage
@pytest.mark.parametrize(("family", "case", "make", "error", "status", "words"), CASES, ids=IDS)
def test_class_and_status_agree(client: TestClient, tmp_path: Path, family: str, case: str, make: Make,
                                error: type[ImageReadError], status: int, words: str) -> None:
    data = make(tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(data, name="f", max_pixels=1000)
    assert type(info.value) is error, f"{family} {case}: {info.value!r}"
    assert http_status(info.value) == status
    assert words.lower() in str(info.value).lower()
    r = client.post("/v1/predict", files=[("files", (f"{family}.bin", data, "application/octet-stream"))])
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(f"{family}.bin: ")


def test_truncated_dicom_pixel_data_is_422_not_415() -> None:
    """The issue's case: a DicomError (415) that is really corrupt data is 422 through CorruptImageError."""
    err = CorruptDicomError("x.dcm", "truncated or corrupt DICOM pixel data")
    assert isinstance(err, DicomError) and http_status(err) == 422 and error_kind(err) == "unreadable"
    assert http_status(DicomError("x.dcm", "no pixel data")) == 415


@pytest.mark.parametrize("family", ["jpeg", "png", "dicom"])
def test_too_many_bytes_and_too_many_files_are_413(client: TestClient, tmp_path: Path, family: str) -> None:
    good = {"jpeg": lambda: _pil("JPEG"), "png": lambda: _pil("PNG"), "dicom": lambda: _dicom(tmp_path)}[family]()
    assert client.post("/v1/predict", files=[("files", ("ok", good, "x/y"))]).status_code == 200
    heavy = good + b"\0" * 40_000  # over --max-upload-mb 0.03
    r = client.post("/v1/predict", files=[("files", ("heavy", heavy, "x/y"))])
    assert r.status_code == 413 and "file too large" in r.json()["detail"]
    r = client.post("/v1/predict", files=[("files", (f"{i}", good, "x/y")) for i in range(4)])
    assert r.status_code == 413 and "too many files" in r.json()["detail"]
    assert http_status(RequestTooLargeError("too many files")) == 413


def test_table_covers_every_image_error_and_defaults_for_the_rest() -> None:
    classes = [row[0] for row in ERROR_TABLE]
    for cls in (CorruptImageError, UnsupportedImageError, DicomError, CorruptDicomError, ImageTooLargeError,
                RequestTooLargeError, ImageReadError):
        assert any(issubclass(cls, c) for c in classes)
    assert {row[1] for row in ERROR_TABLE} == {413, 415, 422}
    from pneumoscan.errors import CheckpointError, ConfigError

    assert http_status(ConfigError("bad option")) == 400 and error_kind(ConfigError("x")) == "error"
    assert http_status(CheckpointError("x"), default=500) == 500
