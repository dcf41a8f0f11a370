"""Preprocessing shared by training, evaluation, prediction, the ONNX backend and the server.

The pipeline is deliberately tiny and torch-free (numpy + Pillow), so that an ONNX-only deployment computes exactly
the same input as training did:

1. ``prepare``: the decoded grey image in [0, 1] is resized to ``image_size``×``image_size`` (aspect ratio *not*
   kept — the Kermany benchmark images are already squashed to 224×224, and keeping one convention everywhere matters
   more than either choice) with Pillow's antialiased bilinear filter, then quantised to uint8. The uint8 result is
   what the training cache stores, so train and predict see identical pixels.
2. ``to_float``: uint8 → float32 ``(x / 255 - mean) / std``.

Optionally (``lung_crop``), before step 1 the image is cropped to its lung fields found by the shipped lung U-Net
(:mod:`pneumoscan.data.lungs`, :mod:`pneumoscan.inference.lungs`), with a margin and optional dimming outside the
lungs; an image without detectable lungs is used whole, and that is reported per image. The defaults (no crop) leave
every existing checkpoint predicting exactly as before, and their serialised config unchanged.

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
        lung_crop: crop every image to its lung bounding box (grown by ``lung_margin``) before resizing.
        lung_margin: margin added on each side of the lung box, as a fraction of the box's width / height.
        lung_dim: darken what lies outside the lungs inside the crop (0 = not at all, 1 = black).
        lung_model: name (with content digest) of the lung model that finds the lungs; recorded so that a model is
            never run with crops from another lung model than the one it was trained with.
    """

    image_size: int = 224
    mean: float = 0.0
    std: float = 1.0
    lung_crop: bool = False
    lung_margin: float = 0.1
    lung_dim: float = 0.0
    lung_model: str = ""

    def __post_init__(self) -> None:
        if not 16 <= int(self.image_size) <= 2048:
            raise ConfigError(f"image_size must be between 16 and 2048, got {self.image_size}")
        if not self.std > 0:
            raise ConfigError(f"std must be positive, got {self.std}")
        if not 0.0 <= self.lung_margin <= 1.0:
            raise ConfigError(f"lung_margin must be between 0 and 1 (fraction of the lung box), got {self.lung_margin}")
        if not 0.0 <= self.lung_dim <= 1.0:
            raise ConfigError(f"lung_dim must be between 0 (off) and 1 (black outside the lungs), got {self.lung_dim}")

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "version": PREPROCESS_VERSION}
        if not self.lung_crop:  # keep the stored form of every pre-lung-crop config byte for byte
            for key in ("lung_crop", "lung_margin", "lung_dim", "lung_model"):
                out.pop(key)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(image_size=int(data["image_size"]), mean=float(data.get("mean", 0.0)),
                   std=float(data.get("std", 1.0)), lung_crop=bool(data.get("lung_crop", False)),
                   lung_margin=float(data.get("lung_margin", 0.1)), lung_dim=float(data.get("lung_dim", 0.0)),
                   lung_model=str(data.get("lung_model", "")))

    def lung_key(self) -> dict[str, Any] | None:
        """What of the lung options changes the prepared pixels (None without lung crop): part of cache keys."""
        if not self.lung_crop:
            return None
        return {"model": self.lung_model, "margin": self.lung_margin, "dim": self.lung_dim}


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
