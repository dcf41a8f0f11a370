"""Images that are not frontal chest X-rays, to measure (and test) the competence gate.

Every kind is made offline, from what ships with the installed libraries or from chest X-rays the caller gives:

- ``photo``: scikit-learn's two sample photos (``load_sample_images``) and, when scikit-image is installed, its
  bundled sample images (astronaut, camera, coffee, coins, moon, text, ...); grey versions, as the reader makes them.
- ``black``, ``white``, ``uniform_grey``: constant images. ``noise``: uniform pixel noise. ``gradient``: a smooth ramp.
- From chest X-rays: ``inverted`` (negative, as a MONOCHROME1 file read wrongly), ``rotated_90`` / ``rotated_270``,
  ``upside_down`` (vertical flip), ``cropped`` (a random patch of a ninth of the image, enlarged).

Colour versions (for the chroma check) only exist as files; :func:`colour_photo_png` writes one.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

XRAY_TRANSFORMS = ("inverted", "rotated_90", "rotated_270", "upside_down", "cropped")
SYNTHETIC_KINDS = ("black", "white", "uniform_grey", "noise", "gradient")
SKIMAGE_SAMPLES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "horse",
                   "hubble_deep_field", "immunohistochemistry", "clock", "grass", "gravel", "brick", "logo",
                   "motorcycle_left", "cat", "colorwheel", "retina", "microaneurysms", "shepp_logan_phantom")


def sample_photos() -> list[np.ndarray]:
    """Grey [0, 1] photos available offline: scikit-learn's 2, plus scikit-image's samples when installed."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(im, dtype=np.float32).mean(axis=2) / 255.0 for im in load_sample_images().images]
    try:
        import skimage.data as skdata
    except ImportError:
        logger.info("scikit-image not installed: only scikit-learn's 2 sample photos are used")
        return photos
    for name in SKIMAGE_SAMPLES:
        try:
            im = np.asarray(getattr(skdata, name)(), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a sample that needs a download (pooch) or is missing in this version
            continue
        if im.ndim == 3:
            im = im[..., :3].mean(axis=2)
        span = im.max() - im.min()
        photos.append(((im - im.min()) / (span if span > 0 else 1.0)).astype(np.float32))
    return photos


def synthetic_images(size: int, rng: np.random.Generator, n_noise: int = 20) -> dict[str, list[np.ndarray]]:
    """Constant, noise and gradient images, grey [0, 1], ``size``×``size``."""
    ramp = np.tile(np.linspace(0, 1, size, dtype=np.float32), (size, 1))
    return {
        "black": [np.zeros((size, size), np.float32)],
        "white": [np.ones((size, size), np.float32)],
        "uniform_grey": [np.full((size, size), v, np.float32) for v in (0.25, 0.5, 0.75)],
        "noise": [rng.random((size, size), dtype=np.float32) for _ in range(n_noise)],
        "gradient": [ramp, ramp.T.copy()],
    }


def transform_xray(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One of :data:`XRAY_TRANSFORMS` applied to a grey [0, 1] chest X-ray."""
    if kind == "inverted":
        return (1.0 - image).astype(np.float32)
    if kind == "rotated_90":
        return np.ascontiguousarray(np.rot90(image, 1))
    if kind == "rotated_270":
        return np.ascontiguousarray(np.rot90(image, 3))
    if kind == "upside_down":
        return np.ascontiguousarray(image[::-1, :])
    if kind == "cropped":
        h, w = image.shape
        ch, cw = max(8, h // 3), max(8, w // 3)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return np.ascontiguousarray(image[y:y + ch, x:x + cw])
    raise ValueError(f"unknown transform '{kind}'; choose from {', '.join(XRAY_TRANSFORMS)}")


def probe_set(xrays: Sequence[np.ndarray], size: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Every kind of non-frontal-chest-X-ray image: grey [0, 1] arrays by kind (X-ray transforms of ``xrays``)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"photo": sample_photos(), **synthetic_images(size, rng)}
    for kind in XRAY_TRANSFORMS:
        out[kind] = [transform_xray(x, kind, rng) for x in xrays]
    return out


def colour_photo_png() -> bytes:
    """scikit-learn's first sample photo (a colour JPEG-derived RGB image) as PNG bytes."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    buf = io.BytesIO()
    Image.fromarray(load_sample_images().images[0]).save(buf, format="PNG")
    return buf.getvalue()
