"""Lung probability maps for grey images, from the shipped lung U-Net (PyTorch) or its ONNX export (no PyTorch).

:class:`LungSegmenter` hides which runtime runs the network; its input path is the classifier's torch-free
``prepare``/``to_float``, so both runtimes see identical pixels. :func:`load_lung_segmenter` loads the lung model
shipped in ``pneumoscan/weights`` (``lung.json`` names its files) once per process.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.core.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from pneumoscan.data.lungs import LungGeometry, geometry_from_mask
from pneumoscan.data.preprocess import PreprocessConfig, prepare, to_float
from pneumoscan.errors import CheckpointError

logger = logging.getLogger(__name__)


# -- inference -----------------------------------------------------------------------------------------------------
class LungSegmenter:
    """Lung probability maps for grey images, from the PyTorch weights or their ONNX export.

    Args:
        run: callable float32 (N, 1, S, S) → float32 (N, 1, S, S) logits.
        preprocess: size and normalisation of the network input.
        name: identifies the weights (recorded in classifier checkpoints that crop with them).
    """

    def __init__(self, run: Any, preprocess: PreprocessConfig, name: str) -> None:
        self._run = run
        self.preprocess = preprocess
        self.name = name
        self.model: Any = None  # the torch module when loaded from a .pt file
        self.meta: dict[str, Any] = {}  # training metadata stored with the weights (split, config, history)

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> LungSegmenter:
        """Load a ``.pt`` lung state (torch) or an ``.onnx`` export (ONNX Runtime, no torch)."""
        path = Path(path)
        if path.suffix == ".onnx":
            return cls._from_onnx(path, name or path.stem)
        import torch

        from pneumoscan.models.lung import load_lung_state, model_from_state

        state = load_lung_state(path)
        model = model_from_state(state)

        def run(inputs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(inputs)).float().numpy()

        seg = cls(run, PreprocessConfig.from_dict(state["preprocess"]), name or path.stem)
        seg.model = model
        seg.meta = {k: v for k, v in state.items() if k != "state_dict"}
        return seg

    @classmethod
    def _from_onnx(cls, path: Path, name: str) -> LungSegmenter:
        from pneumoscan.errors import require

        ort = require("onnxruntime", "onnx")
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
        except Exception as err:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{path}: not a readable ONNX lung model ({str(err).splitlines()[0][:200]})") \
                from err
        meta = session.get_modelmeta().custom_metadata_map
        try:
            preprocess = PreprocessConfig.from_dict(json.loads(meta["preprocess"]))
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path}: ONNX lung model lacks its preprocess metadata") from err
        input_name = session.get_inputs()[0].name
        split = json.loads(meta.get("split", "null"))

        def run(inputs: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {input_name: inputs})[0], dtype=np.float32)

        seg = cls(run, preprocess, name)
        seg.meta = {"split": split} if split else {}
        return seg

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Grey [0, 1] image (any size) → uint8 S×S segmenter input."""
        return prepare(image, self.preprocess.image_size)

    def probabilities_from_prepared(self, batch: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, S, S) → float32 (N, S, S) lung probabilities."""
        out = []
        for start in range(0, len(batch), batch_size):
            inputs = to_float(np.asarray(batch[start:start + batch_size]), self.preprocess)[:, None]
            logits = self._run(np.ascontiguousarray(inputs, dtype=np.float32))[:, 0]
            out.append(1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30))))
        if not out:
            side = self.preprocess.image_size
            return np.zeros((0, side, side), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Grey [0, 1] image → (S, S) lung probability map at the segmenter's resolution."""
        return self.probabilities_from_prepared(self.prepare(image)[None])[0]

    def geometries_from_prepared(self, batch: np.ndarray, batch_size: int = 64) -> list[LungGeometry]:
        """uint8 (N, S, S) segmenter inputs → one :class:`LungGeometry` per image."""
        probs = self.probabilities_from_prepared(batch, batch_size)
        return [geometry_from_mask(np.rint(p * 255).astype(np.uint8)) for p in probs]

    def geometry(self, image: np.ndarray) -> LungGeometry:
        """Where the lungs are in one grey [0, 1] image."""
        return self.geometries_from_prepared(self.prepare(image)[None])[0]


