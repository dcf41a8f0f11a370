"""The model shipped inside the package: works offline with no --checkpoint, and reproduces its stated metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.cli.main import main

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "src" / "pneumoscan" / "weights"
pytestmark = pytest.mark.skipif(not (WEIGHTS / "model.json").is_file(), reason="this build ships no model")


def _model_json() -> dict:
    return json.loads((WEIGHTS / "model.json").read_text())


def test_shipped_weights_are_small_and_named_by_hash() -> None:
    info = _model_json()
    path = WEIGHTS / info["checkpoint"]
    assert path.stat().st_size <= 25 * 1024 * 1024
    from pneumoscan.models.checkpoint import file_digest

    assert info["checkpoint"].endswith(f"-{file_digest(path, 8)}.pt")


def test_predict_without_checkpoint_on_examples(tmp_path: Path) -> None:
    images = sorted((REPO / "examples" / "xrays" / "test").rglob("*.jpeg"))
    out = tmp_path / "p.csv"
    assert main(["predict", *map(str, images), "--format", "csv", "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    info = _model_json()
    assert len(rows) == len(images) == 20
    assert all(r["model"] == info["model"] for r in rows)
    assert all(float(r["threshold"]) == pytest.approx(info["threshold"]) for r in rows)


@pytest.mark.realdata
def test_shipped_model_reproduces_its_test_metrics(shared_data: Path, tmp_path: Path) -> None:
    """`pneumoscan predict` on the 624 official test images gives the accuracy and ROC-AUC the model card states."""
    from sklearn.metrics import roc_auc_score

    test = shared_data / "kermany224" / "test"
    out = tmp_path / "p.csv"
    assert main(["predict", str(test), "--format", "csv", "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 624
    y = np.array([1 if "/PNEUMONIA/" in r["path"] else 0 for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    # The competence gate leaves the label of a refused image empty; the stated metrics are the model's own, at its
    # threshold, on every test image (the gate's refusals are reported separately, and must stay rare here).
    threshold = float(rows[0]["threshold"])
    pred = p >= threshold
    labelled = [r for r in rows if r["status"] == "ok"]
    assert all((r["label"] == "PNEUMONIA") == (float(r["probability"]) >= threshold) for r in labelled)
    assert sum(r["status"] == "out_of_scope" for r in rows) <= 0.02 * len(rows)
    stated = _model_json()["test_metrics"]
    assert round(float((pred == y).mean()), 3) == round(stated["accuracy"]["value"], 3)
    assert round(float(roc_auc_score(y, p)), 3) == round(stated["roc_auc"]["value"], 3)


def _heldout(name: str) -> dict:
    held = _model_json().get("heldout_test", {}).get(name)
    if not held:
        pytest.skip(f"model.json lists no held-out {name} test images")
    return held


def _predict_probs(paths: list[Path], tmp_path: Path) -> dict[str, dict[str, str]]:
    out = tmp_path / "held.csv"
    assert main(["predict", *map(str, paths), "--format", "csv", "--output", str(out)]) == 0
    return {Path(r["path"]).name: r for r in csv.DictReader(out.open())}


@pytest.mark.realdata
@pytest.mark.slow
def test_shipped_model_reproduces_its_rsna_adult_within_view_figures(shared_data: Path, tmp_path: Path) -> None:
    """Within PA and within AP of the held-out rsna_adult patients, predict gives the ROC-AUC the card states."""
    from sklearn.metrics import roc_auc_score

    held = _heldout("rsna_adult")
    root = shared_data / "rsna_adult"
    with (root / "manifest.csv").open(newline="") as fh:
        manifest = {r["patient_id"]: r for r in csv.DictReader(fh)}
    rows = [manifest[p] for p in held["patient_ids"]]
    assert len(rows) == held["n"]
    preds = _predict_probs([root / r["path"] for r in rows], tmp_path)
    for view, stated in held["within_view"].items():
        sub = [r for r in rows if r["view"] == view]
        y = np.array([r["label"] == "PNEUMONIA" for r in sub], dtype=int)
        p = np.array([float(preds[Path(r["path"]).name]["probability"]) for r in sub])
        assert len(sub) == stated["n"]
        assert round(float(roc_auc_score(y, p)), 3) == round(stated["roc_auc"], 3), view


@pytest.mark.realdata
@pytest.mark.slow
def test_shipped_model_reproduces_its_lung_masks_normal_specificity(shared_data: Path, tmp_path: Path) -> None:
    """On the held-out lung_masks normals (adults, two more hospitals) predict gives the stated specificity.

    The stated figure measures the model (as ``evaluate`` does, every image scored at the threshold); the competence
    gate may refuse a few of these images, which then get no label: they are counted by probability here, and the
    refusals are bounded separately (MODEL_CARD.md: 2 of 90 when measured)."""
    held = _heldout("lung_masks")
    paths = [shared_data / "lung_masks" / "images" / f"{stem}.jpg" for stem in held["patient_ids"]]
    preds = _predict_probs(paths, tmp_path)
    normal = sum(float(preds[p.name]["probability"]) < float(preds[p.name]["threshold"]) for p in paths)
    assert round(normal / len(paths), 3) == round(held["specificity"], 3)
    refused = sum(preds[p.name]["status"] == "out_of_scope" for p in paths)
    assert refused <= 0.05 * len(paths)
