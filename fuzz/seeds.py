"""Seed inputs for the fuzz tests and the atheris harness: small valid files of every decoder path (built here, so
the default suite needs no data), plus the real files of ``../shared/data`` when they are present."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tests.fixtures import make_xray_like, write_dicom

SHARED = Path(os.environ.get("PNEUMOSCAN_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def _pil(arr: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def synthetic_seeds(tmp: Path) -> dict[str, bytes]:
    """One small file per decoder path: PNG 8/16-bit, JPEG grey/RGB, TIFF, BMP, and DICOM variants (8/12/16-bit,
    MONOCHROME1, rescale, window, RGB, RLE and JPEG compressed, preamble-less)."""
    rng = np.random.default_rng(0)
    grey = make_xray_like(rng, 24, positive=True)
    seeds = {
        "grey.png": _pil(grey, "PNG"),
        "grey16.png": _pil((grey.astype(np.uint16) * 257), "PNG"),
        "grey.jpg": _pil(grey, "JPEG", quality=90),
        "rgb.jpg": _pil(np.stack([grey] * 3, axis=-1), "JPEG"),
        "grey.tif": _pil(grey, "TIFF"),
        "grey.bmp": _pil(grey, "BMP"),
    }
    tmp.mkdir(parents=True, exist_ok=True)
    dicoms: dict[str, dict[str, object]] = {
        "plain.dcm": {},
        "u12-mono1.dcm": {"bits_stored": 12, "photometric": "MONOCHROME1"},
        "u16-rescale-window.dcm": {"bits_stored": 16, "rescale": (2.0, -100.0), "window": (500.0, 800.0)},
        "rgb.dcm": {"rgb": True, "photometric": "RGB"},
        "rle.dcm": {"compressed": "rle"},
        "jpeg.dcm": {"compressed": "jpeg"},
        "raw.dcm": {"preamble": False},
    }
    for name, kwargs in dicoms.items():
        arr = None if kwargs.get("rgb") else np.asarray(grey, dtype=np.uint16 if kwargs.get("bits_stored", 8) != 8
                                                         else np.uint8)
        if arr is not None and kwargs.get("bits_stored", 8) != 8:
            arr = (arr * (2 ** (int(kwargs["bits_stored"]) - 8))).astype(np.uint16)  # type: ignore[call-overload]
        if kwargs.get("rgb"):
            arr = np.stack([grey] * 3, axis=-1)
        seeds[name] = write_dicom(tmp / name, arr, **kwargs).read_bytes()  # type: ignore[arg-type]
    return seeds


def real_seeds(limit_jpegs: int = 4) -> dict[str, bytes]:
    """A few Kermany JPEGs (224 px and one original-size) and the real DICOMs, when ../shared/data is present."""
    out: dict[str, bytes] = {}
    for folder in ("kermany224/test/NORMAL", "kermany224/test/PNEUMONIA"):
        for path in sorted((SHARED / folder).glob("*.jpeg"))[: limit_jpegs // 2]:
            out[f"{folder}/{path.name}"] = path.read_bytes()
    originals = sorted((SHARED / "kermany_originals").rglob("*.jpeg"))
    if originals:
        out[f"originals/{originals[0].name}"] = originals[0].read_bytes()
    for path in sorted((SHARED / "dicom").glob("*.dcm")):
        out[f"dicom/{path.name}"] = path.read_bytes()
    return out
