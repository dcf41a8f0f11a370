"""benchmarks/ensemble_tta.py: the TTA views, and candidates scored end to end on two tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import ensemble_tta
from pneumoscan.cli.main import main
from tests.benchmarks.test_group_eval import _manifest


def test_tta_views_are_the_image_its_mirror_a_zoom_and_two_rotations() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 40, 40), dtype=np.uint8)
    views = ensemble_tta.tta_views(images)
    assert len(views) == 5 and all(v.shape == images.shape and v.dtype == np.uint8 for v in views)
    assert np.array_equal(views[0], images)
    assert np.array_equal(views[1][:, :, 0], images[:, :, -1])
    assert all(not np.array_equal(v, images) for v in views[1:])
    assert not np.array_equal(views[3], views[4])  # +5° and −5° differ


def test_candidate_names() -> None:
    assert ensemble_tta.candidate_name(Path("runs/r224/best.pt")) == "r224"
    assert ensemble_tta.candidate_name(Path("w/pneumoscan-x-1234.pt")) == "pneumoscan-x-1234"


def test_single_tta_and_ensemble_candidates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path / "data")
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        assert main(["train", "--data", str(manifest), "--model", "cnn", "--image-size", "32", "--epochs", "1",
                     "--batch-size", "16", "--val-fraction", "0.25", "--test-fraction", "0.25", "--workers", "1",
                     "--seed", str(seed), "--cache-dir", str(tmp_path / "cache"), "--output", str(run)]) == 0
        runs.append(run)
    out = tmp_path / "ens.json"
    # Both checkpoints are scored on run0's val / test images (the script's contract: one reference splits.csv).
    assert ensemble_tta.main(["--splits", str(runs[0] / "splits.csv"), "--checkpoint",
                              *(str(r / "best.pt") for r in runs), "--bootstrap", "30",
                              "--cache-dir", str(tmp_path / "cache"), "--output", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    names = [r["candidate"] for r in results]
    assert names == ["run0", "run0 + TTA", "run1", "run1 + TTA", "ensemble of 2", "ensemble of 2 + TTA"]
    base = results[0]["val"]["kermany"]["roc_auc_minus_base"]
    assert base["low"] == pytest.approx(0.0) and base["high"] == pytest.approx(0.0)  # the base against itself
    for r in results:
        assert 0.0 <= r["threshold"] <= 1.0
        assert {"val", "test"} <= set(r) and "kermany" in r["test"]
    table = capsys.readouterr().out
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [f"| {n}" for n in names]
