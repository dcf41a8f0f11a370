"""What a lung probability map is used for: bounding box, crop, dimming outside the lungs, heatmap share, outline.

Torch-free (numpy, Pillow, scipy), so the same code serves training (the decode-once cache), the PyTorch and the
ONNX predictors and the server. The map comes from :class:`pneumoscan.inference.lungs.LungSegmenter`.

Why crop at all: a classifier trained on whole films can learn from what surrounds the lungs — burned-in text,
markers, the shoulders and arms of a child, the film border of a portable AP film — and such shortcuts do not
transfer between hospitals. Cropping to the lung fields with a margin (and optionally dimming what lies outside
them) takes most of that away while keeping the costophrenic angles and the mediastinum in view.

When no lungs are found (a photo, a blank image, an image the segmenter fails on) the full image is used unchanged
and :class:`LungGeometry.reason` says why, so the fallback is reported per image rather than silently applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# A lung map counts as "lungs found" when the lung area and box are at least this large (fractions of the image):
# both NLM sets have a lung fraction of 0.12–0.40 and lung boxes wider and taller than half the image.
MIN_LUNG_FRACTION = 0.03
MAX_LUNG_FRACTION = 0.75  # more than this is no chest radiograph's lungs (a blank or uniform image lit up)
MIN_BOX_SIDE = 0.15
PROBABILITY_THRESHOLD = 0.5


@dataclass(frozen=True)
class LungGeometry:
    """Where the lungs are in an image, in fractions of its width and height (independent of its pixel size).

    Attributes:
        found: whether usable lung fields were found (if not, the full image is used).
        box: tight lung bounding box ``(x0, y0, x1, y1)`` in [0, 1]; the full image when not found.
        fraction: share of the image that is lung.
        mask: uint8 lung probability map ×255 at the segmenter's resolution (for dimming and heatmap shares).
        reason: why the lungs were not found, None when they were.
    """

    found: bool
    box: tuple[float, float, float, float]
    fraction: float
    mask: np.ndarray
    reason: str | None = None

    def report(self) -> dict[str, Any]:
        """Plain-data summary for predictions, APIs and logs."""
        return {"lungs_found": self.found, "lung_box": [round(v, 4) for v in self.box],
                "lung_fraction": round(self.fraction, 4), "lung_fallback": self.reason}


def lung_geometry(probabilities: np.ndarray, threshold: float = PROBABILITY_THRESHOLD) -> LungGeometry:
    """Lung box and area from a (M, M) probability map.

    Only the two largest connected regions are kept (the two lungs; specks elsewhere would stretch the box), and
    a region smaller than a tenth of the largest is dropped.
    """
    probs = np.clip(np.nan_to_num(np.asarray(probabilities, dtype=np.float32)), 0.0, 1.0)
    mask_u8 = np.rint(probs * 255).astype(np.uint8)
    return geometry_from_mask(mask_u8, threshold)


def geometry_from_mask(mask_u8: np.ndarray, threshold: float = PROBABILITY_THRESHOLD) -> LungGeometry:
    """:func:`lung_geometry` of a map already quantised to uint8 (what the training cache stores): the decision
    is taken on the quantised map in both places, so cached and live geometries agree exactly."""
    binary = mask_u8 >= int(np.ceil(threshold * 255))
    full = (0.0, 0.0, 1.0, 1.0)
    if not binary.any():
        return LungGeometry(False, full, 0.0, mask_u8, "no lung pixels found; full image used")
    keep = _largest_regions(binary, 2)
    fraction = float(keep.mean())
    rows, cols = np.nonzero(keep)
    h, w = keep.shape
    box = (cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)
    if fraction < MIN_LUNG_FRACTION:
        return LungGeometry(False, full, fraction, mask_u8,
                            f"lung area {fraction:.1%} of the image is below {MIN_LUNG_FRACTION:.0%}; full image used")
    if fraction > MAX_LUNG_FRACTION:
        return LungGeometry(False, full, fraction, mask_u8,
                            f"lung area {fraction:.0%} of the image is implausibly large; full image used")
    if box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE:
        return LungGeometry(False, full, fraction, mask_u8, "lung region too narrow; full image used")
    return LungGeometry(True, tuple(float(v) for v in box), fraction, mask_u8)  # type: ignore[arg-type]


def _largest_regions(binary: np.ndarray, count: int) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(binary)
    if n <= 1:
        return binary
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:count]
    order = [i for i in order if sizes[i] >= sizes[order[0]] / 10]
    return np.isin(labels, np.asarray(order) + 1)


def crop_box(geometry: LungGeometry, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box ``(left, top, right, bottom)`` of the lung box grown by ``margin`` × its size on every side."""
    if not geometry.found:
        return 0, 0, width, height
    x0, y0, x1, y1 = geometry.box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    # rounded before floor/ceil so that 0.86 * 1000 = 860.0000000001 does not become 861
    left = int(np.floor(round(max(0.0, x0 - dx) * width, 6)))
    top = int(np.floor(round(max(0.0, y0 - dy) * height, 6)))
    right = int(np.ceil(round(min(1.0, x1 + dx) * width, 6)))
    bottom = int(np.ceil(round(min(1.0, y1 + dy) * height, 6)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def resize_map(mask_u8: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 probability map → float32 (height, width) in [0, 1], bilinear."""
    im = Image.fromarray(np.asarray(mask_u8, dtype=np.float32) / 255.0, mode="F")
    return np.asarray(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def crop_to_lungs(image: np.ndarray, geometry: LungGeometry, margin: float = 0.1, dim: float = 0.0) -> np.ndarray:
    """Crop a grey [0, 1] image to its lungs (box + ``margin``), darkening pixels outside them by ``dim``.

    Args:
        image: (H, W) float image in [0, 1] at any resolution (the box is in fractions).
        geometry: from :func:`lung_geometry` on this image's lung map.
        margin: grow the lung box by this fraction of its width/height on each side (0.1 = 10 %).
        dim: 0 keeps what lies outside the lungs as is, 1 makes it black; in between, a pixel is multiplied by
            ``1 - dim × (1 - p)`` with ``p`` its lung probability, so the lung border fades instead of cutting.

    Returns:
        The cropped (and dimmed) image; the input unchanged when the lungs were not found.
    """
    if not geometry.found:
        return image
    h, w = image.shape
    left, top, right, bottom = crop_box(geometry, margin, w, h)
    out = image[top:bottom, left:right]
    if dim > 0:
        weight = resize_map(geometry.mask, w, h)[top:bottom, left:right]
        out = out * (1.0 - np.float32(dim) * (1.0 - weight))
    return np.ascontiguousarray(out, dtype=np.float32)


def prepare_cropped(image: np.ndarray, config: Any, geometry: LungGeometry) -> np.ndarray:
    """The classifier input (uint8 S×S) of a grey [0, 1] image cropped to its lungs as ``config`` (a
    :class:`~pneumoscan.data.preprocess.PreprocessConfig`) says; shared by the training cache and the predictors."""
    from pneumoscan.data.preprocess import prepare

    return prepare(crop_to_lungs(image, geometry, config.lung_margin, config.lung_dim), config)


def lung_map_in_input(geometry: LungGeometry, margin: float | None, size: int, width: int = 1024,
                      height: int = 1024) -> np.ndarray:
    """The lung probability map in the classifier's input frame: (size, size) float32 in [0, 1].

    With ``margin`` None the input is the whole image; otherwise it is the lung crop made with that margin (the
    full image again when the lungs were not found). ``width``/``height`` only set the resolution the crop box is
    computed at; the original image size gives the exact frame.
    """
    full = resize_map(geometry.mask, width, height)
    if margin is not None and geometry.found:
        left, top, right, bottom = crop_box(geometry, margin, width, height)
        full = full[top:bottom, left:right]
    im = Image.fromarray(np.ascontiguousarray(full), mode="F")
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def heatmap_lung_fraction(heatmap: np.ndarray, lung_map: np.ndarray) -> float | None:
    """Share of the heatmap's mass that lies inside the lungs (lung probability > 0.5); None for an empty map.

    A model that looks at the lungs puts most of its Grad-CAM mass there; a low share points at a shortcut (text,
    markers, devices, film borders).
    """
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0, None)
    if heat.shape != lung_map.shape:
        raise ValueError(f"heatmap {heat.shape} and lung map {lung_map.shape} differ in shape")
    total = heat.sum()
    if total <= 0:
        return None
    return float(heat[lung_map > PROBABILITY_THRESHOLD].sum() / total)


def outline_overlay(image: np.ndarray, lung_mask: np.ndarray,
                    colour: tuple[int, int, int] = (0, 255, 160)) -> np.ndarray:
    """RGB uint8 image with the outline of ``lung_mask`` (bool, same shape) drawn over the grey [0, 1] image."""
    from scipy import ndimage

    edge = lung_mask & ~ndimage.binary_erosion(lung_mask, iterations=max(1, min(lung_mask.shape) // 256))
    grey = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[edge] = colour
    return rgb


def outline_rgba(lung_map: np.ndarray, colour: tuple[int, int, int] = (0, 255, 160)) -> np.ndarray:
    """Transparent RGBA uint8 image with only the lung outline drawn (for a browser to lay over the image)."""
    from scipy import ndimage

    mask = lung_map > PROBABILITY_THRESHOLD
    edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, min(mask.shape) // 200))
    rgba = np.zeros(mask.shape + (4,), dtype=np.uint8)
    rgba[edge] = (*colour, 255)
    return rgba
