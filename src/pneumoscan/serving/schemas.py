"""JSON shapes of the REST API (they are also what /openapi.json documents)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class ModelOut(BaseModel):
    """The deployed model, as stored with its weights."""

    name: str = Field(description="architecture name")
    version: str = Field(description="model version (architecture + short hash of the checkpoint)")
    backend: str = Field(description="'torch' or 'onnx'")
    image_size: int = Field(description="side of the square model input in pixels")
    preprocess: dict[str, Any] = Field(description="image_size, mean, std, preprocessing version")
    threshold: float = Field(description="default decision threshold on the probability")
    threshold_rule: str = Field(description="how the threshold was chosen")
    temperature: float = Field(description="calibration temperature: probability = sigmoid(logit / temperature)")
    class_names: list[str]
    operating_points: dict[str, float] = Field(description="alternative thresholds by rule")
    metrics: dict[str, Any] = Field(description="the model card's test metrics, {} when not recorded")
    heatmaps: bool = Field(description="whether Grad-CAM heatmaps are available (torch backend only)")
    populations: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="operating point per population: {name: {threshold (null: none of its own), "
                                          "rule, n_val, n_pos, definition[, note]}}")
    default_population: str = Field(default="", description="the population applied when a request names none")
    population: str = Field(default="", description="the population this server labels at by default")
    gate: dict[str, Any] = Field(default_factory=dict, description="competence gate: image-check limits, whether a "
                                                                   "distribution check is fitted, its threshold")


class ResultOut(BaseModel):
    """The answer for one uploaded file. Optional fields (error, images) are left out when not set."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "filename": "chest.png", "status": "ok", "probability": 0.9132, "label": "PNEUMONIA", "threshold": 0.47,
        "population": "pediatric", "model": "cnn", "version": "cnn-678518ccb6", "reason": None,
        "gate": {"in_scope": True, "reason": None, "std": 61.2, "roughness": 0.11, "chroma": None,
                 "lung_fraction": None, "distribution_score": 1.3, "distribution_threshold": 4.9}}})

    filename: str
    status: str = Field(default="ok", description="'ok' (labelled), 'out_of_scope' (the competence gate refused "
                                                  "the image: see reason; no label) or 'error'")
    probability: float | None = Field(description="calibrated probability of pneumonia; null on error. For an "
                                                  "out_of_scope image it is given for information only: not a "
                                                  "finding")
    label: str | None = Field(description="class name at the population's threshold; null on error and when "
                                          "out_of_scope")
    threshold: float = Field(description="the threshold applied (that of 'population')")
    population: str = Field(default="", description="the population whose threshold was applied")
    reason: str | None = Field(default=None, description="why out_of_scope (or the error)")
    gate: dict[str, Any] | None = Field(default=None, description="the competence gate's scores and limits")
    model: str
    version: str
    error: str | None = Field(default=None, description="'<file>: <problem>' when this file could not be used")
    heatmap_png_base64: str | None = Field(
        default=None, description="Grad-CAM heatmap alone, RGBA PNG (model input size) to draw over the image")
    overlay_png_base64: str | None = Field(
        default=None, description="Grad-CAM heatmap blended over the model input, RGB PNG")
    preview_png_base64: str | None = Field(
        default=None, description="the decoded grey image (aspect kept, at most 768 px), PNG; for display")
    lung_outline_png_base64: str | None = Field(
        default=None, description="with preview: outline of the lung fields found by the lung model, transparent "
                                  "RGBA PNG in the whole-image frame (stretch it over the preview)")
    lungs: dict[str, Any] | None = Field(
        default=None, description="models that crop to the lungs: lungs_found, lung_box, lung_fraction and "
                                  "lung_fallback (why the whole image was used)")
    input_box: list[float] | None = Field(
        default=None, description="models that crop to the lungs: where the model input (and the heatmap) lies in "
                                  "the image, fractions [x0, y0, x1, y1]")
    heatmap_lung_fraction: float | None = Field(
        default=None, description="with heatmap: share of the Grad-CAM heatmap's mass inside the lung fields")

    @model_serializer(mode="wrap")
    def _drop_unset_optionals(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for key in ("error", "heatmap_png_base64", "overlay_png_base64", "preview_png_base64",
                    "lung_outline_png_base64", "lungs", "input_box", "heatmap_lung_fraction"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class PredictOut(BaseModel):
    """Answer of ``POST /v1/predict``: the model, and one result per file in upload order."""

    model: ModelOut
    results: list[ResultOut]


class HealthOut(BaseModel):
    """Answer of ``GET /healthz`` (open even when an API key is required)."""

    status: str = Field(description="'ok' when the model is loaded")
    auth_required: bool = Field(description="whether /v1 endpoints need the X-API-Key header")
    pneumoscan_version: str


class ErrorOut(BaseModel):
    """Every error answer: ``{"detail": "<file>: <problem>"}`` or ``{"detail": "<problem>"}``."""

    detail: str
