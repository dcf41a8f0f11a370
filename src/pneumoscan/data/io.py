"""Reading images: any supported file (or bytes) → one float32 grey image in [0, 1], 0 = black.

Everything downstream (preprocessing, training cache, prediction, the server) reads images through
:func:`read_image`, so that a PNG, a JPEG and a DICOM of the same radiograph give the same array.

Design choices:

- The format is sniffed from the content (magic bytes), never from the file name: users rename files, and servers
  receive bytes without a trustworthy name. Pillow is limited to the sniffed format (``formats=[...]``) so that it
  never guesses at formats without a signature.
- Pixels are decoded in full (no ``Image.draft`` shortcut for large JPEGs): correctness first; resizing happens in
  :mod:`pneumoscan.data.preprocess`.
- Every failure is an :class:`~pneumoscan.errors.ImageReadError` (or its subclasses) with a one-line problem;
  decoders raise many exception types on corrupt input (OSError, SyntaxError, ValueError, EOFError, struct.error,
  zlib.error, ...), so the decoder calls alone are wrapped in a broad ``except Exception``.
- Truncated files are errors: nothing global such as ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set.
- Decompression bombs: the pixel count declared in the header is checked against ``max_pixels`` before decoding.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pneumoscan.data import dicom as _dicom
from pneumoscan.errors import CorruptImageError, ImageReadError, ImageTooLargeError, UnsupportedImageError

logger = logging.getLogger(__name__)

#: Largest image (width × height) read by default. Real radiographs are at most ~24 M pixels (a 43×43 cm CR/DR
#: detector at 0.1 mm is ~4300×4300 = 18.5 M; full-field mammograms reach ~4900×5400 = 26 M; a 14×17 in film
#: scanned at 300 dpi is 21 M). 50 M leaves 2× headroom for those while bounding one decode to ~200 MB of float32
#: (plus ~150 MB for an RGB decode buffer), which several workers can afford at once.
DEFAULT_MAX_PIXELS = 50_000_000

ImageSource = str | Path | bytes

# Magic bytes → Pillow format name. TIFF has both byte orders, and BigTIFF (version 43).
_PIL_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
# Recognisable formats we do not read, for a helpful message instead of "unrecognised".
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"})
_HEAD_SIZE = 256


@dataclass(frozen=True)
class ImageInfo:
    """Header facts about an image file, as read by :func:`probe_image` (for the data audit).

    Attributes:
        format: "DICOM", "PNG", "JPEG", "TIFF" or "BMP".
        width: columns.
        height: rows.
        bits_stored: significant bits per sample (DICOM BitsStored; for Pillow images derived from the mode:
            1, 8, 16 or 32).
        photometric: DICOM PhotometricInterpretation (e.g. "MONOCHROME1"), or the Pillow mode (e.g. "L", "RGB",
            "I;16") for other formats.
        channels: samples per pixel (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA/CMYK).
        frames: number of frames (DICOM NumberOfFrames, multi-page TIFF); :func:`read_image` reads the first.
    """

    format: str
    width: int
    height: int
    bits_stored: int
    photometric: str
    channels: int
    frames: int = 1


def _display_name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    return str(source)


@contextmanager
def _open_source(source: ImageSource, name: str) -> Iterator[tuple[BinaryIO, bytes]]:
    """Open a path or wrap bytes; yield the binary stream (at offset 0) and its first bytes for sniffing.

    Raises:
        ImageReadError: the file cannot be opened, or is empty.
        TypeError: ``source`` is not a path or bytes (a programming error, not a user error).
    """
    fp: BinaryIO
    if isinstance(source, bytes | bytearray | memoryview):
        fp = io.BytesIO(bytes(source))
    elif isinstance(source, str | Path):
        try:
            fp = Path(source).open("rb")
        except FileNotFoundError as err:
            raise ImageReadError(name, "no such file") from err
        except IsADirectoryError as err:
            raise ImageReadError(name, "is a directory, not an image file") from err
        except PermissionError as err:
            raise ImageReadError(name, "permission denied") from err
        except OSError as err:
            raise ImageReadError(name, f"cannot open ({err.strerror or err})") from err
    else:
        raise TypeError(f"image source must be a path or bytes, not {type(source).__name__}")
    with fp:
        try:
            head = fp.read(_HEAD_SIZE)
            fp.seek(0)
        except OSError as err:
            raise ImageReadError(name, f"cannot read ({err.strerror or err})") from err
        if not head:
            raise CorruptImageError(name, "empty file")
        yield fp, head


def _sniff(head: bytes) -> str | None:
    """The format named by the magic bytes: "DICOM", a Pillow format name, or None."""
    if _dicom.has_dicom_magic(head):
        return "DICOM"
    for magic, fmt in _PIL_MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _unsupported(head: bytes) -> str:
    """The problem for bytes we do not read: a named unsupported format when recognised, else "not an image"."""
    fmt = next((f for magic, f in _OTHER_MAGIC if head.startswith(magic)), None)
    if fmt is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        fmt = "WebP"
    if fmt is None and head[4:8] == b"ftyp":  # ISO base media: HEIF/HEIC/AVIF stills (or a video)
        brand = head[8:12]
        fmt = "AVIF" if brand.startswith(b"avi") else "HEIF" if brand in _HEIF_BRANDS else None
    if fmt is not None:
        return f"unsupported image format {fmt} (use PNG, JPEG, TIFF, BMP or DICOM)"
    return f"not an image (unrecognised format; first bytes {head[:8]!r})"


def read_image(source: ImageSource, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one image as a float32 (H, W) array in [0, 1], one grey channel, 0 = black.

    Colour images become grey luminance (ITU-R 601-2, as Pillow's ``convert("L")``); alpha is dropped (the colour
    channels hold the radiograph; alpha is an export artefact). 8-bit data is divided by 255 and 16-bit data by
    65535, so the full range of a 16-bit PNG is kept. A uniformly grey file keeps its grey value (its range is the
    format's, not its own); only data without a declared range (float TIFF, DICOM float pixel data, 32-bit
    integer TIFF outside its bit depth) is scaled by its own min/max, where a constant image becomes all zeros and
    NaN becomes 0. JPEG/TIFF EXIF orientation is applied, as every viewer does. DICOM: see
    :mod:`pneumoscan.data.dicom`. Multi-frame files give their first frame (with a logged warning).

    Args:
        source: path to the file, or its content as bytes.
        name: what error messages call the input; defaults to the path, or ``"<bytes>"``.
        max_pixels: refuse images whose header declares more pixels than this (decompression-bomb guard).

    Returns:
        float32 array of shape (H, W) with values in [0, 1].

    Raises:
        ImageReadError: the file cannot be used; ``str(err)`` is ``"<name>: <problem>"``. Its subclass says why
            (:data:`pneumoscan.errors.ERROR_TABLE`): :class:`~pneumoscan.errors.CorruptImageError` empty,
            truncated or corrupt; :class:`~pneumoscan.errors.UnsupportedImageError` not an image or an unsupported
            format (GIF, WebP, ...); the base class for a missing or unreadable file.
        DicomError: a DICOM file without pixel data, or with a photometric interpretation we cannot show as grey
            (:class:`~pneumoscan.errors.CorruptDicomError` when its header or pixel data is corrupt).
        ImageTooLargeError: more than ``max_pixels`` pixels.
    """
    label = _display_name(source, name)
    with _open_source(source, label) as (fp, head):
        fmt = _sniff(head)
        if fmt == "DICOM" or (fmt is None and _dicom.looks_like_raw_dicom(head)):
            ds = _dicom.read_dataset(fp, label, raw=fmt is None)
            return _dicom.dicom_to_grey(ds, label, max_pixels=max_pixels)
        if fmt is None:
            raise UnsupportedImageError(label, _unsupported(head))
        return _read_pillow(fp, fmt, label, max_pixels)


