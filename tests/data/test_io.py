"""Tests of the image-reading layer: pneumoscan.data.io.read_image / probe_image and pneumoscan.data.dicom.

Expected values are computed independently of the implementation (from the stored arrays and the DICOM formulas),
so that a wrong scaling, a missing inversion or a lost bit depth shows up as a value mismatch.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscan.data.io import DEFAULT_MAX_PIXELS, ImageInfo, probe_image, read_image
from pneumoscan.errors import (
    CorruptDicomError,
    CorruptImageError,
    DicomError,
    ImageReadError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from tests.fixtures import (
    make_dataset_folder,
    make_xray_like,
    ramp,
    write_dicom,
    write_jpeg,
    write_png,
)

RNG_SEED = 1234
U8 = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit value once
U12 = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 16 + 15).astype(np.uint16)  # 15 .. 4095
U16 = np.array([[0, 1, 1000, 32768], [40000, 65000, 65534, 65535]], dtype=np.uint16)


def xray(size: int = 32, positive: bool = False, seed: int = RNG_SEED) -> np.ndarray:
    return make_xray_like(np.random.default_rng(seed), size, positive)


def dicom_window(y: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, output in [0, 1]."""
    c, w = center - 0.5, width - 1
    out = (y - c) / w + 0.5
    out = np.where(y <= c - w / 2, 0.0, out)
    return np.where(y > c + w / 2, 1.0, out)


def assert_one_line_error(err: ImageReadError, name: str, *fragments: str) -> None:
    text = str(err)
    assert text.startswith(f"{name}: "), text
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, text


# --------------------------------------------------------------------------------------------- PNG, JPEG, others


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        pytest.param(lambda p: write_png(p, U8), U8 / 255, id="png8-every-value"),
        pytest.param(lambda p: write_png(p, U16, bits=16), U16 / 65535, id="png16-full-range"),
        pytest.param(lambda p: write_png(p, U8, mode="LA"), U8 / 255, id="grey+alpha"),
        pytest.param(lambda p: write_png(p, U8, mode="RGB"), U8 / 255, id="rgb-identical-channels"),
        pytest.param(lambda p: write_png(p, U8, mode="RGBA"), U8 / 255, id="rgba-opaque"),
        pytest.param(lambda p: write_png(p, np.full((4, 5), 128, np.uint8)), np.full((4, 5), 128 / 255), id="constant"),
    ],
)
def test_png_values_exact(tmp_path: Path, writer: Callable[[Path], Path], expected: np.ndarray) -> None:
    out = read_image(writer(tmp_path / "img.png"))
    assert out.dtype == np.float32
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)


def test_png16_keeps_precision_beyond_8_bits(tmp_path: Path) -> None:
    out = read_image(write_png(tmp_path / "a.png", U16, bits=16))
    assert out[0, 0] == 0.0 and out[-1, -1] == 1.0
    assert 0 < out[0, 1] < 1 / 255  # value 1 of 65535 is not lost to 8-bit quantisation
    assert len(np.unique(out)) == U16.size


def test_rgb_to_grey_uses_luminance(tmp_path: Path) -> None:
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [10, 200, 30]]], np.uint8)
    expected = (colours.astype(float) @ [0.299, 0.587, 0.114]) / 255
    for mode in ("RGB", "RGBA", "P"):
        out = read_image(write_png(tmp_path / f"{mode}.png", colours, mode=mode))
        assert out.shape == (1, 6)
        np.testing.assert_allclose(out, expected, atol=1.01 / 255, err_msg=mode)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_close_to_source(tmp_path: Path, mode: str) -> None:
    src = xray(64)
    out = read_image(write_jpeg(tmp_path / "x.jpeg", src, mode=mode, quality=95))
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert np.abs(out - src / 255).mean() < 3 / 255


def test_bilevel_bmp_tiff16_and_float_tiff(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1").save(tmp_path / "b.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "b.bmp"), [[0, 1], [1, 0]])
    Image.fromarray(U16).save(tmp_path / "t16.tif")
    np.testing.assert_allclose(read_image(tmp_path / "t16.tif"), U16 / 65535, atol=1e-7)
    floats = np.array([[0.0, 2.0], [np.nan, 4.0]], np.float32)  # outside [0, 1]: own min/max; NaN → 0
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(read_image(tmp_path / "f.tif"), [[0.0, 0.5], [0.0, 1.0]], atol=1e-7)
    Image.fromarray(np.full((3, 3), 7.5, np.float32), mode="F").save(tmp_path / "c.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), np.zeros((3, 3)))  # constant: no 0/0


def test_exif_orientation_applied(tmp_path: Path) -> None:
    src = np.zeros((4, 8), np.uint8)
    src[0, 0] = 255
    im = Image.fromarray(src)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "o.jpeg", exif=exif.tobytes(), quality=100)
    out = read_image(tmp_path / "o.jpeg")
    assert out.shape == (8, 4)


