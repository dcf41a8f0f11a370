"""DICOM decoding: from a DICOM file to the grey [0, 1] image a radiologist would see.

The pipeline follows the DICOM grayscale display chain (PS3.3 C.11, PS3.4 N.2):

1. decode the stored values of the first frame (``pydicom.pixels.pixel_array``; compressed transfer syntaxes go
   through pydicom's decoder plugins: pylibjpeg/libjpeg for JPEG, pydicom's own RLE decoder, ...);
2. Modality LUT: *Modality LUT Sequence* or *Rescale Slope/Intercept* (``apply_modality_lut``);
3. VOI LUT: *VOI LUT Sequence*, else *Window Center/Width* (``apply_voi`` / ``apply_windowing``, the two halves of
   ``apply_voi_lut``; calling them directly tells us which one ran, which we need for the scaling below);
4. scale to [0, 1] (see :func:`_grey_to_unit`) and invert MONOCHROME1 so that 0 is always black.

Colour photometrics (RGB, YBR_*) are converted to grey luminance because users do send colour secondary captures
of radiographs; PALETTE COLOR (and anything else) is refused with :class:`DicomError`.

pydicom is imported lazily (through :func:`pneumoscan.errors.require`) so that importing :mod:`pneumoscan.data` stays
cheap for the CLI. Every pydicom failure is turned into one of pneumoscan's image errors — :class:`CorruptDicomError`
(truncated or corrupt header or pixel data: HTTP 422), :class:`DicomError` (a well-formed DICOM we cannot show: 415)
or :class:`UnsupportedImageError` (not DICOM after all: 415), see :data:`pneumoscan.errors.ERROR_TABLE`: decoder
plugins raise many exception types (RuntimeError, ValueError, NotImplementedError, struct.error, ...), so those
calls are wrapped with a broad ``except Exception`` on purpose; the rest of the code raises specific errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from pneumoscan.errors import CorruptDicomError, DicomError, ImageTooLargeError, UnsupportedImageError, require

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

DICOM_MAGIC = b"DICM"
DICOM_MAGIC_OFFSET = 128
GREY_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})
# Photometrics that pydicom's decoders hand back as RGB (YBR_FULL/_422 are converted by pixel_array; the JPEG 2000
# ones, YBR_ICT/YBR_RCT, come out of the decoder as RGB already).
COLOUR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
# ITU-R BT.601 luma weights: the same as Pillow's ``convert("L")``, so DICOM and PNG/JPEG colour inputs agree.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_TAG_NUMBERS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
# First-element groups of a preamble-less ("raw") DICOM stream: file meta (0002), identifying (0008), or, for
# stripped-down exports, patient (0010), acquisition (0018), relationship (0020) or image (0028) groups.
_RAW_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})
_MAX_MESSAGE = 200


@dataclass(frozen=True)
class DicomHeader:
    """What a DICOM header says about its image, read without decoding pixels (for :func:`probe_image`)."""

    width: int
    height: int
    bits_stored: int
    photometric: str
    channels: int
    frames: int
    transfer_syntax: str


def has_dicom_magic(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) has the Part 10 ``DICM`` marker after the 128-byte preamble."""
    return head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC


def looks_like_raw_dicom(head: bytes) -> bool:
    """Cheap pre-check for a DICOM data set written without the 128-byte preamble and ``DICM`` marker.

    ``pydicom.dcmread(force=True)`` "reads" almost any bytes, so forcing it on every unrecognised file would
    misdetect text or random data as DICOM. We only try it when the stream starts like a little-endian data set: an
    even, low group number that real files start with, then either an explicit VR (two upper-case letters) or an
    implicit-VR 32-bit length that fits in a sane range. :func:`read_dataset` then also requires image-module tags.
    """
    if len(head) < 8:
        return False
    group = int.from_bytes(head[0:2], "little")
    if group not in _RAW_FIRST_GROUPS:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    length = int.from_bytes(head[4:8], "little")
    return 0 < length < 1 << 16