def probe_image(source: ImageSource, *, name: str | None = None) -> ImageInfo:
    """Read the header facts of an image without decoding its pixels (where the format allows).

    Pillow opens files lazily (header only); DICOM is parsed with large values deferred, so the pixel data is
    neither read nor decoded but its presence is checked.

    Raises:
        ImageReadError: as :func:`read_image`, for problems visible in the header (truncation inside the pixel data
            is only found by :func:`read_image`).
        DicomError: a DICOM file without pixel data.
        ImageTooLargeError: only for images beyond Pillow's own decompression-bomb limit, which refuses to open them.
    """
    label = _display_name(source, name)
    with _open_source(source, label) as (fp, head):
        fmt = _sniff(head)
        if fmt == "DICOM" or (fmt is None and _dicom.looks_like_raw_dicom(head)):
            ds = _dicom.read_dataset(fp, label, raw=fmt is None, header_only=True)
            h = _dicom.header_info(ds, label)
            return ImageInfo("DICOM", h.width, h.height, h.bits_stored, h.photometric, h.channels, h.frames)
        if fmt is None:
            raise UnsupportedImageError(label, _unsupported(head))
        with _open_pillow(fp, fmt, label, max_pixels=None) as im:
            return ImageInfo(
                format=fmt,
                width=im.width,
                height=im.height,
                bits_stored=_mode_bits(im.mode),
                photometric=im.mode,
                channels=len(im.getbands()),
                frames=_frame_count(im, label),
            )