# ---------------------------------------------------------------------------------------------------------- DICOM


def test_dicom_monochrome1_is_exact_inverse(tmp_path: Path) -> None:
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", U8))
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", U8, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono2, U8 / 255, atol=1e-7)
    np.testing.assert_array_equal(mono1, 1 - mono2)


@pytest.mark.parametrize(
    ("kwargs", "stored", "expected"),
    [
        pytest.param({"bits_stored": 8}, U8, U8 / 255, id="8bit"),
        pytest.param({"bits_stored": 12}, U12, U12 / 4095, id="12bit-by-bits-stored"),
        pytest.param({"bits_stored": 16}, U16, U16 / 65535, id="16bit"),
        pytest.param({"bits_stored": 12, "signed": True}, U12.astype(np.int16) - 2048, U12 / 4095, id="12bit-signed"),
        # Linear rescale without a window: the BitsStored range mapped through the rescale → same greys.
        pytest.param({"rescale": (2.0, -100.0)}, U8, U8 / 255, id="rescale-linear"),
        # Negative slope: higher stored values are darker after the Modality LUT.
        pytest.param({"rescale": (-1.0, 255.0)}, U8, 1 - U8 / 255, id="rescale-negative-slope"),
        pytest.param({"window": (100, 50)}, U8, dicom_window(U8.astype(float), 100, 50), id="window"),
        pytest.param({"window": (128, 256)}, U8, dicom_window(U8.astype(float), 128, 256), id="window-full"),
        pytest.param(
            {"rescale": (2.0, -100.0), "window": (100, 50)}, U8, dicom_window(U8 * 2.0 - 100, 100, 50),
            id="rescale-then-window",
        ),
        pytest.param(
            {"rescale": (-1.0, 255.0), "window": (100, 50)}, U8, dicom_window(255.0 - U8, 100, 50),
            id="negative-slope-window-keeps-below-window-black",
        ),
        pytest.param(
            {"bits_stored": 12, "window": (2048, 1024)}, U12, dicom_window(U12.astype(float), 2048, 1024),
            id="12bit-window",
        ),
        pytest.param(
            {"window": (100, 50), "photometric": "MONOCHROME1"}, U8, 1 - dicom_window(U8.astype(float), 100, 50),
            id="window-then-invert",
        ),
    ],
)
def test_dicom_values(tmp_path: Path, kwargs: dict[str, object], stored: np.ndarray, expected: np.ndarray) -> None:
    out = read_image(write_dicom(tmp_path / "x.dcm", stored, **kwargs))  # type: ignore[arg-type]
    assert out.dtype == np.float32 and out.shape == stored.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_dicom_voi_lut_sequence(tmp_path: Path) -> None:
    # 100-entry LUT starting at stored value 50: below → first entry, above → last entry.
    entries = [min(4000, 40 * i + 100) for i in range(100)]
    out = read_image(write_dicom(tmp_path / "v.dcm", U8, voi_lut=(50, entries)))
    lut = np.array(entries, float)
    idx = np.clip(U8.astype(int) - 50, 0, 99)
    expected = (lut[idx] - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_dicom_voi_lut_preferred_over_window_and_works_after_rescale(tmp_path: Path) -> None:
    entries = list(range(255, -1, -1))  # an inverting LUT, to be unmistakable
    out = read_image(write_dicom(tmp_path / "v.dcm", U8, voi_lut=(0, entries), window=(10, 2), rescale=(1.0, 0.0)))
    np.testing.assert_allclose(out, 1 - U8 / 255, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"rgb": True}, id="rgb"),
        pytest.param({"photometric": "YBR_FULL"}, id="ybr-full"),
        pytest.param({"rgb": True, "compressed": "jpeg"}, id="jpeg-ybr-full-422"),
    ],
)
def test_dicom_colour_to_grey(tmp_path: Path, kwargs: dict[str, object]) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = U8
    rgb[..., 1] = U8[::-1]
    rgb[..., 2] = 77
    expected = (rgb.astype(float) @ [0.299, 0.587, 0.114]) / 255
    out = read_image(write_dicom(tmp_path / "c.dcm", rgb, **kwargs))  # type: ignore[arg-type]
    assert out.shape == (16, 16) and out.dtype == np.float32
    tolerance = 12 / 255 if kwargs.get("compressed") else 2 / 255  # YBR round trip; JPEG is lossy
    np.testing.assert_allclose(out, expected, atol=tolerance)


