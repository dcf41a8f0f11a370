"""pneumoscan: pneumonia detection on chest X-rays, from a folder of images to a deployed model.

Importing the package is cheap on purpose: no torch, timm or pydicom import happens here, so that the CLI starts
fast and an ONNX-only install (without PyTorch) can still import :mod:`pneumoscan`.
"""

from __future__ import annotations

__version__ = "0.1.0"
CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")

__all__ = ["__version__", "CLASS_NAMES"]
