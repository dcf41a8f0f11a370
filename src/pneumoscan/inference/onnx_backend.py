"""ONNX Runtime backend: runs an exported pneumoscan model without PyTorch.

This module imports only numpy, onnxruntime and pneumoscan's torch-free modules, so that
``pip install "pneumoscan[serve,onnx]"`` can predict and serve. Everything the :class:`~pneumoscan.inference.predictor.
Predictor` needs besides the network — preprocessing, temperature, threshold, operating points, class names — is read
from the model's ``metadata_props``, written by :func:`pneumoscan.export.onnx.export_onnx`. The metadata contract
(keys and JSON encodings) is defined here, next to its reader, and the exporter imports it.

Graph contract (format 1): one input ``image``, float32 (N, 1, S, S), *already normalised* exactly as
:func:`pneumoscan.data.preprocess.to_float` does (``(uint8 / 255 - mean) / std``); outputs ``logit`` (N,) — the raw
logit, before temperature — and ``probability`` (N,) = ``sigmoid(logit / temperature)`` for consumers that do not
use pneumoscan; and ``features`` (N, D), the pooled penultimate features from the same pass, which the competence gate
scores (:mod:`pneumoscan.inference.gate`; parameters in metadata ``gate``). ``features`` was added within format 1
(additive): an export without it still loads, and its predictions then skip the gate's distribution check. The
normalisation is kept outside the graph so that both backends share one implementation of it (``to_float``) and the
ONNX backend is a drop-in replacement for the PyTorch model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.errors import CheckpointError, ConfigError, require
from pneumoscan.inference.model_info import ModelInfo

logger = logging.getLogger(__name__)

#: Version of the graph + metadata contract; bump when either changes incompatibly.
FORMAT_VERSION = 1
INPUT_NAME = "image"
LOGIT_OUTPUT = "logit"
PROBABILITY_OUTPUT = "probability"
FEATURES_OUTPUT = "features"

#: metadata_props keys. JSON-encoded values are marked; the others are plain strings.
META_FORMAT = "pneumoscan_format"
META_PNEUMOSCAN_VERSION = "pneumoscan_version"
META_MODEL_NAME = "model_name"
META_MODEL_VERSION = "model_version"
META_PREPROCESS = "preprocess"  # JSON: {image_size, mean, std, version, input}
META_THRESHOLD = "threshold"
META_THRESHOLD_RULE = "threshold_rule"
META_TEMPERATURE = "temperature"
META_OPERATING_POINTS = "operating_points"  # JSON: {rule: threshold}
META_CLASS_NAMES = "class_names"  # JSON: ["NORMAL", "PNEUMONIA"]
META_METRICS = "metrics"  # JSON: the model card's metrics, {} when unknown
META_GATE = "gate"  # JSON: the competence gate's parameters (checkpoint["gate"]), absent when not fitted
META_POPULATIONS = "populations"  # JSON: {name: {threshold, rule, n_val, n_pos, definition}}
META_DEFAULT_POPULATION = "default_population"
REQUIRED_META = (META_FORMAT, META_MODEL_NAME, META_MODEL_VERSION, META_PREPROCESS, META_THRESHOLD,
                 META_TEMPERATURE, META_CLASS_NAMES)


def model_info_from_metadata(meta: Mapping[str, str], source: str | Path = "<onnx>") -> ModelInfo:
    """Rebuild the :class:`ModelInfo` stored in an exported model's metadata.

    Args:
        meta: the model's ``metadata_props`` as a mapping of strings.
        source: the file, for error messages.

    Raises:
        CheckpointError: not a pneumoscan export, a newer format, or malformed values.
    """
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{source}: not a pneumoscan ONNX export (metadata lacks {', '.join(missing)}); "
                              "make one with `pneumoscan export`")
    try:
        fmt = int(meta[META_FORMAT])
        if fmt > FORMAT_VERSION:
            raise CheckpointError(f"{source}: export format {fmt} is newer than this pneumoscan reads "
                                  f"({FORMAT_VERSION}); upgrade pneumoscan")
        operating_points = json.loads(meta.get(META_OPERATING_POINTS) or "{}")
        return ModelInfo(
            name=meta[META_MODEL_NAME],
            version=meta[META_MODEL_VERSION],
            preprocess=PreprocessConfig.from_dict(json.loads(meta[META_PREPROCESS])),
            threshold=float(meta[META_THRESHOLD]),
            threshold_rule=meta.get(META_THRESHOLD_RULE, "unknown"),
            temperature=float(meta[META_TEMPERATURE]),
            class_names=tuple(str(c) for c in json.loads(meta[META_CLASS_NAMES])),
            operating_points={str(k): float(v) for k, v in operating_points.items()},
            metrics=dict(json.loads(meta.get(META_METRICS) or "{}")),
            backend="onnx",
            populations={str(k): dict(v) for k, v in json.loads(meta.get(META_POPULATIONS) or "{}").items()},
            default_population=meta.get(META_DEFAULT_POPULATION, ""),
            gate=json.loads(meta[META_GATE]) if meta.get(META_GATE) else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as err:
        raise CheckpointError(f"{source}: malformed pneumoscan metadata ({err})") from err


def metadata_from_model_info(info: ModelInfo, pneumoscan_version: str) -> dict[str, str]:
    """The ``metadata_props`` that :func:`model_info_from_metadata` reads back (inverse of it)."""
    preprocess = {**info.preprocess.to_dict(),
                  "input": "float32 (N, 1, S, S): grey image resized to S x S (aspect not kept), quantised to "
                           "uint8, then (x / 255 - mean) / std"}
    out = {
        META_FORMAT: str(FORMAT_VERSION),
        META_PNEUMOSCAN_VERSION: pneumoscan_version,
        META_MODEL_NAME: info.name,
        META_MODEL_VERSION: info.version,
        META_PREPROCESS: json.dumps(preprocess, sort_keys=True),
        META_THRESHOLD: repr(float(info.threshold)),
        META_THRESHOLD_RULE: info.threshold_rule,
        META_TEMPERATURE: repr(float(info.temperature)),
        META_OPERATING_POINTS: json.dumps({k: float(v) for k, v in info.operating_points.items()}, sort_keys=True),
        META_CLASS_NAMES: json.dumps(list(info.class_names)),
        META_METRICS: json.dumps(info.metrics, sort_keys=True, default=str),
        META_POPULATIONS: json.dumps(info.populations, sort_keys=True),
        META_DEFAULT_POPULATION: info.default_population,
    }
    if info.gate:
        out[META_GATE] = json.dumps(info.gate)
    return out


class OnnxBackend:
    """Runs an exported model with ONNX Runtime: float32 (N, 1, S, S) normalised images → (N,) logits.

    Attributes:
        info: the model's description, read from the file's metadata (``backend="onnx"``).
        path: the model file.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None,
                 providers: Sequence[str] | None = None, spin: bool = False) -> None:
        """Open the model once; the session is reused for every call (ONNX Runtime sessions are thread-safe).

        Args:
            path: ``.onnx`` file written by ``pneumoscan export``.
            threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
            providers: execution providers in order of preference (default: CPU only, which is deterministic and
                always present; pass e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` on a GPU).
            spin: let idle intra-op threads busy-wait (ONNX Runtime's default; lowest latency for back-to-back
                calls on otherwise idle cores, but wasteful when the cores have other work).

        Raises:
            CheckpointError: missing, unreadable or non-pneumoscan model file.
            MissingDependencyError: onnxruntime is not installed.
        """
        ort: Any = require("onnxruntime", "onnx")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: ONNX model not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise here
        if not spin:
            # Idle intra-op threads busy-wait by default; in a server they then steal the cores that decode the next
            # uploads. Measured on 2 cores (benchmarks/load_test.py, cnn at 96 px): 16.6 requests/s at concurrency 8
            # with spinning, below the 24.6 at concurrency 1; 32.8 without.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options,
                                                 providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as err:  # broad on purpose: onnxruntime raises its own pybind exception types
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{self.path}: not a loadable ONNX model ({first})") from err
        self.info = model_info_from_metadata(self._session.get_modelmeta().custom_metadata_map, self.path)
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        self.has_features = FEATURES_OUTPUT in outputs
        if INPUT_NAME not in inputs or LOGIT_OUTPUT not in outputs:
            raise CheckpointError(f"{self.path}: expected input '{INPUT_NAME}' and output '{LOGIT_OUTPUT}', found "
                                  f"{sorted(inputs)} -> {sorted(outputs)}")
        logger.debug("loaded ONNX model %s (%s) from %s with %s", self.info.name, self.info.version, self.path,
                    ", ".join(self._session.get_providers()))

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use."""
        return list(self._session.get_providers())

    def _batch(self, inputs: np.ndarray) -> np.ndarray:
        size = self.info.preprocess.image_size
        if inputs.ndim != 4 or inputs.shape[1:] != (1, size, size):
            raise ValueError(f"expected input of shape (N, 1, {size}, {size}), got {inputs.shape}")
        return np.ascontiguousarray(inputs, dtype=np.float32)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Raw logits (before temperature) for a float32 (N, 1, S, S) batch of normalised images."""
        (out,) = self._session.run([LOGIT_OUTPUT], {INPUT_NAME: self._batch(inputs)})
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def logits_and_features(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and pooled penultimate features (None for an export without the ``features`` output)."""
        if not self.has_features:
            return self.logits(inputs), None
        logit, feats = self._session.run([LOGIT_OUTPUT, FEATURES_OUTPUT], {INPUT_NAME: self._batch(inputs)})
        return np.asarray(logit, dtype=np.float32).reshape(-1), np.asarray(feats, dtype=np.float32)