def _frame_count(im: Image.Image, name: str) -> int:
    """Frames (pages) in a Pillow image; 1 when a later frame's header is unreadable (we only read the first).

    Counting TIFF pages walks every IFD, so a corrupt later page raises (TypeError, OSError, ...) here, not in
    ``load()``.
    """
    try:
        return max(int(getattr(im, "n_frames", 1) or 1), 1)
    except Exception as err:  # broad on purpose: Pillow raises many types while walking corrupt page headers
        logger.warning("%s: cannot count the frames (%s); reading the first", name, _dicom.one_line(err))
        try:
            im.seek(0)
        except Exception as seek_err:  # broad on purpose, as above
            raise CorruptImageError(name, f"truncated or corrupt {im.format} ({_dicom.one_line(seek_err)})") \
                from seek_err
        return 1


def _mode_bits(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


@contextmanager
def _open_pillow(fp: BinaryIO, fmt: str, name: str, *, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open (header only) with Pillow restricted to ``fmt``, and check the declared size against ``max_pixels``."""
    try:
        im = Image.open(fp, formats=[fmt])
    except Image.DecompressionBombError as err:
        match = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(match.group(1)):,} pixels" if match else "too many pixels"
        limit = f", more than the limit of {max_pixels:,}" if max_pixels is not None else ""
        raise ImageTooLargeError(name, f"image too large: {size}{limit}") from err
    except UnidentifiedImageError as err:  # its message names the stream object, not the problem
        raise CorruptImageError(name, f"truncated or corrupt {fmt} (cannot parse the header)") from err
    except Exception as err:  # broad on purpose: Pillow raises many types on corrupt headers
        raise CorruptImageError(name, f"corrupt {fmt} header ({_dicom.one_line(err)})") from err
    with im:
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise ImageTooLargeError(
                name, f"image too large: {im.width}x{im.height} = {im.width * im.height:,} pixels, more than the "
                f"limit of {max_pixels:,}"
            )
        yield im


def _read_pillow(fp: BinaryIO, fmt: str, name: str, max_pixels: int) -> np.ndarray:
    with _open_pillow(fp, fmt, name, max_pixels=max_pixels) as im:
        frames = _frame_count(im, name)
        if frames > 1:
            logger.warning("%s: %s has %d frames; using the first", name, fmt, frames)
        try:
            im.load()
        except Image.DecompressionBombError as err:
            raise ImageTooLargeError(name, f"image too large ({_dicom.one_line(err)})") from err
        except Exception as err:  # broad on purpose: truncated data raises OSError, SyntaxError, ...
            raise CorruptImageError(name, f"truncated or corrupt {fmt} ({_dicom.one_line(err)})") from err
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except Exception as err:  # broad on purpose: a broken EXIF block should not make the pixels unreadable
            logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, _dicom.one_line(err))
        return _pil_to_unit(im, fmt, name)


def _pil_to_unit(im: Image.Image, fmt: str, name: str) -> np.ndarray:
    """A loaded Pillow image → float32 grey in [0, 1], scaled by the bit depth of its mode."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / np.float32(255)
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel(0), dtype=np.float32) / np.float32(255)
    if mode.startswith("I;16"):
        arr = np.asarray(im)
        if arr.dtype.kind == "u":
            return arr.astype(np.float32) / np.float32(65535)
        return _dicom.minmax_to_unit(arr.astype(np.float64), name)  # signed 16-bit TIFF: no fixed black point
    if mode == "I":
        arr = np.asarray(im, dtype=np.int64)
        bits = _declared_bits(im, fmt)
        top = 2**bits - 1
        if arr.size and arr.min() >= 0 and arr.max() <= top:
            return (arr / top).astype(np.float32)
        return _dicom.minmax_to_unit(arr.astype(np.float64), name)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        if finite.size == arr.size and (arr.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0)):
            return arr.astype(np.float32)  # already a [0, 1] intensity image
        return _dicom.minmax_to_unit(arr, name)
    # 8-bit colour and palette modes (RGB, RGBA, P, PA, CMYK, YCbCr, ...): Pillow's luminance conversion.
    try:
        grey = im.convert("L")
    except Exception as err:  # broad on purpose: exotic modes Pillow cannot convert
        raise UnsupportedImageError(name, f"unsupported {fmt} pixel mode {mode}") from err
    return np.asarray(grey, dtype=np.float32) / np.float32(255)


def _declared_bits(im: Image.Image, fmt: str) -> int:
    """Bit depth behind a 32-bit integer Pillow image: TIFF BitsPerSample, 16 for PNG (older Pillow's "I")."""
    if fmt == "TIFF":
        tags = getattr(im, "tag_v2", {})
        value = tags.get(258) if hasattr(tags, "get") else None
        if isinstance(value, tuple | list):
            value = value[0] if value else None
        if isinstance(value, int) and 1 <= value <= 32:
            return value
        return 32
    return 16