def lung_state_meta(segmenter: LungSegmenter) -> dict[str, Any]:
    """The training metadata (split, config, history) stored with a segmenter's weights ({} for ONNX files)."""
    return dict(segmenter.meta)


# -- the shipped lung model ----------------------------------------------------------------------------------------
LUNG_DIR_ENV = "PNEUMOSCAN_LUNG_MODEL_DIR"


def lung_model_dir() -> Path:
    """Folder holding ``lung.json`` and the lung model files: the package's ``weights/``, or
    ``$PNEUMOSCAN_LUNG_MODEL_DIR`` (for a lung model released with ``pneumoscan segment release --output DIR``)."""
    import os

    from pneumoscan.weights import HERE

    env = os.environ.get(LUNG_DIR_ENV)
    return Path(env) if env else HERE


def shipped_lung_info() -> dict[str, Any]:
    """Contents of ``lung.json`` (file names, licence and how the lung model was trained)."""
    meta = lung_model_dir() / "lung.json"
    if not meta.is_file():
        raise CheckpointError(f"no lung model installed ({meta} missing)")
    return json.loads(meta.read_text(encoding="utf-8"))


def shipped_lung_name() -> str:
    """Name (with content digest) of the installed lung model, as recorded in checkpoints that crop with it."""
    return str(shipped_lung_info()["name"])


def load_lung_segmenter(name: str = "", backend: str = "auto") -> LungSegmenter:
    """The installed lung segmenter ``name`` ("" = the installed one), loaded once per process.

    Args:
        name: the lung model a classifier was trained with (its ``preprocess["lung_model"]``); it must be the
            installed one, or the crops would differ from those the classifier learned on.
        backend: "torch", "onnx" or "auto" (torch when importable, else ONNX Runtime).
    """
    if backend == "auto":
        try:
            import torch  # noqa: F401

            backend = "torch"
        except ImportError:
            backend = "onnx"
    return _load_segmenter(str(lung_model_dir()), name, backend)


@lru_cache(maxsize=8)
def _load_segmenter(folder: str, name: str, backend: str) -> LungSegmenter:
    info = shipped_lung_info()
    if name and name != info["name"]:
        raise CheckpointError(f"this model crops to the lungs with lung model '{name}', but the installed lung model "
                              f"is '{info['name']}'; install the pneumoscan version the model was trained with")
    path = Path(folder) / (info["onnx"] if backend == "onnx" else info["weights"])
    if not path.is_file():
        raise CheckpointError(f"{path}: lung model file missing from this installation")
    return LungSegmenter.from_file(path, name=info["name"])


def record_lung_metrics(name: str, metrics: dict[str, Any]) -> Path:
    """Store held-out metrics of the installed lung model ``name`` in its ``lung.json`` (atomically)."""
    import platform
    import time

    meta = lung_model_dir() / "lung.json"
    info = shipped_lung_info()
    if info["name"] != name:
        raise CheckpointError(f"--record needs the installed lung model ({info['name']}), not {name}")
    info["held_out"] = {**metrics, "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
                        platform.machine()}
    atomic_write_text(meta, json.dumps(info, indent=2) + "\n")
    return meta


# -- release -------------------------------------------------------------------------------------------------------
LUNG_LICENCE = (
    "Trained on the NLM Montgomery County and Shenzhen chest X-ray sets (public for research; cite Jaeger et al., "
    "Quant Imaging Med Surg 2014;4(6):475-477) with the lung masks of Stirenko et al. 2018 for Shenzhen, released "
    "under CC BY-NC-SA 4.0: these weights inherit its non-commercial, share-alike terms (CC BY-NC-SA 4.0)."
)
LUNG_CITATIONS = (
    "Jaeger S, Candemir S, Antani S, Wang YX, Lu PX, Thoma G. Two public chest X-ray datasets for computer-aided "
    "screening of pulmonary diseases. Quant Imaging Med Surg. 2014;4(6):475-477.",
    "Stirenko S, Kochura Y, Alienin O, et al. Chest X-Ray Analysis of Tuberculosis by Deep Learning with "
    "Segmentation and Augmentation. IEEE ELNANO 2018 (Shenzhen lung masks).",
    "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI 2015.",
)


