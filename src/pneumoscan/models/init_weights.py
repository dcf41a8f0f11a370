"""Start a model from the weights of another pneumoscan file (``--init-from``): a self-supervised ``encoder.pt``
(:mod:`pneumoscan.training.pretrain`) or any checkpoint of the same architecture. The classifier head may differ or
be missing; everything else must match.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from pneumoscan.errors import CheckpointError, ConfigError
from pneumoscan.models.checkpoint import clean_state_dict, load_checkpoint

logger = logging.getLogger(__name__)


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier head (timm's ``get_classifier``)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "classifier", None)
    if head is None:
        return set()
    for name, module in model.named_modules():
        if module is head:
            return {f"{name}.{k}" for k in head.state_dict()}
    return set()


def load_init_weights(model: nn.Module, path: str | Path, model_name: str) -> dict[str, Any]:
    """Load ``encoder.pt`` (or any pneumoscan checkpoint of the same architecture) into ``model``.

    Everything but the classifier must match exactly; a head present in the file is loaded too when its shape fits.
    Returns the file's metadata (without weights).

    Raises:
        ConfigError: a different architecture, or weights that do not fit.
    """
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise ConfigError(f"--init-from: {err}") from err
    name = state["model"].get("name")
    if name != model_name:
        raise ConfigError(f"--init-from {path}: weights are for model '{name}', not '{model_name}'")
    weights = clean_state_dict(state["state_dict"])
    head = classifier_keys(model)
    own = model.state_dict()
    weights = {k: v for k, v in weights.items() if k not in head or (k in own and own[k].shape == v.shape)}
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:
        raise ConfigError(f"--init-from {path}: weights do not fit '{model_name}': {str(err).splitlines()[0]}") \
            from err
    missing = [k for k in result.missing_keys if k not in head]
    if missing or result.unexpected_keys:
        extra = (missing or list(result.unexpected_keys))[:3]
        raise ConfigError(f"--init-from {path}: weights do not fit '{model_name}' (e.g. {', '.join(extra)})")
    logger.info("initialised %s from %s (%s)", model_name, path, state.get("kind", "checkpoint"))
    return {k: v for k, v in state.items() if k not in ("state_dict", "optimizer", "scheduler", "rng")}
