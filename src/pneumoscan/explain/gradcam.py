"""Grad-CAM (Selvaraju et al., ICCV 2017) heatmaps via the maintained ``pytorch-grad-cam`` package.

The model has a single pneumonia logit, so the target is that logit itself (not an argmax over classes): the map
shows what pushes the model towards PNEUMONIA. Hooks are released and the model's train/eval mode restored in
``finally``, so explaining never changes the model.

:func:`explain_image` also reports ``heatmap_lung_fraction``, the share of the heatmap's mass inside the lung fields
found by the lung model: a model that looks at the lungs puts most of it there, a low share points at a shortcut
(burned-in text, markers, devices, the film border).
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np

from pneumoscan.errors import require

logger = logging.getLogger(__name__)


class _LogitTarget:
    """Score = the single output logit (pytorch-grad-cam calls target(model_output_row))."""

    def __call__(self, model_output: Any) -> Any:
        return model_output.reshape(-1)[0]


def gradcam(model: Any, model_name: str, inputs: np.ndarray) -> np.ndarray:
    """Grad-CAM maps for a batch.

    Args:
        model: the torch model (eval mode is used and restored).
        model_name: registry name, to find the target layer.
        inputs: float32 (N, 1, S, S) normalised model inputs.

    Returns:
        float32 (N, S, S) maps in [0, 1].
    """
    torch = require("torch", "torch")
    cam_mod = require("pytorch_grad_cam", "torch")
    from pneumoscan.models.registry import gradcam_layer

    layer = gradcam_layer(model, model_name)
    was_training = model.training
    model.eval()
    try:
        with cam_mod.GradCAM(model=model, target_layers=[layer]) as cam:
            device = next(model.parameters()).device
            x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(device)
            maps = cam(input_tensor=x, targets=[_LogitTarget() for _ in range(len(x))])
    finally:
        model.train(was_training)
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    return np.clip(maps, 0.0, 1.0)


def overlay_png(image_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> bytes:
    """Blend a [0, 1] heatmap (jet colour map) over a grey uint8 image; returns PNG bytes."""
    from matplotlib import colormaps
    from PIL import Image

    grey = np.repeat(image_uint8[..., None].astype(np.float32) / 255.0, 3, axis=2)
    heat = colormaps["jet"](heatmap)[..., :3].astype(np.float32)
    weight = alpha * heatmap[..., None]  # cold regions keep the X-ray visible
    rgb = np.clip((1 - weight) * grey + weight * heat, 0, 1)
    buf = io.BytesIO()
    Image.fromarray((rgb * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def heatmap_png(heatmap: np.ndarray) -> bytes:
    """The heatmap alone as an RGBA PNG (jet, alpha ∝ intensity) for overlays drawn by a browser."""
    from matplotlib import colormaps
    from PIL import Image

    rgba = colormaps["jet"](heatmap)
    rgba[..., 3] = np.clip(heatmap * 0.8, 0, 1)
    buf = io.BytesIO()
    Image.fromarray((rgba * 255).astype(np.uint8), mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def explain_prepared(predictor: Any, prepared: np.ndarray) -> np.ndarray:
    """Grad-CAM map (S, S) for one prepared uint8 image with a torch-backed :class:`Predictor`."""
    from pneumoscan.data.preprocess import to_float
    from pneumoscan.errors import ConfigError

    if predictor.model is None:
        raise ConfigError("heatmaps need the PyTorch backend (Grad-CAM uses gradients); ONNX models cannot explain")
    inputs = to_float(prepared[None], predictor.info.preprocess)[:, None]
    return gradcam(predictor.model.float(), predictor.info.name, inputs)[0]


def lung_map_for(predictor: Any, image: np.ndarray, geometry: Any = None) -> np.ndarray | None:
    """The lung probability map (S, S) in the frame of the model input made from ``image``; None if no lung model.

    ``geometry`` is the image's :class:`~pneumoscan.data.lungs.LungGeometry` when already known (a lung-crop model
    computed it in ``prepare_with_lungs``); otherwise the lung model is run here. For a lung-crop model the map is
    cropped as the image was; for any other model the input frame is the whole image.
    """
    from pneumoscan.data.lungs import lung_map_in_input
    from pneumoscan.errors import CheckpointError

    cfg = predictor.info.preprocess
    try:
        geo = geometry if geometry is not None else predictor.lung_segmenter().geometry(image)
    except CheckpointError as err:  # a build without a lung model still explains, without the lung share
        logger.warning("no lung share for the heatmap: %s", err)
        return None
    h, w = image.shape
    return lung_map_in_input(geo, cfg.lung_margin if cfg.lung_crop else None, cfg.image_size, w, h)


def explain_image(predictor: Any, image: np.ndarray) -> dict[str, Any]:
    """Grad-CAM of one decoded grey [0, 1] image, with the share of the heatmap inside the lungs.

    Returns:
        ``prepared`` (uint8 model input), ``heatmap`` (S, S in [0, 1]), ``lung_map`` ((S, S) lung probability in
        the same frame, or None without a lung model) and ``heatmap_lung_fraction`` (float or None).
    """
    from pneumoscan.data.lungs import heatmap_lung_fraction

    prepared, geometry = predictor.prepare_with_lungs(image)
    cam = explain_prepared(predictor, prepared)
    lung_map = lung_map_for(predictor, image, geometry)
    share = heatmap_lung_fraction(cam, lung_map) if lung_map is not None else None
    return {"prepared": prepared, "heatmap": cam, "lung_map": lung_map, "heatmap_lung_fraction": share}
