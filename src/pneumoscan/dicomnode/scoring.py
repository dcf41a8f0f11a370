"""From received DICOM files to :class:`Outcome` objects: the model's answer, or why there is none.

The model only ever sees what :class:`~pneumoscan.inference.predictor.Predictor` reads, so a DICOM scored here gets
the same probability as with ``pneumoscan predict``. Before the model, a few header checks decide whether the
instance is a frontal chest radiograph the model was made for (:func:`scope_problem`); after it, the Predictor's
competence gate (``Prediction.status`` / ``reason`` / ``population``) can still say "out of scope". Either way the
instance gets a result that says so: nothing is dropped silently.

Error texts never contain patient identifiers: files are named to the Predictor by SOP Instance UID, and the header
checks quote only technical attributes (Modality, BodyPartExamined, ViewPosition, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.dicomnode.conformance import (
    ACCEPTED_SOP_CLASSES,
    CHEST_MODALITIES,
    DX_FOR_PROCESSING,
    SECONDARY_CAPTURE,
)
from pneumoscan.errors import ImageReadError, require

logger = logging.getLogger(__name__)

STATUSES = ("ok", "out_of_scope", "error")
_FRONTAL_VIEWS = {"", "PA", "AP"}
_CHEST_PARTS = {"", "CHEST", "THORAX", "LUNG", "PORT CHEST"}


@dataclass(frozen=True)
class Outcome:
    """What the node reports for one instance.

    Attributes:
        sop_instance_uid: the source instance.
        status: "ok" (scored), "out_of_scope" (not an image the model is for; no probability) or "error"
            (unreadable).
        probability: calibrated P(pneumonia), None unless status is "ok".
        label: the class at ``threshold`` ("NORMAL" / "PNEUMONIA"), None unless status is "ok".
        threshold: the decision threshold applied.
        population: the population whose threshold was applied.
        threshold_rule: how that threshold was chosen (from the model's metadata).
        reason: why there is no probability (or a caveat), else None.
        model: model name.
        version: model version (architecture and weights digest).
    """

    sop_instance_uid: str
    status: str
    probability: float | None
    label: str | None
    threshold: float
    population: str
    threshold_rule: str
    reason: str | None
    model: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_header(path: Path, name: str) -> Any:
    """The data set of ``path`` without its pixel data (patient/study modules, geometry).

    Raises:
        ImageReadError: the file is not a parsable DICOM data set.
    """
    pydicom = require("pydicom", "dicom")
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)  # type: ignore[attr-defined]
    except Exception as err:  # broad on purpose: pydicom raises many types on corrupt input
        raise ImageReadError(name, f"not a readable DICOM data set ({type(err).__name__})") from err


def _text(ds: Any, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip().upper()


def scope_problem(ds: Any) -> str | None:
    """Why this instance is not a frontal chest radiograph the model can read, or None when it is (or may be).

    Missing attributes are not held against an image (many modalities leave BodyPartExamined empty); present ones
    that contradict a frontal chest radiograph are.
    """
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class and sop_class not in ACCEPTED_SOP_CLASSES:
        return f"SOP class {sop_class} is not a projection radiograph (CR, DX or Secondary Capture)"
    if sop_class == DX_FOR_PROCESSING or _text(ds, "PresentationIntentType") == "FOR PROCESSING":
        return ("DX image 'for processing' (raw detector data); the model reads images prepared for presentation "
                "— send the 'for presentation' instance")
    modality = _text(ds, "Modality")
    if str(ds.get("Manufacturer", "")) == "pneumoscan":
        return "a pneumoscan result (e.g. a Grad-CAM overlay), not a radiograph"
    if sop_class == SECONDARY_CAPTURE and modality not in CHEST_MODALITIES:
        return f"Secondary Capture with modality {modality or '(none)'}: only CR or DX captures are read"
    if modality and modality not in CHEST_MODALITIES:
        return f"modality {modality} is not a chest radiograph (CR or DX)"
    part = _text(ds, "BodyPartExamined")
    if part not in _CHEST_PARTS:
        return f"body part {part} is not the chest"
    view = _text(ds, "ViewPosition")
    if view not in _FRONTAL_VIEWS:
        return f"view position {view} is not frontal (PA or AP)"
    return None


class Scorer:
    """Scores DICOM files with one Predictor; built once per node or poller.

    Args:
        predictor: a loaded :class:`~pneumoscan.inference.predictor.Predictor`.
        heatmap: also make Grad-CAM overlays (needs the PyTorch backend).
    """

    def __init__(self, predictor: Any, heatmap: bool = False) -> None:
        from pneumoscan.errors import ConfigError

        if heatmap and getattr(predictor, "model", None) is None:
            raise ConfigError("--heatmap needs the PyTorch backend (Grad-CAM uses gradients); drop --backend onnx")
        self.predictor = predictor
        self.heatmap = heatmap

    @property
    def model(self) -> str:
        return str(self.predictor.info.name)

    @property
    def version(self) -> str:
        return str(self.predictor.info.version)

    def outcome(self, uid: str, status: str, reason: str | None, pred: Any = None) -> Outcome:
        info = self.predictor.info
        ok = status == "ok" and pred is not None
        return Outcome(
            sop_instance_uid=uid, status=status,
            probability=float(pred.probability) if ok and pred.probability is not None else None,
            label=str(pred.label) if ok and pred.label is not None else None,
            threshold=float(getattr(pred, "threshold", info.threshold)),
            population=str(getattr(pred, "population", None) or "default"),
            threshold_rule=str(info.threshold_rule), reason=reason, model=self.model, version=self.version)

    def score(self, items: Sequence[tuple[str, Path | bytes, Any]]) -> list[Outcome]:
        """Score ``(sop_instance_uid, file or bytes, header)`` triples in one batch; ``header`` None: unreadable.

        Returns one Outcome per item, in order; never raises for a bad instance.
        """
        outcomes: dict[int, Outcome] = {}
        todo: list[tuple[int, str, Path | bytes]] = []
        for i, (uid, path, ds) in enumerate(items):
            problem = scope_problem(ds) if ds is not None else None
            if problem:
                outcomes[i] = self.outcome(uid, "out_of_scope", problem)
            else:
                todo.append((i, uid, path))
        if todo:
            preds = self.predictor.predict_sources([p for _, _, p in todo], names=[u for _, u, _ in todo],
                                                   batch_size=max(1, len(todo)))
            for (i, uid, _), pred in zip(todo, preds, strict=True):
                outcomes[i] = self._from_prediction(uid, pred)
        return [outcomes[i] for i in range(len(items))]

    def _from_prediction(self, uid: str, pred: Any) -> Outcome:
        if pred.error:
            return self.outcome(uid, "error", str(pred.error))
        status = str(getattr(pred, "status", "ok") or "ok")
        if status not in STATUSES:
            status = "error"
        reason = getattr(pred, "reason", None)
        return self.outcome(uid, status, None if reason is None else str(reason), pred)

    def overlay(self, path: Path | bytes, uid: str, max_side: int = 1024) -> np.ndarray:
        """The Grad-CAM overlay of an instance as an RGB uint8 array at (at most) ``max_side`` pixels.

        Raises:
            ImageReadError: the pixels cannot be read.
        """
        from PIL import Image

        from pneumoscan.data.io import read_image
        from pneumoscan.explain.gradcam import explain_prepared, overlay_png

        grey = read_image(path, name=uid)
        heat = explain_prepared(self.predictor, self.predictor.prepare(grey))
        h, w = grey.shape
        scale = min(1.0, max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = np.asarray(Image.fromarray(np.rint(grey * 255).astype(np.uint8)).resize(size, Image.BILINEAR))
        heat_img = Image.fromarray(heat.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
        png = overlay_png(image, np.clip(np.asarray(heat_img), 0.0, 1.0))
        import io

        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
