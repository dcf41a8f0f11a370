"""``--backend auto`` (the default of predict, serve and batch): ONNX Runtime where it gives the same answers."""

from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path

import pytest

from pneumoscan.cli.main import main
from pneumoscan.inference.predictor import Predictor, resolve_backend

REPO = Path(__file__).resolve().parents[2]
SHIPPED = (REPO / "src" / "pneumoscan" / "weights" / "model.json").is_file()
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


def test_resolve_backend_rules() -> None:
    assert resolve_backend("torch") == "torch" and resolve_backend("onnx", "x.pt") == "onnx"  # explicit wins
    assert resolve_backend("auto", "model.onnx") == "onnx"
    assert resolve_backend("auto", "runs/r/best.pt") == "torch"
    assert resolve_backend("auto", None, heatmaps=True) == "torch"  # Grad-CAM needs the torch model
    assert resolve_backend("auto", None, precision="bf16") == "torch"  # an autocast only torch has


@pytest.mark.skipif(not (SHIPPED and HAS_ORT), reason="needs the shipped model and onnxruntime")
def test_shipped_model_defaults_to_onnx_with_torch_labels(tmp_path: Path) -> None:
    assert resolve_backend("auto") == "onnx" and Predictor.load().info.backend == "onnx"
    images = sorted((REPO / "examples" / "xrays" / "test").rglob("*.jpeg"))
    rows = {}
    for backend in ("auto", "torch"):
        out = tmp_path / f"{backend}.csv"
        assert main(["predict", *map(str, images), "--backend", backend, "--format", "csv", "-o", str(out)]) == 0
        rows[backend] = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows["auto"]] == [r["label"] for r in rows["torch"]]
    assert max(abs(float(a["probability"]) - float(t["probability"]))
               for a, t in zip(rows["auto"], rows["torch"], strict=True)) < 1e-4


@pytest.mark.skipif(not (SHIPPED and HAS_ORT), reason="needs the shipped model and onnxruntime")
def test_serve_settings_resolve_auto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("pydantic_settings", reason="the serve extra is not installed")
    from pneumoscan.cli.serve import settings_from_args

    for var in ("PNEUMOSCAN_BACKEND", "PNEUMOSCAN_CHECKPOINT", "PNEUMOSCAN_PRECISION"):
        monkeypatch.delenv(var, raising=False)
    assert settings_from_args(argparse.Namespace()).backend == "onnx"
    assert settings_from_args(argparse.Namespace(checkpoint=tmp_path / "best.pt")).backend == "torch"
    assert settings_from_args(argparse.Namespace(backend="torch")).backend == "torch"
    monkeypatch.setenv("PNEUMOSCAN_BACKEND", "torch")  # the environment still decides when no option is given
    assert settings_from_args(argparse.Namespace()).backend == "torch"
