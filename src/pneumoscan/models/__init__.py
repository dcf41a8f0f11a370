"""A model's whole life: the architecture registry, building, checkpoints, hardware and precision choice.

Every architecture takes one grey channel and returns one logit (pneumonia). The registry names are loaded on first
use (PEP 562), so the torch-free :mod:`pneumoscan.models.precision` imports without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pneumoscan.models.registry import MODEL_SPECS, ModelSpec, create_model, gradcam_layer, list_models

__all__ = ["MODEL_SPECS", "ModelSpec", "create_model", "gradcam_layer", "list_models"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("pneumoscan.models.registry"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
