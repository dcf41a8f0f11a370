"""The :class:`Predictor`: one object that turns images into calibrated pneumonia probabilities and labels.

It is built from a checkpoint (PyTorch backend) or an exported ONNX model (ONNX Runtime backend, no PyTorch needed)
and reads everything it needs — architecture, preprocessing, temperature, threshold, class names — from that file,
never from the caller. ``predict`` (CLI), ``evaluate`` and ``serve`` all go through it, so the same image gives the
same number everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pneumoscan.data.io import read_image
from pneumoscan.data.preprocess import PreprocessConfig, prepare, to_float
from pneumoscan.errors import CheckpointError, ConfigError, ImageReadError

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class ModelInfo:
    """What a deployed model is, as stored with its weights."""

    name: str
    version: str
    preprocess: PreprocessConfig
    threshold: float
    threshold_rule: str
    temperature: float = 1.0
    class_names: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
    operating_points: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["preprocess"] = self.preprocess.to_dict()
        out["image_size"] = self.preprocess.image_size
        return out


@dataclass(frozen=True)
class Prediction:
    """The answer for one image; ``error`` is set (and the numbers are None) when the image could not be read."""

    path: str
    probability: float | None
    label: str | None
    threshold: float
    model: str
    version: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(Protocol):
    """Runs the network: float32 (N, 1, S, S) normalised images → (N,) logits."""

    def logits(self, inputs: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """PyTorch backend running ``model`` under the autocast ``precision`` names (see :func:`inference_precision`)."""

    def __init__(self, model: Any, device: str = "auto", precision: str = "auto") -> None:
        import torch

        from pneumoscan.training.hardware import resolve_hardware

        self.hw = resolve_hardware(device, precision)
        self.model = model.to(self.hw.device).eval()
        if self.hw.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._torch = torch

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        from pneumoscan.training.engine import autocast

        torch = self._torch
        with torch.inference_mode(), autocast(self.hw):
            x = torch.from_numpy(inputs).to(self.hw.device)
            if self.hw.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x).float().reshape(-1).cpu().numpy()


class Predictor:
    """Calibrated probabilities and labels for images, from one model loaded once.

    Use :meth:`from_checkpoint`, :meth:`from_onnx` or :meth:`default`.
    """

    def __init__(self, backend: Backend, info: ModelInfo, model: Any = None) -> None:
        self.backend = backend
        self.info = info
        self.model = model  # the torch module (for Grad-CAM), None for ONNX

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto", precision: str = "auto") -> Predictor:
        from pneumoscan.training.checkpoint import build_model_from_checkpoint, file_digest, load_checkpoint

        state = load_checkpoint(path)
        model = build_model_from_checkpoint(state)
        info = info_from_checkpoint(state, version=f"{state['model']['name']}-{file_digest(path)}")
        return cls(TorchBackend(model, device, inference_precision(state, device, precision)), info, model)

    @classmethod
    def from_onnx(cls, path: str | Path) -> Predictor:
        from pneumoscan.export.onnx_backend import OnnxBackend

        backend = OnnxBackend(path)
        return cls(backend, backend.info)

    @classmethod
    def load(cls, path: str | Path | None = None, *, backend: str = "torch", device: str = "auto",
             precision: str = "auto") -> Predictor:
        """Load ``path`` (a ``.pt`` checkpoint or ``.onnx`` model) or the shipped model when ``path`` is None."""
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{backend}'; choose from {', '.join(BACKENDS)}")
        if path is None:
            return cls.default(backend=backend, device=device, precision=precision)
        path = Path(path)
        if backend == "onnx" or path.suffix == ".onnx":
            if path.suffix != ".onnx":
                raise ConfigError(f"{path}: --backend onnx needs an .onnx file (pneumoscan export makes one)")
            return cls.from_onnx(path)
        return cls.from_checkpoint(path, device=device, precision=precision)

    @classmethod
    def default(cls, *, backend: str = "torch", device: str = "auto", precision: str = "auto") -> Predictor:
        """The model shipped inside the package (see MODEL_CARD.md)."""
        from pneumoscan.weights import shipped_model_path

        path = shipped_model_path(backend)
        return cls.from_onnx(path) if backend == "onnx" else cls.from_checkpoint(path, device=device,
                                                                                precision=precision)

    # -- prediction -------------------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Grey [0, 1] image → uint8 S×S, exactly as in training (resize and any intensity standardisation)."""
        return prepare(image, self.info.preprocess)

    def probabilities_from_prepared(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S) → calibrated probabilities (N,)."""
        inputs = to_float(batch, self.info.preprocess)[:, None, :, :]
        logits = self.backend.logits(np.ascontiguousarray(inputs, dtype=np.float32))
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64) / self.info.temperature))

    def predict_arrays(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Probabilities for decoded grey images in [0, 1]."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = np.stack([self.prepare(im) for im in images[start:start + batch_size]])
            out.append(self.probabilities_from_prepared(batch))
        return np.concatenate(out) if out else np.zeros(0)

    def label_for(self, probability: float) -> str:
        return self.info.class_names[1] if probability >= self.info.threshold else self.info.class_names[0]

    def _result(self, name: str, probability: float | None, error: str | None = None) -> Prediction:
        return Prediction(path=name, probability=None if probability is None else float(probability),
                          label=None if probability is None else self.label_for(probability),
                          threshold=self.info.threshold, model=self.info.name, version=self.info.version,
                          error=error)

    def predict_sources(self, sources: Iterable[str | Path | bytes], *, names: Sequence[str] | None = None,
                        batch_size: int = 32, progress: Callable[[int], None] | None = None,
                        max_pixels: int | None = None) -> list[Prediction]:
        """Read, preprocess and score files or byte strings in batches.

        A file that cannot be read yields a :class:`Prediction` with ``error`` set; the others are unaffected.
        ``progress`` is called with the number of images done after each batch; ``max_pixels`` overrides the
        decompression-bomb limit of :func:`pneumoscan.data.io.read_image`.
        """
        limit = {} if max_pixels is None else {"max_pixels": max_pixels}
        results: list[Prediction] = []
        pending: list[tuple[int, np.ndarray]] = []
        items = list(sources)
        for i, src in enumerate(items):
            name = names[i] if names is not None else (str(src) if not isinstance(src, bytes) else f"<upload {i}>")
            try:
                pending.append((i, self.prepare(read_image(src, name=name, **limit))))
                results.append(self._result(name, None, "pending"))
            except ImageReadError as err:
                results.append(self._result(name, None, str(err)))
            if len(pending) == batch_size or (i == len(items) - 1 and pending):
                self._flush(pending, results)
                if progress:
                    progress(len(pending))
                pending = []
        return results

    def _flush(self, pending: list[tuple[int, np.ndarray]], results: list[Prediction]) -> None:
        probs = self.probabilities_from_prepared(np.stack([a for _, a in pending]))
        for (i, _), p in zip(pending, probs, strict=True):
            results[i] = self._result(results[i].path, float(p))


def inference_precision(state: dict[str, Any], device: str = "auto", precision: str = "auto") -> str:
    """The autocast to run a checkpoint with: ``precision`` unless it is ``auto``.

    ``auto`` is the precision the checkpoint's temperature and thresholds were fitted with (``calibration_precision``,
    written by training; fp32 for checkpoints that predate it) when this hardware runs that precision natively, and
    fp32 otherwise. Why not simply the fastest the hardware offers: bf16 moves probabilities enough to carry images
    across the threshold, so a model calibrated in fp32 and run in bf16 no longer has the operating point and test
    metrics its model card states (measured on the shipped model: see docs/ARCHITECTURE.md). ``--precision bf16``
    still buys the speed, knowingly.
    """
    from pneumoscan.training.hardware import PRECISIONS, resolve_hardware

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
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint metadata is incomplete: {err}") from err
