"""End to end on the session's tiny model: `pneumoscan calibrate` adds a gate and populations to a checkpoint, and
`predict` (CLI, both backends) and `POST /v1/predict` report `status`, `reason` and `population` from it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscan.cli.main import main
from tests.serving.support import NO_TORCH_MAIN, TinyModel, png_bytes, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return tiny_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def gated(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gated")
    target = out / "gated.pt"
    report = out / "report.json"
    assert main(["calibrate", "--checkpoint", str(tiny.checkpoint), "--output", str(target), "--report",
                 str(report)]) == 0
    return target, json.loads(report.read_text())


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pneumoscan.inference.gate_probes import colour_photo_png

    folder = tmp_path_factory.mktemp("gate-images")
    paths = {"xray": folder / "xray.png", "black": folder / "black.png", "noise": folder / "noise.png",
             "photo": folder / "photo.png"}
    paths["xray"].write_bytes(png_bytes(3, size=64))
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(paths["black"])
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)).save(paths["noise"])
    paths["photo"].write_bytes(colour_photo_png())
    return paths


def test_calibrate_writes_gate_and_populations_and_keeps_the_rest(tiny: TinyModel, gated: tuple[Path, dict]) -> None:
    import torch

    target, report = gated
    before = torch.load(tiny.checkpoint, weights_only=True)
    after = torch.load(target, weights_only=True)  # plain data: the safe loader reads it
    added = {"gate", "populations", "default_population"}
    assert added <= set(after) and set(after) - added == set(before) - added
    assert not added & set(before)  # 3 validation images: too few for training to fit a gate by itself
    for key in ("threshold", "temperature", "threshold_rule", "operating_points", "preprocess"):
        assert after[key] == before[key]
    for name, tensor in before["state_dict"].items():
        assert torch.equal(tensor, after["state_dict"][name])
    gate = after["gate"]
    assert gate["threshold"] > 0 and len(gate["feature_mean"]) == 256  # the cnn's penultimate width
    assert "validation" in gate and "splits.csv" in gate["fitted_on"]["splits"]
    # the tiny data set is a 'folder' with Kermany-style names but not under a kermany folder: only the pooled one
    assert after["default_population"] in after["populations"]
    assert report["val_refused"]["n"] == gate["fitted_on"]["val_images"]
    assert {"photo", "black", "noise", "inverted", "rotated_90", "upside_down", "cropped"} <= set(
        report["probes_caught"])
    for kind in ("black", "white", "uniform_grey", "noise"):  # the image checks, whatever the model
        assert report["probes_caught"][kind]["caught_rate"] == 1.0


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).stem: r for r in csv.DictReader(path.open())}


def test_predict_cli_reports_status_reason_and_population(gated: tuple[Path, dict], images: dict[str, Path],
                                                          tmp_path: Path) -> None:
    target, _ = gated
    out = tmp_path / "p.csv"
    assert main(["predict", *map(str, images.values()), "--checkpoint", str(target), "--format", "csv",
                 "--output", str(out)]) == 0
    rows = _rows(out)
    import torch

    state = torch.load(target, weights_only=True)
    for name in ("black", "noise", "photo"):
        r = rows[name]
        assert r["status"] == "out_of_scope" and r["label"] == "" and r["reason"], r
        assert 0.0 <= float(r["probability"]) <= 1.0  # still given, marked by the status
    # (the synthetic training images are noisy themselves, so the fitted noise limit is loose: the distribution
    # check or the noise check refuses the noise image, whichever comes first)
    assert "blank" in rows["black"]["reason"]
    assert "colour" in rows["photo"]["reason"]
    assert all(r["population"] == state["default_population"] for r in rows.values())
    table = tmp_path / "t.txt"
    assert main(["predict", str(images["black"]), "--checkpoint", str(target), "--output", str(table)]) == 0
    text = table.read_text()
    assert "OUT OF SCOPE" in text and f"population {state['default_population']}" in text
    js = tmp_path / "p.json"
    assert main(["predict", str(images["xray"]), "--checkpoint", str(target), "--format", "json", "--output",
                 str(js)]) == 0
    (row,) = json.loads(js.read_text())
    assert row["status"] in ("ok", "out_of_scope") and row["gate"]["distribution_score"] is not None


def test_unknown_population_is_a_one_line_error(gated: tuple[Path, dict], images: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    target, _ = gated
    assert main(["predict", str(images["xray"]), "--checkpoint", str(target), "--population", "martian"]) == 2
    assert "unknown population 'martian'" in capsys.readouterr().err


def test_onnx_export_carries_the_gate_and_works_without_torch(gated: tuple[Path, dict], images: dict[str, Path],
                                                              tmp_path: Path) -> None:
    from pneumoscan.export.onnx import export_onnx
    from pneumoscan.inference.predictor import Predictor

    target, _ = gated
    onnx_path = tmp_path / "gated.onnx"
    export_onnx(target, onnx_path)
    torch_pred = Predictor.load(target, precision="fp32")
    onnx_pred = Predictor.load(onnx_path)
    assert onnx_pred.info.populations == torch_pred.info.populations
    assert onnx_pred.info.default_population == torch_pred.info.default_population
    assert onnx_pred.gate.fitted and onnx_pred.gate.threshold == pytest.approx(torch_pred.gate.threshold)
    paths = [str(p) for p in images.values()]
    a, b = torch_pred.predict_sources(paths), onnx_pred.predict_sources(paths)
    assert [p.status for p in a] == [p.status for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pb.probability == pytest.approx(pa.probability, abs=1e-4)
        assert pb.gate["distribution_score"] == pytest.approx(pa.gate["distribution_score"], rel=1e-3, abs=1e-3)
    # The slim install (no torch) predicts with the gate too.
    out = tmp_path / "slim.csv"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_MAIN, "predict", *paths, "--checkpoint", str(onnx_path),
                           "--backend", "onnx", "--format", "csv", "--output", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    slim = _rows(out)
    assert slim["black"]["status"] == "out_of_scope" and slim["photo"]["status"] == "out_of_scope"
    assert slim["xray"]["distribution_score"] != ""


def test_api_reports_gate_and_lists_populations(gated: tuple[Path, dict], images: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from pneumoscan.serving.app import create_app
    from pneumoscan.serving.settings import ServeSettings

    target, _ = gated
    with TestClient(create_app(ServeSettings(checkpoint=target, precision="fp32"))) as client:
        model = client.get("/v1/model").json()
        default = model["default_population"]
        assert default in model["populations"] and model["gate"]["distribution_check"] is True
        files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in images.values()]
        body = client.post("/v1/predict", files=files).json()
        by = {Path(r["filename"]).stem: r for r in body["results"]}
        for name in ("black", "noise", "photo"):
            assert by[name]["status"] == "out_of_scope" and by[name]["label"] is None and by[name]["reason"]
            assert by[name]["probability"] is not None
        assert all(r["population"] == default for r in body["results"])
        single = client.post("/v1/predict", files=[("files", ("black.png", images["black"].read_bytes()))])
        assert single.status_code == 200 and single.json()["results"][0]["status"] == "out_of_scope"
        bad = client.post("/v1/predict?population=martian", files=files[:1])
        assert bad.status_code == 400 and "unknown population" in bad.json()["detail"]
        chosen = client.post(f"/v1/predict?population={default}", files=files[:1])
        assert chosen.status_code == 200 and chosen.json()["results"][0]["population"] == default


def test_old_checkpoint_without_gate_still_gets_image_checks(tiny: TinyModel, images: dict[str, Path],
                                                            tmp_path: Path) -> None:
    import torch

    from pneumoscan.inference.predictor import Predictor

    state = torch.load(tiny.checkpoint, weights_only=True)
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in state.items() if k not in ("gate", "populations", "default_population")}, old)
    pred = Predictor.load(old, precision="fp32")
    assert not pred.gate.fitted and pred.population == "all" and pred.threshold == pred.info.threshold
    black, xray = pred.predict_sources([str(images["black"]), str(images["xray"])])
    assert black.status == "out_of_scope" and black.label is None
    assert xray.status == "ok" and xray.label is not None and xray.gate["distribution_score"] is None
    (err,) = pred.predict_sources([b"garbage"])
    assert err.status == "error" and err.error and err.probability is None


def test_training_fits_the_gate_when_validation_is_large_enough(tmp_path: Path) -> None:
    """With >= 50 validation images, `pneumoscan train` ends with a fitted gate and a gate_report.json."""
    import torch

    from tests.fixtures import make_dataset_folder

    data = make_dataset_folder(tmp_path / "data", {"train": 180, "test": 2}, size=32, seed=3)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "cnn", "--image-size", "32", "--epochs", "1",
                 "--batch-size", "32", "--workers", "1", "--output", str(run), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["data"]["val_images"] >= 50
    assert state["gate"]["threshold"] > 0 and state["default_population"] in state["populations"]
    report = json.loads((run / "gate_report.json").read_text())
    assert report["probes_caught"]["black"]["caught_rate"] == 1.0


def test_calibrate_with_onnx_features_gives_the_same_gate(tiny: TinyModel, gated: tuple[Path, dict],
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    target, _ = gated
    via_onnx = tmp_path / "onnx-gated.pt"
    assert main(["calibrate", "--checkpoint", str(tiny.checkpoint), "--onnx", str(tiny.onnx), "--output",
                 str(via_onnx)]) == 0
    a = torch.load(target, weights_only=True)["gate"]
    b = torch.load(via_onnx, weights_only=True)["gate"]
    assert b["threshold"] == pytest.approx(a["threshold"], rel=1e-3)
    # an export of another checkpoint is refused
    assert main(["calibrate", "--checkpoint", str(target), "--onnx", str(tiny.onnx), "--output",
                 str(tmp_path / "x.pt")]) == 2
    assert "is an export of" in capsys.readouterr().err
