"""Preprocessing shared by training, evaluation, prediction, the ONNX backend and the server.

The pipeline is deliberately tiny and torch-free (numpy + Pillow), so that an ONNX-only deployment computes exactly
the same input as training did:

1. ``prepare``: the decoded grey image in [0, 1] is resized to ``image_size``×``image_size`` (aspect ratio *not*
   kept — the Kermany benchmark images are already squashed to 224×224, and keeping one convention everywhere matters
   more than either choice) with Pillow's antialiased bilinear filter, then quantised to uint8. The uint8 result is
   what the training cache stores, so train and predict see identical pixels.
   Optionally (``PreprocessConfig.intensity``) the uint8 image is then standardised per image — global histogram
   equalisation or CLAHE — so that exposure, film/detector response and processing curves of other scanners and
   sites count for less (default off: checkpoints without the field predict exactly as before).
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
INTENSITY_MODES = ("none", "equalize", "clahe")


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
        intensity: per-image intensity standardisation after resizing: ``none`` (default), ``equalize`` (global
            histogram equalisation) or ``clahe`` (contrast-limited adaptive histogram equalisation, Zuiderveld 1994).
        clahe_clip: CLAHE clip limit, as a multiple of the mean histogram bin height (OpenCV's convention).
        clahe_grid: CLAHE tiles per side.
    """

    image_size: int = 224
    mean: float = 0.0
    std: float = 1.0
    lung_crop: bool = False
    lung_margin: float = 0.1
    lung_dim: float = 0.0
    lung_model: str = ""
    intensity: str = "none"
    clahe_clip: float = 2.0
    clahe_grid: int = 8

    def __post_init__(self) -> None:
        if not 16 <= int(self.image_size) <= 2048:
            raise ConfigError(f"image_size must be between 16 and 2048, got {self.image_size}")
        if not self.std > 0:
            raise ConfigError(f"std must be positive, got {self.std}")
        if not 0.0 <= self.lung_margin <= 1.0:
            raise ConfigError(f"lung_margin must be between 0 and 1 (fraction of the lung box), got {self.lung_margin}")
        if not 0.0 <= self.lung_dim <= 1.0:
            raise ConfigError(f"lung_dim must be between 0 (off) and 1 (black outside the lungs), got {self.lung_dim}")
        if self.intensity not in INTENSITY_MODES:
            raise ConfigError(f"intensity '{self.intensity}' is not valid; choose from {', '.join(INTENSITY_MODES)}")
        if not self.clahe_clip > 0 or not 1 <= int(self.clahe_grid) <= 64:
            raise ConfigError("clahe_clip must be > 0 and clahe_grid between 1 and 64")

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "version": PREPROCESS_VERSION}
        # Keep the stored form of every config that uses neither option byte for byte (checkpoints, ONNX metadata).
        if not self.lung_crop:
            for key in ("lung_crop", "lung_margin", "lung_dim", "lung_model"):
                out.pop(key)
        if self.intensity == "none":
            for key in ("intensity", "clahe_clip", "clahe_grid"):
                out.pop(key)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Read a stored config; fields a checkpoint predates take their defaults (which change nothing)."""
        return cls(image_size=int(data["image_size"]), mean=float(data.get("mean", 0.0)),
                   std=float(data.get("std", 1.0)), lung_crop=bool(data.get("lung_crop", False)),
                   lung_margin=float(data.get("lung_margin", 0.1)), lung_dim=float(data.get("lung_dim", 0.0)),
                   lung_model=str(data.get("lung_model", "")), intensity=str(data.get("intensity", "none")),
                   clahe_clip=float(data.get("clahe_clip", 2.0)), clahe_grid=int(data.get("clahe_grid", 8)))

    def lung_key(self) -> dict[str, Any] | None:
        """What of the lung options changes the prepared pixels (None without lung crop): part of cache keys."""
        if not self.lung_crop:
            return None
        return {"model": self.lung_model, "margin": self.lung_margin, "dim": self.lung_dim}

    @property
    def pixel_key(self) -> dict[str, Any]:
        """The fields that change the uint8 pixels :func:`prepare` produces (for cache keys)."""
        key: dict[str, Any] = {"image_size": int(self.image_size)}
        if self.intensity != "none":
            key.update(intensity=self.intensity, clahe_clip=self.clahe_clip, clahe_grid=self.clahe_grid)
        return key


def prepare(image: np.ndarray, image_size: int | PreprocessConfig) -> np.ndarray:
    """Resize a float grey image in [0, 1] to the input size, quantise it to uint8 and standardise its intensities.

    Args:
        image: (H, W) float array in [0, 1] as returned by :func:`pneumoscan.data.io.read_image`.
        image_size: output side in pixels, or the whole :class:`PreprocessConfig` (then its ``intensity`` option is
            applied too; an int means no intensity standardisation, as before the option existed).

    Returns:
        (S, S) uint8 array.
    """
    config = image_size if isinstance(image_size, PreprocessConfig) else None
    size = int(config.image_size) if config is not None else int(image_size)
    out = _resize_uint8(image, size)
    if config is not None and config.intensity == "equalize":
        out = equalize_histogram(out)
    elif config is not None and config.intensity == "clahe":
        out = clahe(out, clip_limit=config.clahe_clip, grid=int(config.clahe_grid))
    return out


def _resize_uint8(image: np.ndarray, image_size: int) -> np.ndarray:
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    grey = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    if grey.size != (image_size, image_size):
        # Pillow's resize on mode "F" is a true antialiased (area-aware) filter when shrinking.
        grey = grey.resize((image_size, image_size), Image.Resampling.BILINEAR)
    out = np.asarray(grey, dtype=np.float32)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def equalize_histogram(image: np.ndarray) -> np.ndarray:
    """Global histogram equalisation of a uint8 image (Pillow's ``ImageOps.equalize``)."""
    from PIL import ImageOps

    return np.asarray(ImageOps.equalize(Image.fromarray(image, mode="L")), dtype=np.uint8)


def clahe(image: np.ndarray, clip_limit: float = 2.0, grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a uint8 image, in numpy.

    Why our own: OpenCV and scikit-image are not dependencies of the ONNX-only install, and the same pixels must come
    out of training, ``predict``, the server and the ONNX backend. The algorithm is the usual one (as OpenCV's
    ``createCLAHE``): per-tile histograms clipped at ``clip_limit`` × (tile pixels / 256) with the excess spread
    evenly, each tile's cumulative histogram as its mapping, and bilinear interpolation between the mappings of the
    four nearest tile centres. The image is reflect-padded to a multiple of ``grid``.

    Args:
        image: (H, W) uint8.
        clip_limit: > 0; larger is closer to plain adaptive equalisation.
        grid: tiles per side.
    """
    img = np.asarray(image, dtype=np.uint8)
    h, w = img.shape
    th, tw = -(-h // grid), -(-w // grid)
    padded = np.pad(img, ((0, th * grid - h), (0, tw * grid - w)), mode="reflect") if (th * grid, tw * grid) != (h, w) \
        else img
    tiles = padded.reshape(grid, th, grid, tw).transpose(0, 2, 1, 3).reshape(grid * grid, th * tw)
    offsets = (np.arange(grid * grid, dtype=np.int64) * 256)[:, None]
    hist = np.bincount((tiles.astype(np.int64) + offsets).ravel(), minlength=grid * grid * 256)
    hist = hist.reshape(grid * grid, 256).astype(np.float64)
    limit = max(1.0, clip_limit * th * tw / 256.0)
    excess = np.clip(hist - limit, 0, None).sum(axis=1, keepdims=True)
    hist = np.minimum(hist, limit) + excess / 256.0
    lut = (np.cumsum(hist, axis=1) * (255.0 / (th * tw))).reshape(grid, grid, 256)

    def axis(n: int, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = (np.arange(n) + 0.5) / t - 0.5
        lo = np.floor(f)
        weight = np.clip(f - lo, 0.0, 1.0)
        i0 = np.clip(lo, 0, grid - 1).astype(np.int64)
        i1 = np.clip(lo + 1, 0, grid - 1).astype(np.int64)
        return i0, i1, weight

    y0, y1, wy = axis(h, th)
    x0, x1, wx = axis(w, tw)
    v = img.astype(np.int64)
    top = lut[y0[:, None], x0[None, :], v] * (1 - wx) + lut[y0[:, None], x1[None, :], v] * wx
    bottom = lut[y1[:, None], x0[None, :], v] * (1 - wx) + lut[y1[:, None], x1[None, :], v] * wx
    out = top * (1 - wy)[:, None] + bottom * wy[:, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_float(batch: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """uint8 images (..., H, W) → float32 model input ``(x / 255 - mean) / std``."""
    out = batch.astype(np.float32) / 255.0
    if config.mean != 0.0 or config.std != 1.0:
        out = (out - np.float32(config.mean)) / np.float32(config.std)
    return out