@pytest.mark.parametrize("compressed", ["rle", "jpeg"])
def test_dicom_compressed(tmp_path: Path, compressed: str) -> None:
    src = xray(32)
    out = read_image(write_dicom(tmp_path / "c.dcm", src, compressed=compressed))  # type: ignore[arg-type]
    if compressed == "rle":
        np.testing.assert_allclose(out, src / 255, atol=1e-7)  # lossless
    else:
        assert np.abs(out - src / 255).mean() < 3 / 255


def test_dicom_multiframe_takes_first_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = np.stack([U8, 255 - U8, np.zeros_like(U8)])
    path = write_dicom(tmp_path / "mf.dcm", frames)
    with caplog.at_level(logging.WARNING, logger="pneumoscan.data.dicom"):
        out = read_image(path)
    np.testing.assert_allclose(out, U8 / 255, atol=1e-7)
    assert "3 frames" in caplog.text
    assert probe_image(path).frames == 3


def test_dicom_without_preamble(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "raw.png", U12, bits_stored=12, preamble=False)  # wrong extension too
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(path), U12 / 4095, atol=1e-7)
    assert probe_image(path) == ImageInfo("DICOM", 16, 16, 12, "MONOCHROME2", 1, 1)


def test_dicom_dark_16bit_without_window_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pneumoscan.data.dicom"):
        out = read_image(write_dicom(tmp_path / "d.dcm", U12, bits_stored=16))
    assert out.max() < 0.07
    assert "look dark" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        pytest.param({"no_pixels": True}, DicomError, "no pixel data", id="no-pixels"),
        pytest.param({"photometric": "PALETTE COLOR"}, DicomError, "PALETTE COLOR", id="palette"),
    ],
)
def test_dicom_refused(tmp_path: Path, kwargs: dict[str, object], error: type[Exception], fragment: str) -> None:
    path = write_dicom(tmp_path / "bad.dcm", U8, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        read_image(path)
    assert_one_line_error(info.value, str(path), fragment)


def test_dicom_probe_without_pixels_says_so(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "bad.dcm", U8, no_pixels=True)
    with pytest.raises(DicomError, match="no pixel data"):
        probe_image(path)


# ------------------------------------------------------------------------------------------------ format detection


@pytest.mark.parametrize(
    ("filename", "writer", "expected_format"),
    [
        pytest.param("png_named.dcm", lambda p: write_png(p, U8), "PNG", id="png-as-dcm"),
        pytest.param("dicom_named.jpeg", lambda p: write_dicom(p, U8), "DICOM", id="dicom-as-jpeg"),
        pytest.param("jpeg_named.png", lambda p: write_jpeg(p, U8), "JPEG", id="jpeg-as-png"),
        pytest.param("no_extension", lambda p: write_png(p, U8), "PNG", id="no-extension"),
    ],
)
def test_format_from_content_not_extension(
    tmp_path: Path, filename: str, writer: Callable[[Path], Path], expected_format: str
) -> None:
    path = writer(tmp_path / filename)
    assert probe_image(path).format == expected_format
    out = read_image(path)
    assert out.shape == U8.shape
    assert np.abs(out - U8 / 255).max() < 0.1


def test_bytes_and_path_give_the_same_image(tmp_path: Path) -> None:
    for path in (write_png(tmp_path / "a.png", U8), write_dicom(tmp_path / "a.dcm", U12, bits_stored=12)):
        np.testing.assert_array_equal(read_image(path.read_bytes()), read_image(path))
        np.testing.assert_array_equal(read_image(bytearray(path.read_bytes())), read_image(str(path)))


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        pytest.param(lambda p: write_png(p, U16, bits=16), ImageInfo("PNG", 4, 2, 16, "I;16", 1), id="png16"),
        pytest.param(lambda p: write_png(p, U8, mode="LA"), ImageInfo("PNG", 16, 16, 8, "LA", 2), id="png-la"),
        pytest.param(lambda p: write_jpeg(p, (6, 10), mode="RGB"), ImageInfo("JPEG", 10, 6, 8, "RGB", 3), id="jpeg"),
        pytest.param(
            lambda p: write_dicom(p, U12, bits_stored=12, photometric="MONOCHROME1"),
            ImageInfo("DICOM", 16, 16, 12, "MONOCHROME1", 1), id="dicom",
        ),
        pytest.param(lambda p: write_dicom(p, rgb=True), ImageInfo("DICOM", 64, 64, 8, "RGB", 3), id="dicom-rgb"),
    ],
)
def test_probe_image(tmp_path: Path, writer: Callable[[Path], Path], expected: ImageInfo) -> None:
    assert probe_image(writer(tmp_path / "f")) == expected


