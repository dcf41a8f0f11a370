"""The competence gate: is this image something the model can speak about, before its probability is believed?

A classifier answers every input with a number, a photo of a cat included. The gate refuses, with a reason, images
that are not frontal chest radiographs or lie outside the distribution the model was trained and validated on, in two
stages that both run on every prediction (both backends; numpy only, so the ONNX deployment needs no PyTorch):

1. **Image checks** (model-independent, microseconds): a near-constant image (blank, black, white, uniform grey), a
   colour image with real chroma (radiographs are grey; a grey JPEG saved as RGB has none), and pixel noise (a
   radiograph is smooth at the model's input size: the mean absolute Laplacian relative to the image's contrast is
   several times larger for noise). Limits are fitted on the training images when the gate is fitted (see
   :func:`fit_gate`) and fall back to :data:`DEFAULT_IMAGE_LIMITS` for checkpoints without a gate.
2. **Layout check** (needs a fitted gate): is this an upright, positive, whole frontal chest radiograph? A
   multinomial logistic regression on a 16×16 thumbnail of the image (z-scored per image), fitted on the training
   X-rays against the same X-rays inverted, rotated by ±90°, turned upside down and cropped, and against synthetic
   smooth textures; the score is 1 - P(upright frontal), its threshold the 0.995 quantile of the validation X-rays'
   scores. Why not leave this to the features: the pooled penultimate features of the shipped model hardly change when
   an X-ray is inverted or rotated (ROC-AUC about 0.5 against validation X-rays for the Mahalanobis distance, measured
   with ``pneumoscan calibrate --features-out``), because global pooling discards where things are.
3. **Distribution check** (needs a fitted gate): the Mahalanobis distance of the model's penultimate features (global
   average pooled, what the classifier head sees) from the training images, in the principal subspace that holds
   most of their variance, with a Ledoit-Wolf shrinkage covariance (Lee et al. 2018; on chest X-rays: FRODO, Wollek
   et al. 2022), plus the distance outside that subspace (reconstruction residual), each standardised on the
   training images; the score is the larger of the two. The threshold is a quantile of the scores of the validation
   chest X-rays (default 0.99: about 1% of in-distribution images refused), never of test images.
4. **Lung hook** (optional): when a lung-field model is available, the caller may pass the fraction of the image
   covered by lungs; below :data:`MIN_LUNG_FRACTION` the image is refused ("no lung fields found").

The fitted parameters are a plain dict of lists and floats (:meth:`CompetenceGate.to_dict`), stored under ``gate`` in
the checkpoint (``torch.load(weights_only=True)`` reads it) and as JSON in the ONNX metadata.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.errors import CheckpointError

logger = logging.getLogger(__name__)

GATE_FORMAT = 1
#: Image-check limits used when a model has no fitted gate (on the 0-255 scale of the prepared uint8 image).
DEFAULT_IMAGE_LIMITS: dict[str, float] = {"min_std": 8.0, "max_chroma": 12.0, "max_roughness": 1.0}
#: Below this share of lung pixels (from a lung-field model) an image is refused.
MIN_LUNG_FRACTION = 0.05
#: Quantile of validation scores used as the distribution threshold.
DEFAULT_QUANTILE = 0.99
#: Quantile of validation scores used as the layout threshold.
LAYOUT_QUANTILE = 0.995
#: Side of the thumbnail the layout check reads.
LAYOUT_SIZE = 16
#: Classes of the layout check; the first is the only one in scope.
LAYOUT_CLASSES = ("frontal", "inverted", "rotated_90", "rotated_270", "upside_down", "cropped", "other")

STATUS_OK = "ok"
STATUS_OUT_OF_SCOPE = "out_of_scope"
STATUS_ERROR = "error"


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one image.

    Attributes:
        in_scope: False when the image should not be given a label.
        reason: why not, in words (None when in scope).
        scores: the measured values and the limits they were compared with (JSON-friendly floats; None = not
            measured).
    """

    in_scope: bool
    reason: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"in_scope": self.in_scope, "reason": self.reason, **self.scores}


