"""Export a checkpoint to a self-describing, verified, single-file ONNX model.

The graph and metadata contract is documented in :mod:`pneumoscan.inference.onnx_backend` (input ``image``: float32
(N, 1, S, S), already normalised; outputs ``logit`` and ``probability``; preprocessing, threshold, temperature,
operating points, class names and versions in ``metadata_props``).

Why the file is checked before it is kept: an export can succeed and still compute something else (an unsupported
op decomposed wrongly, a batch dimension specialised to the example). So the model is validated with
``onnx.checker`` and then run with ONNX Runtime against PyTorch on random inputs of two batch sizes; the file only
replaces ``output`` (atomically, temp file + ``os.replace``) when the probabilities agree to ``tolerance``.

Exporters: ``dynamo`` (``torch.export``-based, the default and PyTorch's supported path) or ``torchscript`` (the
legacy tracer, deprecated by PyTorch but ~10x faster and a fallback for models ``torch.export`` cannot capture).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan import __version__
from pneumoscan.core.atomic import atomic_path
from pneumoscan.errors import CheckpointError, ConfigError, PneumoError, require
from pneumoscan.inference.onnx_backend import (
    FEATURES_OUTPUT,
    INPUT_NAME,
    LOGIT_OUTPUT,
    PROBABILITY_OUTPUT,
    metadata_from_model_info,
)

logger = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
#: Largest |probability difference| between ONNX Runtime and PyTorch (fp32) accepted by the export check.
DEFAULT_TOLERANCE = 1e-4


class ExportError(PneumoError):
    """The model could not be exported, or the exported file does not compute what the checkpoint does."""


@dataclass(frozen=True)
class ExportResult:
    """What was written.

    Attributes:
        path: the ONNX file.
        model: architecture name.
        version: model version (same string the PyTorch backend reports for this checkpoint).
        opset: ONNX opset of the default domain.
        exporter: "dynamo" or "torchscript".
        max_abs_diff: largest probability difference ONNX Runtime vs PyTorch fp32 in the verification.
        size_bytes: file size.
        seconds: time taken.
    """

    path: Path
    model: str
    version: str
    opset: int
    exporter: str
    max_abs_diff: float
    size_bytes: int
    seconds: float


def _wrap(model: Any, temperature: float) -> Any:
    """The exported module: normalised image → (logit (N,), calibrated probability (N,), features (N, D)).

    The features are the pooled penultimate activations the classifier reads, from the same forward pass; the
    competence gate (:mod:`pneumoscan.inference.gate`) scores them outside the graph, with parameters from the
    metadata, so both backends share its one numpy implementation.
    """
    torch = require("torch", "torch")
    from pneumoscan.inference.predictor import features_and_logits

    class _Deployable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.register_buffer("temperature", torch.tensor(float(temperature), dtype=torch.float32))

        def forward(self, image: Any) -> tuple[Any, Any, Any]:
            feats, logits = features_and_logits(self.net, image)
            logit = logits.reshape(-1)
            return logit, torch.sigmoid(logit / self.temperature), feats.flatten(1)

    return _Deployable().eval()


def _to_proto(module: Any, example: Any, exporter: str, opset: int) -> Any:
    """Run the chosen exporter and return the in-memory ``onnx.ModelProto``."""
    torch = require("torch", "torch")
    onnx = require("onnx", "export")
    names = {"input_names": [INPUT_NAME], "output_names": [LOGIT_OUTPUT, PROBABILITY_OUTPUT, FEATURES_OUTPUT]}
    if exporter == "dynamo":
        require("onnxscript", "export")
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, opset_version=opset,
                                    dynamic_shapes=({0: batch},), optimize=True, **names)
        return program.model_proto
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # we know: that is why it is not the default
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=opset,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, LOGIT_OUTPUT: {0: "batch"},
                                        PROBABILITY_OUTPUT: {0: "batch"}, FEATURES_OUTPUT: {0: "batch"}}, **names)
    return onnx.load_from_string(buf.getvalue())


def export_onnx(checkpoint: str | Path, output: str | Path, *, opset: int = DEFAULT_OPSET,
                exporter: str = "dynamo", tolerance: float = DEFAULT_TOLERANCE, seed: int = 0) -> ExportResult:
    """Export ``checkpoint`` to ``output`` (one ``.onnx`` file, no external data) and verify it.

    Args:
        checkpoint: a pneumoscan ``.pt`` checkpoint.
        output: target ``.onnx`` file; replaced atomically, only after verification passed.
        opset: ONNX opset (the dynamo exporter builds opset 18 and converts to others).
        exporter: "dynamo" or "torchscript".
        tolerance: largest accepted probability difference between ONNX Runtime and PyTorch fp32.
        seed: seed of the random verification inputs.

    Raises:
        ConfigError: bad options.
        CheckpointError: unreadable checkpoint.
        ExportError: the exporter failed, ``onnx.checker`` refused the model, or the numbers disagree.
        MissingDependencyError: torch, onnx, onnxscript or onnxruntime missing.
    """
    started = time.perf_counter()
    torch = require("torch", "torch")
    onnx = require("onnx", "export")
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter '{exporter}'; choose from {', '.join(EXPORTERS)}")
    max_opset = int(onnx.defs.onnx_opset_version())
    if not 13 <= opset <= max_opset:
        raise ConfigError(f"opset must be between 13 and {max_opset} (this onnx), got {opset}")
    output = Path(output)
    if output.suffix != ".onnx":
        raise ConfigError(f"{output}: the output file must end in .onnx")

    from pneumoscan.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    info = predictor.info
    if predictor.model is None:  # pragma: no cover - from_checkpoint always sets it
        raise CheckpointError(f"{checkpoint}: no PyTorch model in this checkpoint")
    model = predictor.model.float().eval()
    size = info.preprocess.image_size
    module = _wrap(model, info.temperature)
    example = torch.zeros(2, 1, size, size)  # batch 2: a batch of 1 invites the tracer to specialise the axis

    logger.info("exporting %s (%s) with the %s exporter, opset %d", info.name, info.version, exporter, opset)
    try:
        proto = _to_proto(module, example, exporter, opset)
    except PneumoError:
        raise
    except Exception as err:  # broad on purpose: exporters raise many internal error types
        hint = " (try --exporter torchscript)" if exporter == "dynamo" else ""
        raise ExportError(f"{info.name}: ONNX export failed{hint}: {str(err).strip().splitlines()[0][:300]}") \
            from err

    del proto.metadata_props[:]
    for key, value in metadata_from_model_info(info, __version__).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "pneumoscan"
    proto.producer_version = __version__
    proto.doc_string = (f"pneumoscan {info.name} {info.version}: chest X-ray -> pneumonia logit. Input '{INPUT_NAME}' "
                        f"float32 (N,1,{size},{size}) normalised as metadata 'preprocess'; outputs '{LOGIT_OUTPUT}' "
                        f"and '{PROBABILITY_OUTPUT}' = sigmoid(logit / temperature), '{FEATURES_OUTPUT}' = pooled "
                        "penultimate features for the competence gate (parameters in metadata 'gate').")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:  # onnx.checker.ValidationError, onnx.shape_inference.InferenceError
        raise ExportError(f"{info.name}: exported model fails onnx.checker: {str(err).splitlines()[0][:300]}") \
            from err

    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output, suffix=".onnx") as tmp:  # replaces ``output`` only once the export is verified
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        diff = _verify(predictor, tmp, tolerance, seed)
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    result = ExportResult(path=output, model=info.name, version=info.version, opset=int(opset_used),
                          exporter=exporter, max_abs_diff=diff, size_bytes=output.stat().st_size,
                          seconds=time.perf_counter() - started)
    logger.info("wrote %s (%.1f MB, max |dp| vs PyTorch %.2e)", output, result.size_bytes / 1e6, diff)
    return result


def _verify(predictor: Any, path: Path, tolerance: float, seed: int) -> float:
    """Largest probability difference ONNX Runtime vs PyTorch on random inputs; raises beyond ``tolerance``.

    Random uint8 images go through the real path on both sides (``probabilities_from_prepared``), at batch sizes 1
    and 3, so a batch axis frozen at the example's size is caught as well as numerical drift.
    """
    from pneumoscan.inference.predictor import Predictor

    onnx_predictor = Predictor.from_onnx(path)
    if onnx_predictor.info.version != predictor.info.version:  # pragma: no cover - metadata written just above
        raise ExportError(f"{path}: metadata round trip changed the version")
    rng = np.random.default_rng(seed)
    size = predictor.info.preprocess.image_size
    worst = 0.0
    for n in (1, 3):
        batch = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        try:
            got = onnx_predictor.probabilities_from_prepared(batch)
        except Exception as err:  # onnxruntime raises its own types, e.g. on a frozen batch axis
            raise ExportError(f"exported model fails on a batch of {n}: {str(err).splitlines()[0][:300]}") from err
        want = predictor.probabilities_from_prepared(batch)
        worst = max(worst, float(np.max(np.abs(got - want))))
        _, got_f = onnx_predictor.scores_from_prepared(batch)
        _, want_f = predictor.scores_from_prepared(batch)
        if got_f is None or want_f is None or got_f.shape != want_f.shape:
            raise ExportError(f"exported model lacks the '{FEATURES_OUTPUT}' output the competence gate needs")
        scale = max(1.0, float(np.max(np.abs(want_f))))
        feature_diff = float(np.max(np.abs(got_f - want_f))) / scale
        if not feature_diff <= 1e-3:
            raise ExportError(f"exported model's features disagree with PyTorch: max relative difference "
                              f"{feature_diff:.2e} > 1e-3")
    if not worst <= tolerance:
        raise ExportError(f"exported model disagrees with PyTorch: max |probability difference| {worst:.2e} > "
                          f"{tolerance:.0e}")
    return worst