def one_line(err: BaseException) -> str:
    """A third-party error as a short single line (decoder errors can span lines and list every plugin).

    Shared with :mod:`pneumoscan.data.io`, whose messages follow the same one-line rule.
    """
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def read_dataset(fp: BinaryIO, name: str, *, raw: bool, header_only: bool = False) -> Dataset:
    """Parse a DICOM data set from ``fp``.

    Args:
        fp: binary file object positioned at the start of the file.
        name: what error messages call the input.
        raw: the stream has no preamble/``DICM`` marker (found by :func:`looks_like_raw_dicom`); it is read with
            ``force=True`` and must then contain the image-module tags, or it is not taken for DICOM.
        header_only: defer reading large values (the pixel data) so that probing a file does not load its pixels;
            we defer rather than use ``stop_before_pixels`` so that the presence of pixel data is still known.

    Raises:
        ImageReadError: the header cannot be parsed, or a forced read does not look like an image data set.
    """
    pydicom = require("pydicom", "dicom")
    # No value validation while reading: its warnings quote element values, which can be patient identifiers, into
    # the log (we never rely on value validity: every value we use is checked where it is used).
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # type: ignore[attr-defined]
    try:
        ds = pydicom.dcmread(fp, force=raw, defer_size=1024 if header_only else None)  # type: ignore[attr-defined]
    except Exception as err:  # broad on purpose: pydicom raises many types on corrupt input; see module docstring
        if raw:
            raise UnsupportedImageError(name, _unrecognised(fp)) from err
        raise CorruptDicomError(name, f"truncated or corrupt DICOM ({one_line(err)})") from err
    if not raw and len(ds) == 0:
        raise CorruptDicomError(name, "truncated or corrupt DICOM (no data elements after the file header)")
    try:
        _convert_all(ds.file_meta)
        _convert_all(ds)
    except Exception as err:  # broad on purpose: pydicom raises many types on malformed elements (see below)
        if raw:
            raise UnsupportedImageError(name, _unrecognised(fp)) from err
        raise CorruptDicomError(name, f"truncated or corrupt DICOM header ({one_line(err)})") from err
    if raw:
        try:
            is_image = "Rows" in ds and "Columns" in ds and (ds.get("SOPClassUID") or any(t in ds for t in _PIXEL_TAGS))
        except Exception as err:  # broad on purpose: garbage forced through dcmread can fail on access
            raise UnsupportedImageError(name, _unrecognised(fp)) from err
        if not is_image:
            raise UnsupportedImageError(name, _unrecognised(fp))
        _set_transfer_syntax(ds)
    return ds


def _convert_all(ds: Dataset) -> None:
    """Parse every data element now (recursing into sequences), except the bulk pixel data.

    pydicom parses elements lazily, on first access, so a malformed element (an unknown VR, a value that does not
    fit its VR) would otherwise raise — NotImplementedError, ValueError, ... — wherever the decoder first reads it.
    Converting them all here keeps every such failure inside :func:`read_dataset`, as one corrupt-DICOM error.
    """
    for tag in list(ds.keys()):
        if tag in _PIXEL_TAG_NUMBERS:
            continue  # the pixel data: its failures are pixel decoding errors, and a deferred read would load it
        elem = ds[tag]
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                _convert_all(item)


def _unrecognised(fp: BinaryIO) -> str:
    fp.seek(0)
    return f"not an image (unrecognised format; first bytes {fp.read(8)!r})"


def _set_transfer_syntax(ds: Dataset) -> None:
    """Give a preamble-less data set the transfer syntax it was read with; pixel decoding needs one."""
    uid = require("pydicom.uid", "dicom")
    if ds.file_meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian  # type: ignore[attr-defined]
    elif little:
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian  # type: ignore[attr-defined]
    else:
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian  # type: ignore[attr-defined]


def _int_tag(ds: Dataset, keyword: str, default: int | None, name: str) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise CorruptDicomError(name, f"missing {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise CorruptDicomError(name, f"invalid {keyword} '{value}'") from err


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper() or "MONOCHROME2"


def header_info(ds: Dataset, name: str) -> DicomHeader:
    """Image geometry and encoding from the header (no pixel decoding).

    Raises:
        DicomError: no pixel data, or Rows/Columns missing.
    """
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise DicomError(name, "no pixel data")
    samples = _int_tag(ds, "SamplesPerPixel", 1, name)
    bits_allocated = _int_tag(ds, "BitsAllocated", 8 * samples if samples else 8, name)
    ts = ds.file_meta.get("TransferSyntaxUID")
    return DicomHeader(
        width=_int_tag(ds, "Columns", None, name),
        height=_int_tag(ds, "Rows", None, name),
        bits_stored=_int_tag(ds, "BitsStored", bits_allocated, name),
        photometric=_photometric(ds),
        channels=samples,
        frames=max(_int_tag(ds, "NumberOfFrames", 1, name), 1),
        transfer_syntax=getattr(ts, "name", str(ts or "unknown")),
    )


def dicom_to_grey(ds: Dataset, name: str, *, max_pixels: int) -> np.ndarray:
    """Decode the first frame of ``ds`` into a float32 (H, W) image in [0, 1], 0 = black.

    Args:
        ds: a data set from :func:`read_dataset` (with pixel data loaded).
        name: what error messages call the input.
        max_pixels: refuse images with more pixels than this before decoding (decompression-bomb guard).

    Raises:
        DicomError: no pixel data, unsupported photometric interpretation or transfer syntax.
        CorruptDicomError: truncated or undecodable pixel data, invalid geometry or LUT (a :class:`DicomError` too).
        ImageTooLargeError: Rows × Columns exceeds ``max_pixels``.
    """
    info = header_info(ds, name)
    photometric = info.photometric
    if photometric not in GREY_PHOTOMETRICS and photometric not in COLOUR_PHOTOMETRICS:
        raise DicomError(name, f"unsupported photometric interpretation {photometric} (only grey and RGB/YBR images)")
    pixels = info.width * info.height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            name, f"image too large: {info.width}x{info.height} = {pixels:,} pixels, more than the limit of "
            f"{max_pixels:,}"
        )
    if info.width <= 0 or info.height <= 0:
        raise CorruptDicomError(name, f"invalid image size {info.width}x{info.height}")
    if info.frames > 1:
        logger.warning("%s: DICOM has %d frames; using the first", name, info.frames)

    px = require("pydicom.pixels", "dicom")
    _check_decoder(ds, info, name)
    try:
        arr = np.asarray(px.pixel_array(ds, index=0))  # type: ignore[attr-defined]
    except Exception as err:  # broad on purpose: decoder plugins raise many types; see module docstring
        raise CorruptDicomError(
            name, f"truncated or corrupt DICOM pixel data ({info.transfer_syntax}: {one_line(err)})"
        ) from err

    if photometric in COLOUR_PHOTOMETRICS:
        return _colour_to_grey(arr, info, name)
    if arr.ndim != 2:
        raise CorruptDicomError(name, f"{photometric} image decoded with unexpected shape {arr.shape}")
    grey = _grey_to_unit(arr, ds, info, name)
    if photometric == "MONOCHROME1":
        # Inverted last, in float32, so that a MONOCHROME1 image is exactly 1 - its MONOCHROME2 twin.
        grey = np.float32(1.0) - grey
    return grey