# -- image statistics --------------------------------------------------------------------------------------------------
def image_statistics(prepared: np.ndarray) -> dict[str, float]:
    """Cheap statistics of one prepared uint8 (S, S) image.

    ``std`` is the grey-level standard deviation; ``roughness`` is the mean absolute 4-neighbour Laplacian divided by
    ``std`` (scale-free: about 0.05-0.3 for radiographs at 192-224 px, above 2 for pixel noise).
    """
    x = np.asarray(prepared, dtype=np.float32)
    std = float(x.std())
    lap = np.abs(4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:])
    roughness = float(lap.mean() / max(std, 1e-3))
    return {"std": std, "roughness": roughness}


def colourfulness(source: str | Path | bytes) -> float | None:
    """Mean chroma (max - min of R, G, B, on 0-255) of an image file, or None when it is not a colour file.

    Grey files, DICOM and anything Pillow cannot open give None (the image reader reports real problems). JPEGs are
    decoded at reduced size (``draft``), so this costs far less than the full decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        fp: Any = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError:
        return None
    try:
        with fp, Image.open(fp) as im:
            if im.mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                return None
            if im.format == "JPEG":
                im.draft("RGB", (256, 256))
            im = im.convert("RGB")
            im.thumbnail((256, 256))
            rgb = np.asarray(im, dtype=np.int16)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())


def layout_vector(prepared: np.ndarray, size: int = LAYOUT_SIZE) -> np.ndarray:
    """The layout check's input: a ``size``×``size`` area-averaged thumbnail, z-scored per image, flattened."""
    from PIL import Image

    thumb = Image.fromarray(np.asarray(prepared, dtype=np.float32), mode="F").resize((size, size),
                                                                                     Image.Resampling.BOX)
    v = np.asarray(thumb, dtype=np.float64).reshape(-1)
    return (v - v.mean()) / max(float(v.std()), 1.0)


def _layout_probabilities(params: Mapping[str, Any], vectors: np.ndarray) -> np.ndarray:
    x = (vectors - np.asarray(params["mean"])) / np.asarray(params["scale"])
    logits = x @ np.asarray(params["coef"]).T + np.asarray(params["intercept"])
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


