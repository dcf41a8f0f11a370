"""Preprocessing shared by training, evaluation, prediction, the ONNX backend and the server.

The pipeline is deliberately tiny and torch-free (numpy + Pillow), so that an ONNX-only deployment computes exactly
the same input as training did:

1. ``prepare``: the decoded grey image in [0, 1] is resized to ``image_size``×``image_size`` (aspect ratio *not*
   kept — the Kermany benchmark images are already squashed to 224×224, and keeping one convention everywhere matters
   more than either choice) with Pillow's antialiased bilinear filter, then quantised to uint8. The uint8 result is
   what the training cache stores, so train and predict see identical pixels.
2. ``to_float``: uint8 → float32 ``(x / 255 - mean) / std``.

The :class:`PreprocessConfig` is saved in every checkpoint and read back from there; it is never re-specified at
evaluation or prediction time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from pneumoscan.errors import ConfigError

PREPROCESS_VERSION = 1  # bump when prepare() changes, so caches built with the old code are invalidated


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes a model input.

    Attributes:
        image_size: side of the square input in pixels.
        mean: subtracted after scaling to [0, 1].
        std: divided by after subtracting the mean.
    """

    image_size: int = 224
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if not 16 <= int(self.image_size) <= 2048:
            raise ConfigError(f"image_size must be between 16 and 2048, got {self.image_size}")
        if not self.std > 0:
            raise ConfigError(f"std must be positive, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "version": PREPROCESS_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(image_size=int(data["image_size"]), mean=float(data.get("mean", 0.0)),
                   std=float(data.get("std", 1.0)))


def prepare(image: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a float grey image in [0, 1] to ``image_size``² and quantise it to uint8.

    Args:
        image: (H, W) float array in [0, 1] as returned by :func:`pneumoscan.data.io.read_image`.
        image_size: output side in pixels.

    Returns:
        (image_size, image_size) uint8 array.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    grey = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    if grey.size != (image_size, image_size):
        # Pillow's resize on mode "F" is a true antialiased (area-aware) filter when shrinking.
        grey = grey.resize((image_size, image_size), Image.Resampling.BILINEAR)
    out = np.asarray(grey, dtype=np.float32)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def to_float(batch: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """uint8 images (..., H, W) → float32 model input ``(x / 255 - mean) / std``."""
    out = batch.astype(np.float32) / 255.0
    if config.mean != 0.0 or config.std != 1.0:
        out = (out - np.float32(config.mean)) / np.float32(config.std)
    return out
