"""The Kermany-only model (``239bec14``, shipped until 2026-12-02) on all of ``rsna_adult`` by view: the figures
BENCHMARKS.md states for it, and the confounding warning.

That model never saw an adult, so all 353 images are outside its training data. The current default model was
trained on part of rsna_adult: its held-out within-view figures are checked in tests/inference/test_shipped_model.py.
Set ``PNEUMOSCAN_PREVIOUS_MODEL`` to that checkpoint (``git show 8219928:src/pneumoscan/weights/
pneumoscan-efficientnet_lite0-239bec14.pt > prev.pt``) to run this test. 353 adults, 1024 px JPEGs: slow.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumoscan.cli.main import main

# BENCHMARKS.md, "Evaluation by group": pooled and within-view ROC-AUC of the previous (Kermany-only) model.
STATED = {"pooled": 0.924, "PA": 0.828, "AP": 0.868}

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_shipped_model_by_view_on_rsna_adult(shared_data: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import os

    folder = shared_data / "rsna_adult"
    if not (folder / "manifest.csv").is_file():
        pytest.skip(f"{folder} not present")
    previous = os.environ.get("PNEUMOSCAN_PREVIOUS_MODEL")
    if not previous or not Path(previous).is_file():
        pytest.skip("set PNEUMOSCAN_PREVIOUS_MODEL to the Kermany-only checkpoint 239bec14 (see the module docstring)")
    out = tmp_path / "rsna-view"
    assert main(["evaluate", "--checkpoint", previous, "--data", str(folder), "--group-by", "view", "--output",
                 str(out), "--no-heatmaps", "--bootstrap", "500"]) == 0
    printed = capsys.readouterr().out
    assert "view = PA" in printed and "WARNING: the pooled ROC-AUC is confounded by view" in printed
    doc = json.loads((out / "metrics.json").read_text())
    views = doc["groups"]["by"]["view"]
    assert doc["n"] == 353 and set(views["groups"]) == {"AP", "PA"}
    assert round(doc["groups"]["pooled"]["roc_auc"], 3) == STATED["pooled"]
    for view in ("PA", "AP"):
        assert round(views["groups"][view]["roc_auc"], 3) == STATED[view]
    assert views["confounding"]["confounded"] is True
    # the per-view figure recomputed from predictions.csv with scikit-learn
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    for view in ("PA", "AP"):
        sel = [r for r in rows if r["view"] == view]
        y = np.array([int(r["label"]) for r in sel])
        p = np.array([float(r["probability"]) for r in sel])
        assert roc_auc_score(y, p) == pytest.approx(views["groups"][view]["roc_auc"])
