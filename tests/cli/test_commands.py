"""The CLI as a user runs it: evaluate, predict, models, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pneumoscan.cli.main import main
from tests.fixtures import write_dicom, write_png

METRIC_KEYS = {"accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "confusion_matrix",
               "threshold"}


def test_models_lists_required_architectures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("cnn", "vgg16", "resnet18", "resnet50", "densenet121", "inception_v3", "efficientnet_b0"):
        assert name in out


def test_console_script_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "pneumoscan.cli.main", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for cmd in ("train", "evaluate", "predict", "models"):
        assert cmd in proc.stdout


def test_evaluate_writes_metrics_and_report(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = trained
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--split", "test", "--output", str(out),
                 "--bootstrap", "200"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n"] == 16  # the 8 + 8 test images, nothing else
    cm = metrics["confusion_matrix"]
    assert sum(map(sum, cm)) == 16
    import torch

    assert metrics["threshold"] == pytest.approx(torch.load(ckpt, weights_only=True)["threshold"])
    for name in ("roc.png", "pr.png", "summary.md", "report.html", "predictions.csv"):
        assert (out / name).is_file(), name
    assert "roc_auc" in metrics["confidence_intervals"]["metrics"]


def test_evaluate_split_missing(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, ckpt = trained
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--split", "holdout",
                 "--output", str(tmp_path / "e")]) == 2
    assert "no images in split 'holdout'" in capsys.readouterr().err


def test_evaluate_bad_checkpoint(trained: tuple[Path, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = trained
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "--checkpoint", str(bad), "--data", str(data), "--output", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_predict_formats(trained: tuple[Path, Path], tmp_path: Path, fmt: str) -> None:
    data, ckpt = trained
    images = sorted((data / "test" / "PNEUMONIA").glob("*.png"))[:3]
    out = tmp_path / f"pred.{fmt}"
    assert main(["predict", *map(str, images), "--checkpoint", str(ckpt), "--format", fmt, "--output", str(out)]) == 0
    text = out.read_text()
    if fmt == "csv":
        rows = list(csv.DictReader(text.splitlines()))
        assert [r["path"] for r in rows] == list(map(str, images))
        assert {"path", "probability", "label", "threshold"} <= set(rows[0])
        assert all(0 <= float(r["probability"]) <= 1 and r["label"] in ("NORMAL", "PNEUMONIA") for r in rows)
    elif fmt == "json":
        rows = json.loads(text)
        assert len(rows) == 3 and all(r["label"] == ("PNEUMONIA" if r["probability"] >= r["threshold"] else "NORMAL")
                                      for r in rows)
    else:
        assert "P(pneumonia)" in text and "threshold" in text


def test_predict_folder_glob_dicom_and_bad_file(trained: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    _, ckpt = trained
    folder = tmp_path / "in"
    write_png(folder / "a.png", (40, 40))
    write_dicom(folder / "b.dcm", np.full((40, 40), 100, dtype=np.uint16), bits_stored=12,
                photometric="MONOCHROME1")
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "p.json"
    rc = main(["predict", str(folder), str(tmp_path / "in" / "*.png"), "--checkpoint", str(ckpt),
               "--format", "json", "--output", str(out)])
    assert rc == 1, "some files failed -> exit code 1"
    rows = {Path(r["path"]).name: r for r in json.loads(out.read_text())}
    assert set(rows) == {"a.png", "b.dcm", "broken.jpeg"}
    assert rows["b.dcm"]["probability"] is not None
    assert rows["broken.jpeg"]["probability"] is None and "broken.jpeg" in rows["broken.jpeg"]["error"]
    assert "1 of 3 images could not be read" in capsys.readouterr().err


def test_predict_same_number_as_evaluate(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = trained
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--output", str(out),
                 "--bootstrap", "50", "--no-heatmaps"]) == 0
    ev = {r["path"]: float(r["probability"]) for r in csv.DictReader((out / "predictions.csv").open())}
    path = sorted(ev)[0]
    pred = tmp_path / "p.json"
    assert main(["predict", path, "--checkpoint", str(ckpt), "--format", "json", "--output", str(pred)]) == 0
    assert json.loads(pred.read_text())[0]["probability"] == pytest.approx(ev[path], abs=1e-6)


def test_predict_explain_writes_heatmaps(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    data, ckpt = trained
    image = sorted((data / "test" / "NORMAL").glob("*.png"))[0]
    heat = tmp_path / "heat"
    assert main(["predict", str(image), "--checkpoint", str(ckpt), "--explain", str(heat),
                 "--output", str(tmp_path / "p.csv"), "--format", "csv"]) == 0
    pngs = list(heat.glob("*.png"))
    assert len(pngs) == 1
    with Image.open(pngs[0]) as im:
        assert im.mode == "RGB" and im.size == (32, 32)


def test_gradcam_leaves_no_hooks(trained: tuple[Path, Path]) -> None:
    import numpy as np

    from pneumoscan.explain.gradcam import explain_prepared
    from pneumoscan.inference.predictor import Predictor

    _, ckpt = trained
    predictor = Predictor.from_checkpoint(ckpt)
    heat = explain_prepared(predictor, np.full((32, 32), 120, dtype=np.uint8))
    assert heat.shape == (32, 32) and 0.0 <= heat.min() and heat.max() <= 1.0
    for module in predictor.model.modules():
        assert not module._forward_hooks and not module._backward_hooks
    assert not predictor.model.training


def test_pretrained_offline_without_file_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fixtures import make_dataset_folder

    data = make_dataset_folder(tmp_path / "d", {"train": 24, "test": 2}, size=32)
    rc = main(["train", "--data", str(data), "--model", "resnet18", "--pretrained", "--image-size", "32",
               "--epochs", "1", "--output", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--weights FILE" in err and len(err.strip().splitlines()) == 1
