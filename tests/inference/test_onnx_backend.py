"""The ONNX Runtime backend (`inference/onnx_backend.py`): the same model and probabilities as PyTorch, refused
files, and prediction in an install without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from pneumoscan.errors import CheckpointError, ConfigError
from pneumoscan.inference.onnx_backend import OnnxBackend, model_info_from_metadata
from pneumoscan.inference.predictor import Predictor
from tests.fixtures import write_dicom, write_jpeg, write_png
from tests.serving.support import IMAGE_SIZE, NO_TORCH_MAIN, NO_TORCH_PRELUDE, TinyModel, xray

TOL = 1e-4


def test_onnx_predictor_reports_the_same_model(torch_predictor: Predictor, onnx_predictor: Predictor) -> None:
    a, b = torch_predictor.info, onnx_predictor.info
    assert b.backend == "onnx"
    assert (a.name, a.version, a.preprocess, a.threshold, a.threshold_rule, a.temperature, a.class_names,
            a.operating_points) == (b.name, b.version, b.preprocess, b.threshold, b.threshold_rule, b.temperature,
                                    b.class_names, b.operating_points)


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_parity_on_random_inputs(torch_predictor: Predictor, onnx_predictor: Predictor, batch: int) -> None:
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, size=(batch, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    want = torch_predictor.probabilities_from_prepared(images)
    got = onnx_predictor.probabilities_from_prepared(images)
    assert got.shape == (batch,)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_parity_on_image_files(tmp_path: Path, torch_predictor: Predictor, onnx_predictor: Predictor) -> None:
    files = [write_png(tmp_path / "a.png", xray(1, 80)), write_png(tmp_path / "b.png", xray(2, 64, positive=False)),
             write_jpeg(tmp_path / "c.jpeg", xray(3, 96)), write_dicom(tmp_path / "d.dcm", xray(4, 64)),
             write_dicom(tmp_path / "e.dcm", photometric="MONOCHROME1", bits_stored=12)]
    want = torch_predictor.predict_sources([str(f) for f in files], batch_size=2)
    got = onnx_predictor.predict_sources([str(f) for f in files], batch_size=3)
    for w, g in zip(want, got, strict=True):
        assert w.error is None and g.error is None
        assert abs(w.probability - g.probability) <= TOL  # type: ignore[operator]
        # Same label unless the probability sits within the tolerance of the threshold.
        if abs(w.probability - w.threshold) > TOL:  # type: ignore[operator]
            assert w.label == g.label


def test_backend_refuses_foreign_and_broken_files(tiny: TinyModel, tmp_path: Path) -> None:
    model = onnx.load(str(tiny.onnx))
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, str(foreign))
    with pytest.raises(CheckpointError, match="not a pneumoscan ONNX export"):
        OnnxBackend(foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        OnnxBackend(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        OnnxBackend(tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="needs an .onnx file"):
        Predictor.load(tiny.checkpoint, backend="onnx")


def test_backend_checks_input_shape(tiny: TinyModel) -> None:
    backend = OnnxBackend(tiny.onnx)
    with pytest.raises(ValueError, match="expected input of shape"):
        backend.logits(np.zeros((1, 1, IMAGE_SIZE + 1, IMAGE_SIZE), dtype=np.float32))


def test_newer_format_is_refused(tiny: TinyModel) -> None:
    model = onnx.load(str(tiny.onnx))
    meta = {p.key: p.value for p in model.metadata_props}
    with pytest.raises(CheckpointError, match="newer"):
        model_info_from_metadata({**meta, "pneumoscan_format": "99"})
    with pytest.raises(CheckpointError, match="malformed"):
        model_info_from_metadata({**meta, "preprocess": "{not json"})


def _run_without_torch(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", NO_TORCH_PRELUDE + code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_blocker_blocks_torch() -> None:
    out = _run_without_torch(
        "import json\n"
        "try:\n    import torch\n    ok = True\nexcept ImportError:\n    ok = False\n"
        "print(json.dumps({'imported': ok}))\n")
    assert out == {"imported": False}


def test_serving_path_modules_import_without_torch() -> None:
    """pneumoscan.data.*, the predictor, the ONNX backend, the server and the CLI parser need no torch."""
    out = _run_without_torch(
        "import importlib, json, pkgutil\n"
        "import pneumoscan.data\n"
        "names = [m.name for m in pkgutil.walk_packages(pneumoscan.data.__path__, 'pneumoscan.data.')]\n"
        "names += ['pneumoscan.inference.predictor', 'pneumoscan.export', 'pneumoscan.inference.onnx_backend',\n"
        "          'pneumoscan.serving.app', 'pneumoscan.serving.service', 'pneumoscan.serving.schemas',\n"
        "          'pneumoscan.serving.settings', 'pneumoscan.cli.serve', 'pneumoscan.cli.export']\n"
        "failed = {}\n"
        "for name in names:\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ImportError as err:\n        failed[name] = str(err)\n"
        "from pneumoscan.cli.main import build_parser\n"
        "build_parser()\n"
        "print(json.dumps({'failed': failed, 'count': len(names)}))\n")
    assert out["failed"] == {} and out["count"] > 10


def test_predicts_without_torch(tiny: TinyModel, tmp_path: Path, onnx_predictor: Predictor) -> None:
    """The slim install: torch cannot be imported, yet the ONNX model predicts (same number as in-process)."""
    image = write_png(tmp_path / "x.png", xray(7, 72))
    out = _run_without_torch(
        "import json\n"
        "from pneumoscan.inference.predictor import Predictor\n"
        f"p = Predictor.load({str(tiny.onnx)!r}, backend='onnx')\n"
        f"r = p.predict_sources([{str(image)!r}])[0]\n"
        "print(json.dumps({'p': r.probability, 'error': r.error}))\n")
    assert out["error"] is None
    want = onnx_predictor.predict_sources([str(image)])[0].probability
    assert out["p"] == pytest.approx(want, abs=1e-7)


def test_cli_predict_without_torch(tiny: TinyModel, tmp_path: Path) -> None:
    """``pneumoscan predict --backend onnx`` in the slim install (the CLI parser must load without torch)."""
    image = write_png(tmp_path / "x.png", xray(8, 64))
    done = subprocess.run([sys.executable, "-c", NO_TORCH_MAIN, "predict", "--backend", "onnx", "--checkpoint",
                           str(tiny.onnx), "--format", "json", str(image)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["error"] is None and 0.0 <= row["probability"] <= 1.0