def _check_decoder(ds: Dataset, info: DicomHeader, name: str) -> None:
    """Refuse, with a clear message, a transfer syntax that pydicom cannot decode here, so that a decoding failure
    afterwards can be reported as corrupt data rather than as a possibly-missing plugin."""
    px = require("pydicom.pixels", "dicom")
    ts = ds.file_meta.get("TransferSyntaxUID")
    if not ts:
        return  # pixel_array raises a specific error, reported as corrupt below
    try:
        decoder = px.get_decoder(ts)  # type: ignore[attr-defined]
    except NotImplementedError as err:
        raise DicomError(name, f"unsupported transfer syntax {info.transfer_syntax} (no pixel data decoder)") from err
    except Exception as err:  # broad on purpose: an invalid UID string
        raise CorruptDicomError(name, f"invalid transfer syntax {ts} ({one_line(err)})") from err
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise DicomError(name, f"cannot decode transfer syntax {info.transfer_syntax} here: needs {missing}")


def _colour_to_grey(arr: np.ndarray, info: DicomHeader, name: str) -> np.ndarray:
    """RGB (pixel_array already turned YBR into RGB) → luminance in [0, 1], scaled by the BitsStored range."""
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise CorruptDicomError(name, f"{info.photometric} image decoded with unexpected shape {arr.shape}")
    logger.debug("%s: %s DICOM converted to grey luminance", name, info.photometric)
    rgb = arr.astype(np.float64)
    grey = rgb[..., 0] * LUMA_WEIGHTS[0] + rgb[..., 1] * LUMA_WEIGHTS[1] + rgb[..., 2] * LUMA_WEIGHTS[2]
    top = float(2 ** min(info.bits_stored, 32) - 1)
    return np.clip(grey / top, 0.0, 1.0).astype(np.float32)


def _stored_range(ds: Dataset, info: DicomHeader) -> tuple[int, int]:
    """The range of stored values allowed by BitsStored and PixelRepresentation."""
    bits = info.bits_stored
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _lut_domain(item: Dataset) -> np.ndarray:
    """Every input value a LUT maps (first mapped value .. + number of entries), to evaluate its output range."""
    descriptor = item.LUTDescriptor
    entries = int(descriptor[0]) or 2**16
    first = int(descriptor[1])
    return np.arange(first, first + entries, dtype=np.int64)


