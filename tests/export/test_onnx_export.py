"""ONNX export (`export/onnx.py`): a single valid file with metadata, dynamic batch, calibrated probability output,
the CLI and verification."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pneumoscan.cli import export as cli_export
from pneumoscan.cli.main import main
from pneumoscan.export import onnx as export_mod
from pneumoscan.export.onnx import ExportError, export_onnx
from pneumoscan.inference.onnx_backend import model_info_from_metadata
from pneumoscan.inference.predictor import Predictor
from tests.serving.support import IMAGE_SIZE, TinyModel

TOL = 1e-4


def test_file_is_single_valid_model_with_metadata(tiny: TinyModel, torch_predictor: Predictor) -> None:
    assert not list(tiny.onnx.parent.glob("*.onnx.data")), "external data file written"
    assert not list(tiny.onnx.parent.glob(".*.tmp*")), "temporary file left behind"
    model = onnx.load(str(tiny.onnx))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    info = torch_predictor.info
    assert meta["model_name"] == info.name == "cnn"
    assert meta["model_version"] == info.version
    assert meta["pneumoscan_version"]
    assert float(meta["threshold"]) == info.threshold
    assert meta["threshold_rule"] == info.threshold_rule
    assert float(meta["temperature"]) == info.temperature
    assert json.loads(meta["operating_points"]) == info.operating_points
    assert json.loads(meta["class_names"]) == list(info.class_names)
    pre = json.loads(meta["preprocess"])
    assert (pre["image_size"], pre["mean"], pre["std"]) == (IMAGE_SIZE, info.preprocess.mean, info.preprocess.std)
    assert model_info_from_metadata(meta).preprocess == info.preprocess
    (inp,) = model.graph.input
    assert inp.name == "image"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value, "batch axis must be dynamic"
    assert [d.dim_value for d in dims[1:]] == [1, IMAGE_SIZE, IMAGE_SIZE]
    assert [o.name for o in model.graph.output] == ["logit", "probability", "features"]


def test_probability_output_is_calibrated(tiny: TinyModel, onnx_predictor: Predictor) -> None:
    session = ort.InferenceSession(str(tiny.onnx), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 1, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    logit, prob = session.run(["logit", "probability"], {"image": x})
    expected = 1 / (1 + np.exp(-logit.astype(np.float64) / onnx_predictor.info.temperature))
    np.testing.assert_allclose(prob, expected, atol=1e-6)


def test_cli_export_torchscript_exporter_and_opset(tiny: TinyModel, tmp_path: Path,
                                                   torch_predictor: Predictor, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sub" / "ts.onnx"
    code = main(["export", "--checkpoint", str(tiny.checkpoint), "--format", "onnx", "--output", str(out),
                 "--exporter", "torchscript", "--opset", "17"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    images = np.random.default_rng(5).integers(0, 256, size=(4, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    np.testing.assert_allclose(Predictor.load(out).probabilities_from_prepared(images),
                               torch_predictor.probabilities_from_prepared(images), atol=TOL, rtol=0)


def test_failed_verification_keeps_the_old_file(tiny: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ExportError, match="disagrees"):
        export_onnx(tiny.checkpoint, out, exporter="torchscript", tolerance=-1.0)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"], "temporary file left behind"


@pytest.mark.parametrize("argv, message", [
    (["--output", "{tmp}/m.txt"], "must end in .onnx"),
    (["--output", "{tmp}/m.onnx", "--opset", "7"], "opset must be between"),
])
def test_cli_bad_options(tiny: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                         message: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["export", "--checkpoint", str(tiny.checkpoint), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(bad), "--output", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "m.onnx").exists()


def test_cli_defaults_match_the_exporter() -> None:
    assert cli_export.EXPORTERS == export_mod.EXPORTERS
    assert cli_export.DEFAULT_OPSET == export_mod.DEFAULT_OPSET
    assert cli_export.DEFAULT_TOLERANCE == export_mod.DEFAULT_TOLERANCE
