"""The shipped model on ``rsna_adult`` by view: the figures MODEL_CARD.md states, and the confounding warning.

353 adults, 1024 px JPEGs: about a minute or more on a 2-core CPU, hence slow.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumoscan.cli.main import main

# MODEL_CARD.md, "Adults (rsna_adult), not trained on": pooled and within-view ROC-AUC of the shipped model.
STATED = {"pooled": 0.924, "PA": 0.828, "AP": 0.868}

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_shipped_model_by_view_on_rsna_adult(shared_data: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_data / "rsna_adult"
    if not (folder / "manifest.csv").is_file():
        pytest.skip(f"{folder} not present")
    out = tmp_path / "rsna-view"
    assert main(["evaluate", "--data", str(folder), "--group-by", "view", "--output", str(out), "--no-heatmaps",
                 "--bootstrap", "500"]) == 0
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
