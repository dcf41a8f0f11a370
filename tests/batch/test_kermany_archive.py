"""The done-criterion of issue 16 on the real data: `pneumoscan batch` scores the official Kermany test split into
Parquet, and `pneumoscan evaluate --predictions` reproduces the model card's figures from it.

Slow (a local Ray cluster and 624 images): ``pytest -m slow tests/batch/test_kermany_archive.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pneumoscan.cli.main import main

REPO = Path(__file__).resolve().parents[2]
MODEL_JSON = REPO / "src" / "pneumoscan" / "weights" / "model.json"
pytestmark = [pytest.mark.slow, pytest.mark.realdata,
              pytest.mark.skipif(not MODEL_JSON.is_file(), reason="this build ships no model")]


def test_batch_then_evaluate_reproduces_the_model_card(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install \"pneumoscan[batch]\")")
    out = tmp_path / "test.parquet"
    assert main(["batch", "--input", str(shared_data / "kermany224" / "test"), "--output", str(out),
                 "--num-cpus", "2", "--no-progress"]) == 0
    assert main(["evaluate", "--predictions", str(out), "--output", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    stated = json.loads(MODEL_JSON.read_text())["test_metrics"]
    assert metrics["n"] == 624
    for key in ("accuracy", "roc_auc", "recall", "specificity"):
        assert round(metrics[key], 3) == round(stated[key]["value"], 3), key
