"""pneumoscan.data.dicom on tiny synthetic DICOMs written with pydicom under tmp_path.

test_io.py covers the display chain through ``read_image`` (MONOCHROME1, bit depths, rescale, linear window, VOI LUT
Sequence, colour, RLE/JPEG). Here: the module's own functions (magic detection, header parsing, ``dicom_to_grey``),
the parts of the chain not covered there (Modality LUT Sequence, SIGMOID window, a broken window, float pixels,
MONOCHROME1 after a rescale), transfer syntaxes that cannot be decoded, corrupt files, and that no error or log line
ever carries the patient's name or ID.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from pneumoscan.data.dicom import (
    DicomHeader,
    dicom_to_grey,
    has_dicom_magic,
    header_info,
    looks_like_raw_dicom,
    minmax_to_unit,
    one_line,
    read_dataset,
)
from pneumoscan.data.io import read_image
from pneumoscan.errors import CorruptDicomError, DicomError, ImageTooLargeError
from tests.fixtures import write_dicom

PATIENT = "DOE^JANE"  # written as PatientName and PatientID by write_dicom
U8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
U12 = (np.arange(256, dtype=np.uint16) * 16).reshape(16, 16)  # 0 .. 4080
MPEG2 = "1.2.840.10008.1.2.4.100"  # no pixel data decoder exists for it in pydicom
HTJ2K = "1.2.840.10008.1.2.4.201"  # decodable only with pylibjpeg-openjpeg


def _load(path: Path) -> Dataset:
    with open(path, "rb") as fh:
        return read_dataset(fh, str(path), raw=False)


def _grey(path: Path, max_pixels: int = 10**8) -> np.ndarray:
    return dicom_to_grey(_load(path), str(path), max_pixels=max_pixels)


def _rewrite(path: Path, change: object) -> Path:
    ds = pydicom.dcmread(path)
    change(ds)  # type: ignore[operator]
    ds.save_as(path)
    return path


def _encapsulated(path: Path, transfer_syntax: str) -> Path:
    def change(ds: Dataset) -> None:
        ds.PixelData = encapsulate([b"\x00" * 64])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = transfer_syntax

    return _rewrite(write_dicom(path, U8, patient_id=PATIENT), change)


# ---------------------------------------------------------------------------------------------- detection, header

def test_magic_and_raw_detection(tmp_path: Path) -> None:
    part10 = write_dicom(tmp_path / "a.dcm", U8).read_bytes()
    raw = write_dicom(tmp_path / "b.dcm", U8, preamble=False).read_bytes()
    assert has_dicom_magic(part10[:132]) and not has_dicom_magic(raw[:132])
    assert looks_like_raw_dicom(raw[:16]) and not has_dicom_magic(b"DICM" + b"\0" * 128)
    for not_dicom in (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"hello world, this is text", b"\x08\x00", b"\xff" * 16):
        assert not looks_like_raw_dicom(not_dicom)


def test_one_line() -> None:
    assert one_line(ValueError("first\n  second\tthird")) == "first second third"
    assert one_line(KeyError()) == "KeyError"
    long = one_line(RuntimeError("x" * 500))
    assert len(long) == 200 and long.endswith("…")


def test_header_info_without_decoding(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "h.dcm", U12, bits_stored=12, photometric="MONOCHROME1")
    with open(path, "rb") as fh:
        ds = read_dataset(fh, "h.dcm", raw=False, header_only=True)
    assert header_info(ds, "h.dcm") == DicomHeader(width=16, height=16, bits_stored=12, photometric="MONOCHROME1",
                                                   channels=1, frames=1, transfer_syntax="Explicit VR Little Endian")


@pytest.mark.parametrize("change, error, fragment", [
    (lambda ds: delattr(ds, "Rows"), CorruptDicomError, "missing Rows"),
    (lambda ds: setattr(ds, "BitsStored", None), None, None),  # empty: falls back to BitsAllocated
    (lambda ds: delattr(ds, "PixelData"), DicomError, "no pixel data"),
])
def test_header_problems(tmp_path: Path, change: object, error: type[Exception] | None, fragment: str | None) -> None:
    path = _rewrite(write_dicom(tmp_path / "h.dcm", U8), change)
    ds = _load(path)
    if error is None:
        assert header_info(ds, str(path)).bits_stored == 8
        return
    with pytest.raises(error, match=fragment):
        header_info(ds, str(path))


# ------------------------------------------------------------------------------------------------- display chain

def test_monochrome1_is_inverted_after_the_rescale(tmp_path: Path) -> None:
    plain = _grey(write_dicom(tmp_path / "m2.dcm", U12, bits_stored=12, rescale=(0.5, 10.0)))
    inverted = _grey(write_dicom(tmp_path / "m1.dcm", U12, bits_stored=12, rescale=(0.5, 10.0),
                                 photometric="MONOCHROME1"))
    # The 12-bit range mapped through the rescale is 10 .. 2057.5: the same greys as without it.
    np.testing.assert_allclose(plain, U12 / 4095, atol=1e-6)
    np.testing.assert_array_equal(inverted, np.float32(1) - plain)
    assert inverted[0, 0] == 1.0 and inverted.dtype == np.float32  # stored 0 is white in MONOCHROME1


def test_modality_lut_sequence(tmp_path: Path) -> None:
    entries = [1000 - 3 * i for i in range(256)]  # decreasing: stored 0 → 1000 (white), 255 → 235 (black)

    def change(ds: Dataset) -> None:
        item = Dataset()
        item.add_new(0x00283002, "US", [256, 0, 16])  # LUTDescriptor: 256 entries from stored value 0, 16 bits
        item.add_new(0x00283006, "US", entries)  # LUTData
        item.ModalityLUTType = "US"
        ds.ModalityLUTSequence = [item]

    out = _grey(_rewrite(write_dicom(tmp_path / "m.dcm", U8), change))
    expected = (np.array(entries, float)[U8] - 235) / (1000 - 235)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_sigmoid_window(tmp_path: Path) -> None:
    def change(ds: Dataset) -> None:
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 128, 64, "SIGMOID"

    out = _grey(_rewrite(write_dicom(tmp_path / "s.dcm", U8), change))
    expected = 1 / (1 + np.exp(-4 * (U8.astype(float) - 128) / 64))  # PS3.3 C.11.2.1.3.1, output range [0, 1]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_an_unusable_window_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_dicom(tmp_path / "w.dcm", U8, window=(100, 0))  # width 0 is invalid
    with caplog.at_level(logging.WARNING, logger="pneumoscan.data.dicom"):
        out = _grey(path)
    np.testing.assert_allclose(out, U8 / 255, atol=1e-6)  # the BitsStored range instead
    assert "ignoring unusable window" in caplog.text


def test_float_pixel_data_is_scaled_by_its_own_range(tmp_path: Path) -> None:
    values = np.linspace(-2.0, 6.0, 64, dtype=np.float32).reshape(8, 8)

    def change(ds: Dataset) -> None:
        del ds.PixelData
        for tag in ("BitsStored", "HighBit", "PixelRepresentation"):
            delattr(ds, tag)
        ds.BitsAllocated = 32
        ds.Rows, ds.Columns = 8, 8
        ds.FloatPixelData = values.tobytes()

    out = _grey(_rewrite(write_dicom(tmp_path / "f.dcm", U8), change))
    np.testing.assert_allclose(out, (values + 2.0) / 8.0, atol=1e-6)


def test_minmax_to_unit_edge_cases(caplog: pytest.LogCaptureFixture) -> None:
    assert (minmax_to_unit(np.full((4, 4), 7.0), "c") == 0).all()  # constant: zeros, no division by zero
    with caplog.at_level(logging.WARNING, logger="pneumoscan.data.dicom"):
        out = minmax_to_unit(np.array([[0.0, np.nan], [np.inf, 2.0]]), "n")
    np.testing.assert_array_equal(out, [[0.0, 0.0], [0.0, 1.0]])
    assert "2 non-finite pixel values" in caplog.text
    assert (minmax_to_unit(np.full((2, 2), np.nan), "all-nan") == 0).all()


def test_too_many_pixels_are_refused_before_decoding(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "big.dcm", U8)
    assert _grey(path, max_pixels=256).shape == (16, 16)
    with pytest.raises(ImageTooLargeError, match="16x16 = 256 pixels"):
        _grey(path, max_pixels=255)


# ---------------------------------------------------------------------------------- refusals: one line, the file

def _refusal(path: Path) -> DicomError:
    with pytest.raises(DicomError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return info.value


def test_a_transfer_syntax_without_decoder_is_refused(tmp_path: Path) -> None:
    err = _refusal(_encapsulated(tmp_path / "mpeg.dcm", MPEG2))
    assert type(err) is DicomError and "unsupported transfer syntax MPEG2" in str(err)


def test_a_transfer_syntax_whose_plugin_is_missing_says_what_to_install(tmp_path: Path) -> None:
    if pydicom.pixels.get_decoder(HTJ2K).is_available:
        pytest.skip("a High-Throughput JPEG 2000 decoder is installed here")
    err = _refusal(_encapsulated(tmp_path / "htj2k.dcm", HTJ2K))
    assert type(err) is DicomError and "needs pylibjpeg" in str(err)


def test_an_invalid_transfer_syntax_uid(tmp_path: Path) -> None:
    err = _refusal(_encapsulated(tmp_path / "bad-ts.dcm", "1.2.3.4"))
    assert "transfer syntax" in str(err)


def test_truncated_pixel_data_is_corrupt(tmp_path: Path) -> None:
    data = write_dicom(tmp_path / "full.dcm", U8, patient_id=PATIENT).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-100])
    err = _refusal(cut)
    assert isinstance(err, CorruptDicomError) and "truncated or corrupt DICOM pixel data" in str(err)


def test_a_file_header_without_data_set_is_corrupt(tmp_path: Path) -> None:
    data = write_dicom(tmp_path / "full.dcm", U8, patient_id=PATIENT).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:140])  # preamble, DICM and part of the file meta
    assert isinstance(_refusal(cut), CorruptDicomError)


# -------------------------------------------------------------------------------------------- no patient data out

def _broken_files(tmp_path: Path) -> list[Path]:
    full = write_dicom(tmp_path / "full.dcm", U8, patient_id=PATIENT)
    data = full.read_bytes()
    name_at = data.index(PATIENT.encode())
    files = [_encapsulated(tmp_path / "mpeg.dcm", MPEG2), _encapsulated(tmp_path / "ts.dcm", "1.2.3.4"),
             write_dicom(tmp_path / "palette.dcm", U8, photometric="PALETTE COLOR", patient_id=PATIENT),
             write_dicom(tmp_path / "nopix.dcm", U8, no_pixels=True, patient_id=PATIENT),
             _rewrite(write_dicom(tmp_path / "rows.dcm", U8, patient_id=PATIENT), lambda ds: delattr(ds, "Rows"))]
    for i, cut in enumerate((name_at + 4, len(data) - 100, 140)):  # inside the patient's name, the pixels, the meta
        files.append(tmp_path / f"cut{i}.dcm")
        files[-1].write_bytes(data[:cut])
    return files


def test_errors_and_logs_never_carry_the_patients_name_or_id(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    files = _broken_files(tmp_path)
    messages = []
    with caplog.at_level(logging.DEBUG):
        for path in files:
            for source in (path, path.read_bytes()):
                with pytest.raises(DicomError) as info:
                    read_image(source, name=path.name)
                messages.append(str(info.value))
                assert str(info.value).startswith(f"{path.name}: ")
    assert len(messages) == 2 * len(files)
    text = "\n".join(messages) + "\n" + caplog.text
    for fragment in ("DOE", "JANE"):
        assert fragment not in text