# -- the gate ----------------------------------------------------------------------------------------------------------
class CompetenceGate:
    """Decides, per image, whether the model's answer may be given as a label.

    Args:
        params: a fitted gate (:func:`fit_gate`, or ``checkpoint["gate"]``); None gives the image checks only, with
            :data:`DEFAULT_IMAGE_LIMITS`.

    Raises:
        CheckpointError: malformed parameters.
    """

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = dict(params or {})
        self.limits = {**DEFAULT_IMAGE_LIMITS, **{k: float(v) for k, v in
                                                   (self.params.get("image_limits") or {}).items()}}
        self.fitted = "feature_mean" in self.params
        self.layout: dict[str, Any] | None = self.params.get("layout")
        if not self.fitted:
            return
        try:
            if int(self.params.get("format", 1)) > GATE_FORMAT:
                raise CheckpointError(f"gate format {self.params['format']} is newer than this pneumoscan reads")
            self.mean = np.asarray(self.params["feature_mean"], dtype=np.float64)
            self.components = np.asarray(self.params["components"], dtype=np.float64)
            self.precision = np.asarray(self.params["precision"], dtype=np.float64)
            self.centre = np.asarray(self.params["subspace_mean"], dtype=np.float64)
            self.scale = {k: (float(v[0]), float(v[1])) for k, v in self.params["standardise"].items()}
            self.threshold = float(self.params["threshold"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"malformed competence gate parameters ({err})") from err
        k, d = self.components.shape
        if self.mean.shape != (d,) or self.precision.shape != (k, k) or self.centre.shape != (k,):
            raise CheckpointError(f"malformed competence gate parameters (shapes {self.mean.shape}, "
                                  f"{self.components.shape}, {self.precision.shape})")

    @property
    def feature_dim(self) -> int | None:
        """Length of the feature vector the distribution check expects (None when not fitted)."""
        return int(self.mean.shape[0]) if self.fitted else None

    def to_dict(self) -> dict[str, Any]:
        """The parameters, plain lists and floats (what :func:`fit_gate` returned)."""
        return dict(self.params)

    def describe(self) -> dict[str, Any]:
        """A short description for ``GET /v1/model`` and the model card (no arrays)."""
        out: dict[str, Any] = {"image_limits": dict(self.limits), "distribution_check": self.fitted,
                               "min_lung_fraction": MIN_LUNG_FRACTION}
        if self.fitted:
            out.update({k: self.params.get(k) for k in ("threshold", "threshold_rule", "method", "n_components",
                                                        "fitted_on", "validation") if k in self.params})
        out["layout_check"] = bool(self.layout)
        if self.layout:
            out["layout_threshold"] = self.layout.get("threshold")
            out["layout_threshold_rule"] = self.layout.get("threshold_rule")
        return out

    # -- scores ----------------------------------------------------------------------------------------------------
    def distances(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Standardised Mahalanobis (in the subspace) and residual distances, and their maximum ``score``."""
        if not self.fitted:
            raise CheckpointError("this gate has no fitted distribution check")
        f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        if f.shape[1] != self.mean.shape[0]:
            raise CheckpointError(f"gate expects {self.mean.shape[0]} features, the model gives {f.shape[1]}")
        centred = f - self.mean
        z = centred @ self.components.T
        dz = z - self.centre
        maha = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", dz, self.precision, dz), 0.0))
        resid = np.linalg.norm(centred - z @ self.components, axis=1)
        out = {"mahalanobis": maha, "residual": resid}
        std = {k: (v - self.scale[k][0]) / self.scale[k][1] for k, v in out.items()}
        out["score"] = np.maximum(std["mahalanobis"], std["residual"])
        return out

    def assess(self, prepared: np.ndarray, features: np.ndarray | None = None, *,
               chroma: Sequence[float | None] | None = None,
               lung_fractions: Sequence[float | None] | None = None) -> list[GateDecision]:
        """The verdict for each image of a batch.

        Args:
            prepared: uint8 (N, S, S) model inputs.
            features: (N, D) penultimate features from the same forward pass, or None (then the distribution check
                is skipped and ``distribution`` says so).
            chroma: per image, :func:`colourfulness` of the file (None: grey or unknown).
            lung_fractions: per image, share of lung pixels from a lung-field model (None: no lung model).
        """
        n = len(prepared)
        dist = self.distances(features) if self.fitted and features is not None else None
        layout = self.layout_scores(prepared) if self.layout else None
        out = []
        for i in range(n):
            stats = image_statistics(prepared[i])
            c = None if chroma is None else chroma[i]
            lung = None if lung_fractions is None else lung_fractions[i]
            scores: dict[str, Any] = {"std": round(stats["std"], 3), "roughness": round(stats["roughness"], 4),
                                      "chroma": None if c is None else round(float(c), 3),
                                      "lung_fraction": None if lung is None else round(float(lung), 4)}
            if layout is not None:
                scores.update({"layout_score": round(float(layout[0][i]), 4), "layout_class": layout[1][i],
                               "layout_threshold": round(float(self.layout["threshold"]), 4)})  # type: ignore[index]
            if dist is not None:
                scores.update({"distribution_score": round(float(dist["score"][i]), 4),
                               "distribution_threshold": round(self.threshold, 4)})
            else:
                scores["distribution_score"] = None
            reason = self._reason(stats, c, lung, None if dist is None else float(dist["score"][i]),
                                  None if layout is None else (float(layout[0][i]), layout[1][i]))
            out.append(GateDecision(reason is None, reason, scores))
        return out

    def layout_scores(self, prepared: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per image: 1 - P(upright frontal chest X-ray) from the layout check, and the most likely layout class."""
        if not self.layout:
            raise CheckpointError("this gate has no fitted layout check")
        vectors = np.stack([layout_vector(im, int(self.layout["size"])) for im in prepared])
        probs = _layout_probabilities(self.layout, vectors)
        classes = list(self.layout["classes"])
        return 1.0 - probs[:, 0], [classes[int(j)] for j in probs.argmax(axis=1)]

    def _reason(self, stats: dict[str, float], chroma: float | None, lung: float | None,
                score: float | None, layout: tuple[float, str] | None = None) -> str | None:
        lim = self.limits
        if stats["std"] < lim["min_std"]:
            return (f"blank or near-uniform image (grey-level spread {stats['std']:.1f} < {lim['min_std']:.1f}): "
                    "not a radiograph")
        if chroma is not None and chroma > lim["max_chroma"]:
            return f"colour image (mean chroma {chroma:.0f} > {lim['max_chroma']:.0f}): radiographs are grey"
        if stats["roughness"] > lim["max_roughness"]:
            return (f"looks like noise, not a radiograph (roughness {stats['roughness']:.2f} > "
                    f"{lim['max_roughness']:.2f})")
        if lung is not None and lung < MIN_LUNG_FRACTION:
            return f"no lung fields found (lung area {lung:.1%} of the image): not a frontal chest radiograph"
        if layout is not None and self.layout and layout[0] > float(self.layout["threshold"]):
            looks = {"inverted": "an inverted (negative) X-ray", "rotated_90": "a rotated image",
                     "rotated_270": "a rotated image", "upside_down": "an upside-down image",
                     "cropped": "a cropped part of an image", "other": "not a chest X-ray",
                     "frontal": "unusual"}.get(layout[1], layout[1])
            return (f"does not look like an upright frontal chest X-ray (layout score {layout[0]:.2f} > "
                    f"{float(self.layout['threshold']):.2f}; most like {looks})")
        if score is not None and score > self.threshold:
            return (f"outside the images this model was trained on (distribution score {score:.2f} > "
                    f"{self.threshold:.2f}): not a frontal chest X-ray like its training images, or an unusual one "
                    "(inverted, rotated, cropped, another body part or modality)")
        return None


def gate_from_checkpoint(state: Mapping[str, Any]) -> CompetenceGate:
    """The gate stored in a checkpoint dict (image checks only when it has none)."""
    return CompetenceGate(state.get("gate"))


# -- fitting -----------------------------------------------------------------------------------------------------------
def fit_gate(train_features: np.ndarray, val_features: np.ndarray, *, train_prepared: np.ndarray | None = None,
             val_prepared: np.ndarray | None = None, n_components: int = 64, quantile: float = DEFAULT_QUANTILE,
             max_train: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Fit the distribution check on training features and fix its threshold on validation features.

    Args:
        train_features: (N, D) penultimate features of training images.
        val_features: (M, D) features of validation images (same model, same preprocessing); only used for the
            threshold, the ``quantile`` of their scores.
        train_prepared: uint8 (N, S, S) training images, to fit the image-check limits (else the defaults) and,
            with ``val_prepared``, the layout check.
        val_prepared: uint8 (M, S, S) validation images, for the layout check's threshold.
        n_components: dimension of the principal subspace (capped by the data).
        quantile: share of validation chest X-rays to accept (0.99: about 1% refused).
        max_train: subsample the training features to at most this many (memory/time on big sets).
        seed: for that subsample.

    Returns:
        The gate parameters (plain lists and floats), for ``checkpoint["gate"]``.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(train_features, dtype=np.float64)
    if max_train and len(x) > max_train:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_train, replace=False))]
    if len(x) < 10 or len(val_features) < 3:
        raise ValueError(f"too few images to fit a gate ({len(x)} train, {len(val_features)} val; at least 10 and 3)")
    if len(val_features) < 100:
        logger.warning("only %d validation images: the gate's threshold (a %.3g quantile of their scores) is rough",
                       len(val_features), quantile)
    if not 0.5 < quantile < 1:
        raise ValueError(f"quantile must be between 0.5 and 1, got {quantile}")
    mean = x.mean(axis=0)
    centred = x - mean
    k = int(max(2, min(n_components, len(x) // 5, x.shape[1])))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:k]
    z = centred @ components.T
    lw = LedoitWolf().fit(z)
    params: dict[str, Any] = {
        "format": GATE_FORMAT,
        "method": ("max of standardised Mahalanobis distance (Ledoit-Wolf covariance, top principal components of "
                   "the training features) and of the residual outside them"),
        "features": "penultimate features (global average pooled, classifier input)",
        "feature_mean": mean.tolist(), "components": components.tolist(),
        "subspace_mean": lw.location_.tolist(), "precision": lw.precision_.tolist(),
        "n_components": k, "standardise": {},
    }
    gate = CompetenceGate({**params, "standardise": {"mahalanobis": [0.0, 1.0], "residual": [0.0, 1.0]},
                           "threshold": 0.0})
    raw = gate.distances(x)
    params["standardise"] = {key: [float(np.median(raw[key])), float(max(_iqr(raw[key]), 1e-9))]
                             for key in ("mahalanobis", "residual")}
    gate = CompetenceGate({**params, "threshold": 0.0})
    val_scores = gate.distances(val_features)["score"]
    params["threshold"] = float(np.quantile(val_scores, quantile))
    params["threshold_rule"] = (f"{quantile:.3g} quantile of the validation chest X-ray scores "
                                f"({len(val_features)} images)")
    params["fitted_on"] = {"train_images": int(len(x)), "val_images": int(len(val_features))}
    if train_prepared is not None and len(train_prepared):
        stats = [image_statistics(im) for im in train_prepared]
        std = np.array([s["std"] for s in stats])
        rough = np.array([s["roughness"] for s in stats])
        # Generous margins around the training range: these checks are for what is plainly not a radiograph.
        params["image_limits"] = {"min_std": float(min(DEFAULT_IMAGE_LIMITS["min_std"], 0.5 * np.quantile(std, 0.001))),
                                  "max_chroma": DEFAULT_IMAGE_LIMITS["max_chroma"],
                                  "max_roughness": float(max(DEFAULT_IMAGE_LIMITS["max_roughness"],
                                                             3.0 * np.quantile(rough, 0.999)))}
        if val_prepared is not None and len(val_prepared):
            params["layout"] = fit_layout(train_prepared, val_prepared, seed=seed)
    return params


def fit_layout(train_prepared: np.ndarray, val_prepared: np.ndarray, *, seed: int = 0,
               quantile: float = LAYOUT_QUANTILE) -> dict[str, Any]:
    """Fit the layout check (see the module docstring) on training images; threshold on validation images.

    Returns plain lists and floats: ``size``, ``classes``, ``mean``, ``scale``, ``coef``, ``intercept``,
    ``threshold``, ``threshold_rule``, ``n_train``.
    """
    from sklearn.linear_model import LogisticRegression

    from pneumoscan.data.preprocess import prepare
    from pneumoscan.inference.gate_probes import transform_xray

    rng = np.random.default_rng(seed)
    size = int(train_prepared.shape[-1])
    vectors, labels = [], []
    for image in train_prepared:
        vectors.append(layout_vector(image))
        labels.append(0)
        grey = image.astype(np.float32) / 255.0
        for k, kind in enumerate(LAYOUT_CLASSES[1:-1], start=1):
            vectors.append(layout_vector(prepare(transform_xray(grey, kind, rng), size)))
            labels.append(k)
        vectors.append(_smooth_texture(rng))
        labels.append(len(LAYOUT_CLASSES) - 1)
    x = np.stack(vectors)
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    model = LogisticRegression(C=0.1, max_iter=300).fit((x - mean) / scale, np.array(labels))
    params: dict[str, Any] = {"size": LAYOUT_SIZE, "classes": list(LAYOUT_CLASSES), "mean": mean.tolist(),
                              "scale": scale.tolist(), "coef": model.coef_.tolist(),
                              "intercept": model.intercept_.tolist(), "n_train": int(len(train_prepared))}
    val_vectors = np.stack([layout_vector(im) for im in val_prepared])
    val_scores = 1.0 - _layout_probabilities(params, val_vectors)[:, 0]
    params["threshold"] = float(np.quantile(val_scores, quantile))
    params["threshold_rule"] = (f"{quantile:.3g} quantile of the validation chest X-ray scores "
                                f"({len(val_prepared)} images)")
    return params


def _smooth_texture(rng: np.random.Generator) -> np.ndarray:
    """A random smooth grey texture (noise at a random coarse scale, upsampled), as a layout vector."""
    from PIL import Image

    k = int(rng.choice([2, 3, 4, 6, 8, 16]))
    coarse = Image.fromarray(rng.normal(size=(k, k)).astype(np.float32), mode="F")
    fine = np.asarray(coarse.resize((LAYOUT_SIZE, LAYOUT_SIZE), Image.Resampling.BILINEAR), dtype=np.float64)
    v = fine.reshape(-1)
    return (v - v.mean()) / max(float(v.std()), 1e-6)


def _iqr(v: np.ndarray) -> float:
    q1, q3 = np.quantile(v, [0.25, 0.75])
    return float(q3 - q1)
