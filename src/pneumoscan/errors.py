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


class DicomError(ImageReadError):
    """A DICOM file is valid but uses something we cannot turn into a grey image (e.g. RGB, no pixel data)."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than allowed (decompression-bomb guard)."""


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
