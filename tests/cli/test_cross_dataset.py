"""The issue's "done when": a model trained on the Kermany set is evaluated on another source's layout, end to end.

A tiny Kermany download (``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``) is trained on with
``pneumoscan train --data kermany:DIR``; the model is then evaluated with ``pneumoscan evaluate`` on an NIH
ChestX-ray14 layout (PNG, official test list, real patient ids) and on an RSNA challenge layout (DICOM, some
JPEG-compressed, no split, no patient ids), with the full report and, for RSNA, Grad-CAM heatmaps read back from the
DICOM files. The slow test does the same on the real 224-px Kermany copy in ``shared/data``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from pneumoscan.cli.main import main
from pneumoscan.data.sources import load_records
from pneumoscan.evaluation.report import GALLERY_SIZE
from tests.training.test_multisource import make_kaggle, make_nih_layout, make_rsna_layout, train_cmd


@pytest.fixture(scope="module")
def kermany_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pneumoscan train --data kermany:DOWNLOAD`` on JPEGs in the Kaggle wrapper folder, 1 epoch."""
    base = tmp_path_factory.mktemp("cross")
    make_kaggle(base / "download" / "chest_xray", fmt="jpeg")
    run = base / "kermany-cnn"
    assert main(train_cmd(run, f"kermany:{base / 'download'}")) == 0
    return run


def evaluate(run: Path, spec: str, out: Path, *extra: str) -> dict:
    """``pneumoscan evaluate`` on the official test split (a source without one is used whole)."""
    args = ["evaluate", "--checkpoint", str(run / "best.pt"), "--data", spec, "--split", "test", "--output", str(out),
            "--bootstrap", "100", *extra]
    assert main(args) == 0
    for name in ("metrics.json", "report.html", "predictions.csv", "summary.md", "roc.png"):
        assert (out / name).is_file(), name
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def test_trained_on_kermany_only(kermany_run: Path) -> None:
    info = json.loads((kermany_run / "data.json").read_text(encoding="utf-8"))
    assert [s["label_policy"]["source"] for s in info["sources"]] == ["kermany"]


def test_evaluate_on_nih_layout(kermany_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"nih:{make_nih_layout(tmp_path / 'ChestX-ray14')}"
    doc = evaluate(kermany_run, spec, tmp_path / "eval-nih", "--no-heatmaps")
    test = [r for r in load_records(spec) if r.split == "test"]
    assert (doc["n"], doc["n_positive"]) == (len(test), sum(r.label == 1 for r in test))
    assert doc["data"]["spec"] == [spec] and "split 'test'" in doc["data"]["selection"]
    assert doc["patients_known"] is True and doc["data"]["all_patient_ids_known"] is True
    assert doc["n_patients"] == len({r.patient_id for r in test})
    assert doc["confidence_intervals"]["unit"] == "patient"
    assert doc["model"]["checkpoint"] == str(kermany_run / "best.pt")
    html = (tmp_path / "eval-nih" / "report.html").read_text(encoding="utf-8")
    assert spec in html and f"{doc['n_patients']} patients (from patient ids)" in html
    assert "patients unknown" not in html
    assert f"{len(test)} images, threshold" in capsys.readouterr().out


def test_evaluate_on_rsna_dicoms_with_heatmaps(kermany_run: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    spec = f"rsna:{make_rsna_layout(tmp_path / 'rsna', n_images=12)}"  # few: one Grad-CAM per error shown
    out = tmp_path / "eval-rsna"
    with caplog.at_level(logging.WARNING, logger="pneumoscan"):
        doc = evaluate(kermany_run, spec, out)
    assert "heatmap failed" not in caplog.text and "no thumbnail" not in caplog.text
    assert doc["n"] == len(load_records(spec)) == 12
    assert "no official split" in doc["data"]["selection"] and doc["data"]["n_unreadable"] == 0
    assert doc["patients_known"] is False and doc["data"]["all_patient_ids_known"] is False
    assert doc["confidence_intervals"]["unit"] == "image"
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and all(r["path"].endswith(".dcm") for r in rows)
    assert len({r["probability"] for r in rows}) > 1  # the DICOMs were decoded, not read as blanks
    html = (out / "report.html").read_text(encoding="utf-8")
    assert spec in html and "patients unknown" in html
    (_, fp), (fn, _) = doc["confusion_matrix"]
    gallery = html.split("Most confident errors", 1)[1]  # one Grad-CAM overlay per shown error
    assert gallery.count("data:image/png;base64,") == min(fp, GALLERY_SIZE) + min(fn, GALLERY_SIZE)


@pytest.mark.slow
@pytest.mark.realdata
def test_kermany224_cnn_trains_and_evaluates_on_official_test(shared_data: Path, tmp_path: Path) -> None:
    """1 epoch of the custom CNN at 64 px on 600 real training images, scored on the 624 official test images."""
    spec = f"kermany:{shared_data / 'kermany224'}"
    run = tmp_path / "run"
    assert main(["train", "--data", spec, "--model", "cnn", "--image-size", "64", "--epochs", "1",
                 "--max-train-images", "600", "--workers", "2", "--output", str(run),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs_run"] == 1 and "validation" in summary["threshold_rule"]
    doc = evaluate(run, spec, tmp_path / "test", "--no-heatmaps")
    assert (doc["n"], doc["n_positive"], doc["n_negative"]) == (624, 390, 234)
    assert doc["patients_known"] is True and doc["confidence_intervals"]["unit"] == "patient"
    assert doc["subgroups"]["subtype"].keys() >= {"bacteria", "virus", "normal"}
    # A smoke test of the real-data path, not a quality claim: one epoch only has to beat chance.
    assert doc["roc_auc"] > 0.5