def release_lung_model(checkpoint: str | Path, output: str | Path | None = None, *, command: str = "",
                       tolerance: float = 1e-4) -> Path:
    """Write the shipped form of a trained lung model and return the ``lung.json`` written.

    ``lung-unet-<digest>.pt`` (weights, preprocessing, split and training record; loads with ``weights_only``),
    ``lung-unet-<digest>.onnx`` (same network for ONNX Runtime, checked against PyTorch to ``tolerance``) and
    ``lung.json`` naming both. The digest is the sha256 of the ``.pt`` file.
    """
    import hashlib
    import io

    import torch

    from pneumoscan.errors import require
    from pneumoscan.models.lung import load_lung_state, model_from_state

    onnx = require("onnx", "export")
    out_dir = Path(output) if output is not None else lung_model_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_lung_state(checkpoint)
    keep = ("format", "model", "state_dict", "preprocess", "split", "config", "epoch", "val_dice", "history")
    shipped = {k: state[k] for k in keep if k in state}
    buf = io.BytesIO()  # the name holds the file's digest: write it to memory first, then atomically
    torch.save(shipped, buf)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    name = f"lung-unet-{digest}"
    atomic_write_bytes(out_dir / f"{name}.pt", buf.getvalue())

    model = model_from_state(shipped)
    side = int(shipped["preprocess"]["image_size"])
    example = torch.randn(2, 1, side, side, generator=torch.Generator().manual_seed(0))
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["lung_logits"],
                          dynamic_axes={"image": {0: "batch"}, "lung_logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in (("preprocess", json.dumps(shipped["preprocess"])), ("name", name),
                       ("split", json.dumps(shipped.get("split"))), ("licence", LUNG_LICENCE)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx_path = out_dir / f"{name}.onnx"
    with atomic_path(onnx_path) as onnx_tmp:  # replaces ``onnx_path`` only once it agrees with PyTorch
        onnx_tmp.write_bytes(proto.SerializeToString())
        seg_onnx = LungSegmenter._from_onnx(onnx_tmp, name)
        with torch.inference_mode():
            want = torch.sigmoid(model(example)).numpy()
        got = 1 / (1 + np.exp(-seg_onnx._run(example.numpy())))
        diff = float(np.abs(want - got).max())
        if diff > tolerance:
            raise CheckpointError(f"ONNX lung model differs from PyTorch by {diff:.2e} (> {tolerance:g})")

    info = {
        "name": name, "weights": f"{name}.pt", "onnx": f"{name}.onnx", "onnx_max_abs_diff": diff,
        "architecture": {"name": shipped["model"]["name"], "base": shipped["model"]["base"],
                         "depth": shipped["model"]["depth"],
                         "parameters": int(sum(v.numel() for v in shipped["state_dict"].values()
                                               if v.dtype.is_floating_point))},
        "input": {"image_size": side, "mean": shipped["preprocess"]["mean"], "std": shipped["preprocess"]["std"],
                  "output": "lung logit per pixel (sigmoid > 0.5 = lung)"},
        "training": {"command": command, "config": shipped.get("config"), "best_epoch": shipped.get("epoch"),
                     "val_dice": shipped.get("val_dice"),
                     "split_sizes": {k: len(v) for k, v in (shipped.get("split") or {}).items()}},
        "licence": LUNG_LICENCE, "citations": list(LUNG_CITATIONS),
    }
    meta = out_dir / "lung.json"
    atomic_write_text(meta, json.dumps(info, indent=2) + "\n")
    return meta
