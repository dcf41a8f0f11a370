"""Model registry: every architecture takes one grey channel and returns one logit (pneumonia)."""

from pneumoscan.models.registry import MODEL_SPECS, ModelSpec, create_model, gradcam_layer, list_models

__all__ = ["MODEL_SPECS", "ModelSpec", "create_model", "gradcam_layer", "list_models"]
