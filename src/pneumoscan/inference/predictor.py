"""The :class:`Predictor`: one object that turns images into calibrated pneumonia probabilities and labels.

It is built from a checkpoint (PyTorch backend) or an exported ONNX model (ONNX Runtime backend, no PyTorch needed)
and reads everything it needs — architecture, preprocessing, temperature, threshold, class names — from that file,
never from the caller. ``predict`` (CLI), ``evaluate`` and ``serve`` all go through it, so the same image gives the
same number everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pneumoscan.data.io import read_image
from pneumoscan.data.preprocess import PreprocessConfig, prepare, to_float
from pneumoscan.errors import CheckpointError, ConfigError, ImageReadError
from pneumoscan.inference.model_info import ModelInfo

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
BACKEND_CHOICES = ("auto", *BACKENDS)


@dataclass(frozen=True)
class Prediction:
    """The answer for one image.

    Attributes:
        path: the file (or upload name).
        probability: calibrated P(pneumonia); None only when the image could not be read. For an ``out_of_scope``
            image it is still given, for information, but it is **not** a finding: the label is None.
        label: class name at ``threshold``; None on error and when out of scope.
        threshold: the threshold applied (that of ``population``).
        model: architecture name.
        version: model version.
        error: why the file could not be used (``status == "error"``).
        status: ``"ok"``, ``"out_of_scope"`` (the competence gate refused the image: see ``reason``) or ``"error"``.
        reason: why out of scope, or the error text.
        population: the population whose threshold was applied.
        gate: the gate's scores (see :meth:`pneumoscan.inference.gate.GateDecision.to_dict`); None on error.
    """

    path: str
    probability: float | None
    label: str | None
    threshold: float
    model: str
    version: str
    error: str | None = None
    status: str = "ok"
    reason: str | None = None
    population: str = ""
    gate: dict[str, Any] | None = None
    lungs: dict[str, Any] | None = None  # lung crop report (models trained with --lung-crop): found, box, fallback

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(Protocol):
    """Runs the network: float32 (N, 1, S, S) normalised images → (N,) logits (and, for the gate, features)."""

    def logits(self, inputs: np.ndarray) -> np.ndarray: ...

    def logits_and_features(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


def features_and_logits(model: Any, x: Any) -> tuple[Any, Any]:
    """One forward pass split at the classifier: (pooled penultimate features (N, D), logits (N, C)).

    timm models: ``forward_head(forward_features(x), pre_logits=True)`` then the classifier, the same operations as
    ``model(x)`` in eval mode; pneumoscan's ``cnn``: its pooling, then its classifier.
    """
    if hasattr(model, "forward_head"):
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        return feats, model.get_classifier()(feats)
    feats = model.pool(model.forward_features(x)).flatten(1)
    return feats, model.classifier(feats)


class TorchBackend:
    """PyTorch backend running ``model`` under the autocast ``precision`` names (see :func:`inference_precision`)."""

    def __init__(self, model: Any, device: str = "auto", precision: str = "auto") -> None:
        import torch

        from pneumoscan.models.hardware import resolve_hardware

        self.hw = resolve_hardware(device, precision)
        self.model = model.to(self.hw.device).eval()
        if self.hw.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._torch = torch

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        from pneumoscan.models.precision import autocast

        torch = self._torch
        with torch.inference_mode(), autocast(self.hw):
            x = torch.from_numpy(inputs).to(self.hw.device)
            if self.hw.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x).float().reshape(-1).cpu().numpy()

    def logits_and_features(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        from pneumoscan.models.precision import autocast

        torch = self._torch
        with torch.inference_mode(), autocast(self.hw):
            x = torch.from_numpy(inputs).to(self.hw.device)
            if self.hw.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            feats, logits = features_and_logits(self.model, x)
            return logits.float().reshape(-1).cpu().numpy(), feats.float().reshape(len(inputs), -1).cpu().numpy()


class Predictor:
    """Calibrated probabilities, labels and competence-gate verdicts for images, from one model loaded once.

    Use :meth:`from_checkpoint`, :meth:`from_onnx`, :meth:`load` or :meth:`default`.

    Attributes:
        population: the population whose threshold labels are given at (default: the model's default population;
            change it with :meth:`select_population`).
        gate: the :class:`~pneumoscan.inference.gate.CompetenceGate` (image checks only when the model has no
            fitted gate).
        lung_fraction: optional hook, ``uint8 (S, S) prepared image -> share of lung pixels`` (None: no lung
            model); when set, the gate refuses images with no lung fields.
    """

    def __init__(self, backend: Backend, info: ModelInfo, model: Any = None, *, population: str | None = None) -> None:
        from pneumoscan.inference.gate import CompetenceGate

        self.backend = backend
        self.info = info
        self.model = model  # the torch module (for Grad-CAM), None for ONNX
        self.gate = CompetenceGate(info.gate)
        self.lung_fraction: Callable[[np.ndarray], float | None] | None = None
        self._lungs: Any = None  # the lung segmenter of a lung-crop model, loaded on first use
        self.population = info.default_population
        self.select_population(population)

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto", precision: str = "auto",
                        population: str | None = None) -> Predictor:
        from pneumoscan.models.checkpoint import build_model_from_checkpoint, file_digest, load_checkpoint

        state = load_checkpoint(path)
        model = build_model_from_checkpoint(state)
        info = info_from_checkpoint(state, version=f"{state['model']['name']}-{file_digest(path)}")
        return cls(TorchBackend(model, device, inference_precision(state, device, precision)), info, model,
                   population=population)

    @classmethod
    def from_onnx(cls, path: str | Path, *, population: str | None = None) -> Predictor:
        from pneumoscan.inference.onnx_backend import OnnxBackend

        backend = OnnxBackend(path)
        return cls(backend, backend.info, population=population)

    @classmethod
    def load(cls, path: str | Path | None = None, *, backend: str = "auto", device: str = "auto",
             precision: str = "auto", population: str | None = None) -> Predictor:
        """Load ``path`` (a ``.pt`` checkpoint or ``.onnx`` model) or the shipped model when ``path`` is None.

        ``backend="auto"`` picks with :func:`resolve_backend` (no heatmaps wanted); ``population`` selects the
        operating point (see :meth:`select_population`).
        """
        if backend not in BACKEND_CHOICES:
            raise ConfigError(f"unknown backend '{backend}'; choose from {', '.join(BACKEND_CHOICES)}")
        backend = resolve_backend(backend, path, precision=precision)
        if path is None:
            return cls.default(backend=backend, device=device, precision=precision, population=population)
        path = Path(path)
        if backend == "onnx" or path.suffix == ".onnx":
            if path.suffix != ".onnx":
                raise ConfigError(f"{path}: --backend onnx needs an .onnx file (pneumoscan export makes one)")
            return cls.from_onnx(path, population=population)
        return cls.from_checkpoint(path, device=device, precision=precision, population=population)

    @classmethod
    def default(cls, *, backend: str = "auto", device: str = "auto", precision: str = "auto",
                population: str | None = None) -> Predictor:
        """The model shipped inside the package (see MODEL_CARD.md)."""
        from pneumoscan.weights import shipped_model_path

        backend = resolve_backend(backend, None, precision=precision)

        path = shipped_model_path(backend)
        if backend == "onnx":
            return cls.from_onnx(path, population=population)
        return cls.from_checkpoint(path, device=device, precision=precision, population=population)

    # -- operating point ---------------------------------------------------------------------------------------
    def select_population(self, name: str | None) -> None:
        """Give labels at population ``name``'s threshold (None: the model's default population).

        Raises:
            ConfigError: unknown population, or one without a threshold of its own.
        """
        from pneumoscan.inference.populations import resolve

        name = name or self.info.default_population
        resolve(self.info.populations, name)
        self.population = name

    def threshold_for(self, population: str | None = None) -> float:
        """Threshold of ``population`` (None: the selected one)."""
        from pneumoscan.inference.populations import resolve

        return resolve(self.info.populations, population or self.population)

    @property
    def threshold(self) -> float:
        """The threshold labels are given at (the selected population's)."""
        return self.threshold_for(None)

    # -- prediction -------------------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Grey [0, 1] image → uint8 S×S, exactly as in training (lung crop, resize, intensity standardisation)."""
        return self.prepare_with_lungs(image)[0]

    def prepare_with_lungs(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """:meth:`prepare` plus the image's :class:`~pneumoscan.data.lungs.LungGeometry` (None without lung crop)."""
        cfg = self.info.preprocess
        if not cfg.lung_crop:
            return prepare(image, cfg), None
        from pneumoscan.data.lungs import prepare_cropped

        geometry = self.lung_segmenter().geometry(image)
        return prepare_cropped(image, cfg, geometry), geometry

    def lung_segmenter(self) -> Any:
        """The lung model this predictor crops with (the one its checkpoint names; ONNX Runtime for ONNX models)."""
        if self._lungs is None:
            from pneumoscan.inference.lungs import load_lung_segmenter

            self._lungs = load_lung_segmenter(self.info.preprocess.lung_model,
                                              backend="auto" if self.model is not None else "onnx")
        return self._lungs

    def _inputs(self, batch: np.ndarray) -> np.ndarray:
        inputs = to_float(batch, self.info.preprocess)[:, None, :, :]
        return np.ascontiguousarray(inputs, dtype=np.float32)

    def _calibrate(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64) / self.info.temperature))

    def probabilities_from_prepared(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S) → calibrated probabilities (N,)."""
        return self._calibrate(self.backend.logits(self._inputs(batch)))

    def scores_from_prepared(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (N, S, S) → (calibrated probabilities (N,), penultimate features (N, D) or None).

        Features come from the same forward pass (the probabilities are those of :meth:`probabilities_from_prepared`);
        they are None for an ONNX export made before the gate existed (no ``features`` output).
        """
        logits, feats = self.backend.logits_and_features(self._inputs(batch))
        return self._calibrate(logits), feats

    def predict_arrays(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Probabilities for decoded grey images in [0, 1]."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = np.stack([self.prepare(im) for im in images[start:start + batch_size]])
            out.append(self.probabilities_from_prepared(batch))
        return np.concatenate(out) if out else np.zeros(0)

    def label_for(self, probability: float, population: str | None = None) -> str:
        """Class name at the threshold of ``population`` (None: the selected one)."""
        threshold = self.threshold_for(population)
        return self.info.class_names[1] if probability >= threshold else self.info.class_names[0]

    def predict_prepared(self, batch: np.ndarray, names: Sequence[str], *,
                         chroma: Sequence[float | None] | None = None,
                         lung_fractions: Sequence[float | None] | None = None,
                         population: str | None = None,
                         lungs: Sequence[dict[str, Any] | None] | None = None) -> list[Prediction]:
        """Score and gate uint8 (N, S, S) prepared images: one :class:`Prediction` each, in order.

        Args:
            batch: prepared images.
            names: what each result's ``path`` says.
            chroma: per image, the file's colourfulness (:func:`pneumoscan.inference.gate.colourfulness`).
            lung_fractions: per image, the share of lung pixels when a lung model already measured it (e.g. the
                lung-crop geometry); default: the :attr:`lung_fraction` hook, if set.
            population: operating point for these images (None: the selected one).
            lungs: per image, the lung-crop report of a lung-crop model (:meth:`prepare_with_lungs`).
        """
        probs, feats = self.scores_from_prepared(batch)
        fractions = lung_fractions
        if fractions is None and self.lung_fraction is not None:
            fractions = [self.lung_fraction(im) for im in batch]
        decisions = self.gate.assess(batch, feats, chroma=chroma, lung_fractions=fractions)
        reports = list(lungs) if lungs is not None else [None] * len(names)
        return [self.result(name, float(p), d, population=population, lungs=report)
                for name, p, d, report in zip(names, probs, decisions, reports, strict=True)]

    def result(self, name: str, probability: float, decision: Any, *, population: str | None = None,
               lungs: dict[str, Any] | None = None) -> Prediction:
        """The :class:`Prediction` for one scored image and its :class:`~pneumoscan.inference.gate.GateDecision`."""
        population = population or self.population
        threshold = self.threshold_for(population)
        return Prediction(path=name, probability=float(probability),
                          label=self.label_for(probability, population) if decision.in_scope else None,
                          threshold=threshold, model=self.info.name, version=self.info.version,
                          status="ok" if decision.in_scope else "out_of_scope", reason=decision.reason,
                          population=population, gate=decision.to_dict(), lungs=lungs)

    def error_result(self, name: str, error: str, *, population: str | None = None) -> Prediction:
        """The :class:`Prediction` for a file that could not be used."""
        population = population or self.population
        return Prediction(path=name, probability=None, label=None, threshold=self.threshold_for(population),
                          model=self.info.name, version=self.info.version, error=error, status="error",
                          reason=error, population=population)

    def predict_sources(self, sources: Iterable[str | Path | bytes], *, names: Sequence[str] | None = None,
                        batch_size: int = 32, progress: Callable[[int], None] | None = None,
                        max_pixels: int | None = None) -> list[Prediction]:
        """Read, preprocess, score and gate files or byte strings in batches.

        A file that cannot be read yields a :class:`Prediction` with ``error`` set (``status == "error"``); the
        others are unaffected. ``progress`` is called with the number of images done after each batch;
        ``max_pixels`` overrides the decompression-bomb limit of :func:`pneumoscan.data.io.read_image`.
        """
        from pneumoscan.inference.gate import colourfulness

        limit = {} if max_pixels is None else {"max_pixels": max_pixels}
        results: list[Prediction | None] = []
        pending: list[tuple[int, str, np.ndarray, float | None, dict[str, Any] | None]] = []
        items = list(sources)
        for i, src in enumerate(items):
            name = names[i] if names is not None else (str(src) if not isinstance(src, bytes) else f"<upload {i}>")
            try:
                prepared, geometry = self.prepare_with_lungs(read_image(src, name=name, **limit))
                pending.append((i, name, prepared, colourfulness(src), None if geometry is None else geometry.report()))
                results.append(None)
            except ImageReadError as err:
                results.append(self.error_result(name, str(err)))
            if len(pending) == batch_size or (i == len(items) - 1 and pending):
                scored = self.predict_prepared(np.stack([p[2] for p in pending]), [p[1] for p in pending],
                                               chroma=[p[3] for p in pending], lungs=[p[4] for p in pending])
                for (j, *_), pred in zip(pending, scored, strict=True):
                    results[j] = pred
                if progress:
                    progress(len(pending))
                pending = []
        return [r for r in results if r is not None]


def resolve_backend(backend: str, path: str | Path | None = None, *, heatmaps: bool = False,
                    precision: str = "auto") -> str:
    """The concrete backend for ``backend`` (``torch``, ``onnx`` or ``auto``) and model ``path`` (None: shipped).

    ``auto`` is the fastest backend that gives the same answers: ONNX Runtime for an ``.onnx`` file, and for the
    shipped model when its export and onnxruntime are both there (it computes the fp32 probabilities: on all 5,856
    kermany224 images the same labels as PyTorch, largest probability difference 1.7e-5, about 3x faster end to end;
    BENCHMARKS.md section 7). PyTorch when Grad-CAM heatmaps are wanted (they need gradients through the torch
    model), when a ``precision`` other than fp32 is asked (an autocast setting only torch has), for a ``.pt``
    checkpoint (its export, if any, is a separate file the user names), or when no ONNX route exists.
    """
    if backend != "auto":
        return backend
    if path is not None:
        return "onnx" if Path(path).suffix == ".onnx" else "torch"
    if heatmaps or precision not in ("auto", "fp32"):
        return "torch"
    import importlib.util

    from pneumoscan.weights import shipped_model_path

    try:
        shipped_model_path("onnx")
    except CheckpointError:
        return "torch"
    return "onnx" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def inference_precision(state: dict[str, Any], device: str = "auto", precision: str = "auto") -> str:
    """The autocast to run a checkpoint with: ``precision`` unless it is ``auto``.

    ``auto`` is the precision the checkpoint's temperature and thresholds were fitted with (``calibration_precision``,
    written by training; fp32 for checkpoints that predate it) when this hardware runs that precision natively, and
    fp32 otherwise. Why not simply the fastest the hardware offers: bf16 moves probabilities enough to carry images
    across the threshold, so a model calibrated in fp32 and run in bf16 no longer has the operating point and test
    metrics its model card states (measured on the shipped model: see docs/ARCHITECTURE.md). ``--precision bf16``
    still buys the speed, knowingly.
    """
    from pneumoscan.models.hardware import resolve_hardware
    from pneumoscan.models.precision import PRECISIONS

    if precision != "auto":
        return precision
    recorded = str(state.get("calibration_precision", "fp32"))
    if recorded not in PRECISIONS or recorded == "fp32":
        return "fp32"
    return recorded if resolve_hardware(device, "auto").precision == recorded else "fp32"


def info_from_checkpoint(state: dict[str, Any], version: str, metrics: dict[str, Any] | None = None) -> ModelInfo:
    """The deployable description stored in a checkpoint."""
    try:
        return ModelInfo(
            name=state["model"]["name"], version=version,
            preprocess=PreprocessConfig.from_dict(state["preprocess"]),
            threshold=float(state.get("threshold", 0.5)),
            threshold_rule=str(state.get("threshold_rule", "fixed 0.5")),
            temperature=float(state.get("temperature", 1.0)),
            class_names=tuple(state.get("class_names", ("NORMAL", "PNEUMONIA"))),
            operating_points={k: float(v) for k, v in (state.get("operating_points") or {}).items()},
            metrics=metrics if metrics is not None else dict(state.get("model_card_metrics") or {}),
            populations={str(k): dict(v) for k, v in (state.get("populations") or {}).items()},
            default_population=str(state.get("default_population") or ""),
            gate=dict(state["gate"]) if state.get("gate") else None,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint metadata is incomplete: {err}") from err
