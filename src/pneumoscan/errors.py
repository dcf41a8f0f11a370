"""Exception hierarchy.

Every error a user can cause is a :class:`PneumoError`; the CLI turns it into one line on stderr and a non-zero exit
code, and the server turns it into a 4xx JSON answer. Anything else escaping is a bug in pneumoscan.
"""

from __future__ import annotations

from pathlib import Path


class PneumoError(Exception):
    """Base class of all errors caused by input, configuration or environment (not by a bug)."""


class ConfigError(PneumoError, ValueError):
    """An option or configuration value is invalid; the message lists the valid choices."""


class DataError(PneumoError):
    """A data set, folder, manifest or image cannot be used."""


class ImageReadError(DataError):
    """One image cannot be decoded. ``str(err)`` is ``"<file>: <problem>"``."""

    def __init__(self, source: str | Path, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class CorruptImageError(ImageReadError):
    """The file is of a format we read, but its bytes cannot be decoded: empty, truncated or corrupt (HTTP 422)."""


class UnsupportedImageError(ImageReadError):
    """The file is not an image, or an image format / variant we do not read (GIF, WebP, palette DICOM, ...) (415)."""


class DicomError(UnsupportedImageError):
    """A DICOM file is well formed but uses something we cannot turn into a grey image (e.g. PALETTE COLOR, no pixel
    data, a transfer syntax without a decoder here)."""


class CorruptDicomError(CorruptImageError, DicomError):
    """A DICOM file whose header or pixel data is truncated or corrupt (422, not 415: the format is supported).

    Also a :class:`DicomError`, so ``except DicomError`` still sees every DICOM problem; :func:`http_status` finds
    :class:`CorruptImageError` first in its method resolution order.
    """


class ImageTooLargeError(ImageReadError):
    """An image has more bytes or pixels than allowed (upload limit, decompression-bomb guard) (413)."""


class RequestTooLargeError(DataError):
    """A whole request is over a limit: more files than allowed, or more bytes than every file at its limit (413)."""


class CheckpointError(PneumoError):
    """A checkpoint file is missing, corrupt or of an unknown format."""


class ModelNotFoundError(ConfigError):
    """An unknown architecture name was requested."""


class PretrainedWeightsError(PneumoError):
    """Pretrained weights were requested but cannot be found offline; the message says how to supply them."""


class MissingDependencyError(PneumoError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency lazily, or raise :class:`MissingDependencyError` with an install hint.

    Args:
        module: dotted module name to import.
        extra: the pneumoscan extra that provides it (``pip install "pneumoscan[extra]"``).
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"'{module}' is not installed; install it with: pip install \"pneumoscan[{extra}]\""
        ) from err


# -- one table: error class -> HTTP status and short name --------------------------------------------------------------
#: Every class of "this input cannot be used", with its HTTP status and the short name the CLI prints. The server
#: (``pneumoscan.serving``) and the CLI both classify through :func:`http_status` / :func:`error_kind`, so the two
#: never disagree. Looked up along the exception's method resolution order: the most specific row wins
#: (:class:`CorruptDicomError` is 422 through :class:`CorruptImageError` before :class:`DicomError`'s 415).
#:
#: Not an error, hence not a row: an image that decodes but is not a chest X-ray is answered 200 with
#: ``status: "out_of_scope"`` and a ``reason`` by the competence gate (``pneumoscan.inference``).
ERROR_TABLE: tuple[tuple[type[PneumoError], int, str], ...] = (
    (ImageTooLargeError, 413, "too large"),  # more bytes (--max-upload-mb) or pixels (--max-pixels) than allowed
    (RequestTooLargeError, 413, "request too large"),  # too many files, or a body over every file at its limit
    (CorruptImageError, 422, "unreadable"),  # empty, truncated, corrupt (JPEG, PNG, TIFF, BMP, DICOM header/pixels)
    (UnsupportedImageError, 415, "unsupported format"),  # not an image, unknown or unsupported format / DICOM variant
    (ImageReadError, 422, "unreadable"),  # any other image problem (no such file, permission denied, ...)
)
_STATUS = {cls: (status, kind) for cls, status, kind in ERROR_TABLE}


def _row(err: BaseException) -> tuple[int, str] | None:
    for cls in type(err).__mro__:
        row = _STATUS.get(cls)  # type: ignore[call-overload]
        if row is not None:
            return row
    return None


def http_status(err: BaseException, default: int = 400) -> int:
    """HTTP status for an input error, from :data:`ERROR_TABLE`; ``default`` for other :class:`PneumoError`."""
    row = _row(err)
    return row[0] if row is not None else default


def error_kind(err: BaseException) -> str:
    """Short class name of an input error ("unreadable", "unsupported format", "too large", ...) or "error"."""
    row = _row(err)
    return row[1] if row is not None else "error"
