"""Grad-CAM (Selvaraju et al., ICCV 2017) heatmaps via the maintained ``pytorch-grad-cam`` package.

The model has a single pneumonia logit, so the target is that logit itself (not an argmax over classes): the map
shows what pushes the model towards PNEUMONIA. Hooks are released and the model's train/eval mode restored in
``finally``, so explaining never changes the model.
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