def test_probe_reads_header_only(tmp_path: Path) -> None:
    data = write_png(tmp_path / "a.png", ramp((64, 64))).read_bytes()
    truncated = data[: len(data) // 2]
    assert probe_image(truncated, name="half.png") == ImageInfo("PNG", 64, 64, 8, "L", 1)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(truncated, name="half.png")


# ------------------------------------------------------------------------------------------------------ bad input


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height 8-bit grey pixels, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(xray(64)).save(buf, format="JPEG")
    return buf.getvalue()


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(xray(64)).save(buf, format="PNG")
    return buf.getvalue()


def _dicom_bytes(tmp: Path) -> bytes:
    return write_dicom(tmp / "src.dcm", U12, bits_stored=12).read_bytes()


BAD_INPUTS: list[tuple[str, Callable[[Path], bytes], type[Exception], str]] = [
    ("empty", lambda t: b"", CorruptImageError, "empty file"),
    ("truncated-jpeg", lambda t: _jpeg_bytes()[:600], CorruptImageError, "truncated or corrupt JPEG"),
    ("jpeg-without-end", lambda t: _jpeg_bytes()[:-40], CorruptImageError, "truncated or corrupt JPEG"),
    ("truncated-png", lambda t: _png_bytes()[: len(_png_bytes()) // 2], CorruptImageError,
     "truncated or corrupt PNG"),
    ("png-signature-only", lambda t: _png_bytes()[:8], CorruptImageError, "truncated or corrupt PNG"),
    ("random-bytes", lambda t: np.random.default_rng(0).bytes(4096), UnsupportedImageError, "not an image"),
    ("text", lambda t: b"patient,label\nperson1,PNEUMONIA\n", UnsupportedImageError, "first bytes b'patient,"),
    ("html", lambda t: b"<!doctype html><html><body>404</body></html>", UnsupportedImageError, "not an image"),
    ("gif", lambda t: b"GIF89a" + b"\0" * 32, UnsupportedImageError, "unsupported image format GIF"),
    ("webp", lambda t: b"RIFF\x24\0\0\0WEBPVP8 " + b"\0" * 32, UnsupportedImageError,
     "unsupported image format WebP"),
    ("huge-png", lambda t: png_header_claiming(100_000, 100_000), ImageTooLargeError, "image too large"),
    ("over-default-limit-png", lambda t: png_header_claiming(8000, 8000), ImageTooLargeError, "8000x8000"),
    ("truncated-dicom", lambda t: _dicom_bytes(t)[:-100], CorruptDicomError, "truncated or corrupt DICOM pixel data"),
    ("dicom-magic-only", lambda t: b"\0" * 128 + b"DICM", CorruptDicomError, "truncated or corrupt DICOM"),
    ("dicom-garbage", lambda t: b"\0" * 128 + b"DICM" + b"\xff" * 64, CorruptDicomError, "truncated or corrupt DICOM"),
]


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")  # pydicom, on garbage
@pytest.mark.parametrize(("case", "make", "error", "fragment"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_specific_error(
    tmp_path: Path, case: str, make: Callable[[Path], bytes], error: type[Exception], fragment: str
) -> None:
    data = make(tmp_path)
    path = tmp_path / f"{case}.jpeg"  # extension deliberately says nothing true
    path.write_bytes(data)
    started = time.perf_counter()
    with pytest.raises(error) as info:
        read_image(path)
    assert time.perf_counter() - started < 2.0
    assert type(info.value) is error
    assert_one_line_error(info.value, str(path), fragment)
    # The same content as bytes: named "<bytes>" by default, or by the caller.
    with pytest.raises(error) as info:
        read_image(data)
    assert_one_line_error(info.value, "<bytes>", fragment)
    with pytest.raises(error) as info:
        read_image(data, name="upload from browser")
    assert_one_line_error(info.value, "upload from browser", fragment)


def test_huge_declared_size_is_refused_before_decoding() -> None:
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="10,000,000,000 pixels"):
        read_image(png_header_claiming(100_000, 100_000), name="bomb.png")
    assert time.perf_counter() - started < 0.5


def test_max_pixels_is_honoured(tmp_path: Path) -> None:
    assert DEFAULT_MAX_PIXELS >= 40_000_000
    png = write_png(tmp_path / "a.png", ramp((20, 30)))
    dcm = write_dicom(tmp_path / "a.dcm", U8)
    for path, pixels in ((png, 600), (dcm, 256)):
        assert read_image(path, max_pixels=pixels).size == pixels
        with pytest.raises(ImageTooLargeError, match="more than the limit of"):
            read_image(path, max_pixels=pixels - 1)


@pytest.mark.parametrize(
    ("make_path", "fragment"),
    [
        pytest.param(lambda t: t / "missing.png", "no such file", id="missing"),
        pytest.param(lambda t: t, "is a directory", id="directory"),
    ],
)
def test_unreadable_paths(tmp_path: Path, make_path: Callable[[Path], Path], fragment: str) -> None:
    path = make_path(tmp_path)
    for reader in (read_image, probe_image):
        with pytest.raises(ImageReadError) as info:
            reader(path)
        assert_one_line_error(info.value, str(path), fragment)


def test_wrong_source_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        read_image(123)  # type: ignore[arg-type]


def test_import_does_not_import_pydicom() -> None:
    code = "import sys, pneumoscan.data.io; assert 'pydicom' not in sys.modules, 'pydicom imported eagerly'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# --------------------------------------------------------------------------------------------------- test fixtures


def test_make_xray_like_positive_has_brighter_lungs() -> None:
    rng = np.random.default_rng(0)
    neg = np.mean([make_xray_like(rng, 48, False).astype(float).std() for _ in range(8)])
    a, b = make_xray_like(np.random.default_rng(5), (40, 56), True), make_xray_like(np.random.default_rng(5), 56, True)
    assert a.shape == (40, 56) and a.dtype == np.uint8 and b.shape == (56, 56)
    pos_lung = np.mean([make_xray_like(rng, 48, True)[12:36, 6:42].astype(float).mean() for _ in range(8)])
    neg_lung = np.mean([make_xray_like(rng, 48, False)[12:36, 6:42].astype(float).mean() for _ in range(8)])
    assert pos_lung > neg_lung + 5 and neg > 0


@pytest.mark.parametrize("fmt", ["png", "jpeg", "dcm"])
def test_make_dataset_folder_layout(tmp_path: Path, fmt: str) -> None:
    from pneumoscan.data.records import load_folder

    root = make_dataset_folder(tmp_path / "ds", {"train": 3, "test": 2}, size=16, fmt=fmt)  # type: ignore[arg-type]
    records = load_folder(root)
    assert len(records) == 10
    assert {(r.split, r.label) for r in records} == {("train", 0), ("train", 1), ("test", 0), ("test", 1)}
    groups: dict[str, set[tuple[str | None, int | None]]] = {}
    for r in records:
        assert r.patient_id is not None
        groups.setdefault(r.patient_id, set()).add((r.split, r.label))
        assert read_image(r.path).shape == (16, 16)
    assert all(len(v) == 1 for v in groups.values())  # no patient spans splits or classes
    assert len(groups) < len(records)  # several images per patient
    assert {r.subtype for r in records if r.label == 1} == {"bacteria", "virus"}


# -------------------------------------------------------------------------------------------------------- realdata


@pytest.mark.realdata
def test_real_dicoms(shared_data: Path) -> None:
    folder = shared_data / "dicom"
    mono2 = read_image(folder / "siim_cr_pa_jpeg_baseline.dcm")
    mono1 = read_image(folder / "siim_cr_pa_tagged_monochrome1.dcm")
    assert mono2.shape == mono1.shape == (1024, 1024)
    assert mono2.dtype == np.float32 and 0.0 <= mono2.min() and mono2.max() <= 1.0
    assert 0.2 < mono2.mean() < 0.8 and mono2.std() > 0.1  # a real radiograph, not a blank
    np.testing.assert_array_equal(mono1, 1 - mono2)
    info = probe_image(folder / "siim_cr_pa_tagged_monochrome1.dcm")
    assert info == ImageInfo("DICOM", 1024, 1024, 8, "MONOCHROME1", 1, 1)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "relpath",
    [
        "NORMAL/IM-0214-0001.jpeg",
        "PNEUMONIA/person137_virus_281.jpeg",
        "PNEUMONIA/person921_virus_1578.jpeg",  # one of the few RGB originals
    ],
)
def test_real_kermany_jpegs(shared_data: Path, relpath: str) -> None:
    path = shared_data / "kermany_originals" / "train" / relpath
    with Image.open(path) as im:
        expected = np.asarray(im.convert("L"), dtype=np.float32) / 255
    out = read_image(path)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    assert probe_image(path).width == expected.shape[1]