def _grey_to_unit(stored: np.ndarray, ds: Dataset, info: DicomHeader, name: str) -> np.ndarray:
    """Apply the Modality and VOI LUTs and scale to [0, 1] (MONOCHROME2 sense: higher = brighter).

    The scale is always derived from the header, never from this image's own min/max, so that the same tissue
    value maps to the same grey in every image of a series (a model needs that):

    - VOI window applied: the window's output range. We evaluate pydicom's windowing at -inf and +inf to get it,
      which also gets the direction right for a negative RescaleSlope (pydicom then swaps its output limits);
    - VOI LUT Sequence applied: the range of the LUT's entries (evaluated over its whole input domain; the
      descriptor's nominal bit depth is often larger than the data and would give a dark image);
    - otherwise, Modality LUT Sequence: the range of that LUT's entries;
    - otherwise, Rescale Slope/Intercept: the BitsStored range mapped through the rescale (sorted);
    - otherwise: the BitsStored range (e.g. a 12-bit image is divided by 4095).

    Only float pixel data (no stored range) is scaled by its actual min/max. A constant image over such a range
    comes out all zeros (never a division by zero); NaNs become 0.
    """
    px = require("pydicom.pixels", "dicom")
    if "PixelData" not in ds:  # Float / Double Float Pixel Data: no BitsStored range to scale by
        return minmax_to_unit(stored.astype(np.float64), name)

    try:
        values = px.apply_modality_lut(stored, ds)  # type: ignore[attr-defined]
    except Exception as err:  # broad on purpose: malformed LUT / rescale values
        raise CorruptDicomError(name, f"invalid Modality LUT or rescale ({one_line(err)})") from err

    voi = _apply_voi(values, ds, name)
    if voi is not None:
        out, low, high = voi
    elif ds.get("ModalityLUTSequence"):
        out = values
        lut_out = px.apply_modality_lut(_lut_domain(ds.ModalityLUTSequence[0]), ds)  # type: ignore[attr-defined]
        low, high = float(np.min(lut_out)), float(np.max(lut_out))
    else:
        out = values
        s_low, s_high = _stored_range(ds, info)
        ends = px.apply_modality_lut(np.array([s_low, s_high], dtype=np.int64), ds)  # type: ignore[attr-defined]
        low, high = float(np.min(ends)), float(np.max(ends))
        _warn_if_dark(stored, s_high, name)
    return _scale(np.asarray(out, dtype=np.float64), low, high)


def _apply_voi(values: np.ndarray, ds: Dataset, name: str) -> tuple[np.ndarray, float, float] | None:
    """Apply the VOI LUT Sequence (preferred, as pydicom's ``apply_voi_lut`` does) or the window, if any.

    Returns:
        ``(output, value shown black, value shown white)``, or None when the data set has no usable VOI
        transform. A malformed VOI transform is logged and skipped rather than making the image unreadable.
    """
    px = require("pydicom.pixels", "dicom")
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        # LUT indices are integers; modality output is float64 after a rescale, which pydicom warns about.
        lut_in = np.rint(values).astype(np.int64) if np.issubdtype(values.dtype, np.floating) else values
        try:
            out = px.apply_voi(lut_in, ds)  # type: ignore[attr-defined]
            lut_out = px.apply_voi(_lut_domain(seq[0]), ds)  # type: ignore[attr-defined]
        except Exception as err:  # broad on purpose: malformed LUT descriptor / data
            logger.warning("%s: ignoring unusable VOI LUT Sequence (%s)", name, one_line(err))
        else:
            return out, float(np.min(lut_out)), float(np.max(lut_out))
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            out = px.apply_windowing(values, ds)  # type: ignore[attr-defined]
            with np.errstate(over="ignore"):  # SIGMOID at +-inf overflows exp() harmlessly
                ends = px.apply_windowing(np.array([-np.inf, np.inf]), ds)  # type: ignore[attr-defined]
        except Exception as err:  # broad on purpose: e.g. width < 1, unknown VOI LUT Function
            logger.warning("%s: ignoring unusable window center/width (%s)", name, one_line(err))
        else:
            return out, float(ends[0]), float(ends[1])
    return None


def _warn_if_dark(stored: np.ndarray, stored_max: int, name: str) -> None:
    """Say so when an unwindowed image uses a tiny part of its BitsStored range (e.g. 12-bit data declared as
    16-bit): it will come out nearly black, and predictions on it are not to be trusted."""
    if stored.size and stored_max >= 1023 and float(np.max(stored)) < stored_max / 16:
        logger.warning(
            "%s: DICOM has no window and uses under 1/16 of its BitsStored range (max %s of %s); it will look dark",
            name, np.max(stored), stored_max,
        )


def _scale(values: np.ndarray, black: float, white: float) -> np.ndarray:
    """Map ``black`` → 0 and ``white`` → 1 (either may be the larger), clip, float32; a zero range gives zeros."""
    if not np.isfinite(black) or not np.isfinite(white) or black == white:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values - black) / (white - black)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0).astype(np.float32)


def minmax_to_unit(values: np.ndarray, name: str) -> np.ndarray:
    """Scale by the image's own finite min/max; used only where no declared range exists (also by
    :mod:`pneumoscan.data.io` for float and odd-depth TIFFs). Constant → zeros; NaN/inf → 0."""
    finite = np.isfinite(values)
    if not finite.all():
        logger.warning("%s: %d non-finite pixel values set to black", name, int((~finite).sum()))
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    return _scale(np.where(finite, values, np.nan), float(values[finite].min()), float(values[finite].max()))
