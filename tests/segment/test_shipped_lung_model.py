"""The lung model shipped inside the package: named by its hash, licensed, ONNX twin, and its held-out Dice figures
(lung.json and BENCHMARKS.md) reproduced by ``pneumoscan segment evaluate`` on ../shared/data/lung_masks."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from pneumoscan.cli.main import main

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "src" / "pneumoscan" / "weights"
DATA = REPO.parent / "shared" / "data" / "lung_masks"
pytestmark = pytest.mark.skipif(not (WEIGHTS / "lung.json").is_file(), reason="this build ships no lung model")


def _info() -> dict:
    return json.loads((WEIGHTS / "lung.json").read_text())


def test_shipped_lung_model_is_small_hashed_and_licensed() -> None:
    info = _info()
    weights = WEIGHTS / info["weights"]
    assert weights.stat().st_size < 5 * 1024 * 1024 and (WEIGHTS / info["onnx"]).is_file()
    assert info["name"] == f"lung-unet-{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}"
    assert "CC BY-NC-SA 4.0" in info["licence"]
    assert any("Jaeger" in c for c in info["citations"]) and any("Stirenko" in c for c in info["citations"])


def test_installed_lung_model_is_the_shipped_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from pneumoscan.inference.lungs import load_lung_segmenter, shipped_lung_name

    monkeypatch.delenv("PNEUMOSCAN_LUNG_MODEL_DIR", raising=False)
    assert shipped_lung_name() == _info()["name"]
    assert load_lung_segmenter().name == _info()["name"]


@pytest.mark.realdata
@pytest.mark.slow  # ~10-40 s: 106 images decoded and segmented
@pytest.mark.skipif(not (DATA / "manifest.csv").is_file(), reason="needs ../shared/data/lung_masks")
def test_held_out_dice_matches_lung_json_and_benchmarks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PNEUMOSCAN_LUNG_MODEL_DIR", raising=False)
    assert main(["segment", "evaluate", "--data", str(DATA), "--output", str(tmp_path)]) == 0
    got = json.loads((tmp_path / "lung_metrics.json").read_text())
    recorded = _info()["held_out"]
    assert got["split"] == recorded["split"] == "test"
    benchmarks = (REPO / "BENCHMARKS.md").read_text()
    section = benchmarks[benchmarks.index("Lung-field segmentation"):]
    for source, s in [*got["per_source"].items(), ("pooled", got["pooled"])]:
        want = recorded["pooled"] if source == "pooled" else recorded["per_source"][source]
        assert s["n"] == want["n"]
        assert s["dice_mean"] == pytest.approx(want["dice_mean"], abs=1e-4)
        assert s["iou_mean"] == pytest.approx(want["iou_mean"], abs=1e-4)
        row = re.search(rf"^\| {source} \| {s['n']} \| ([0-9.]+) \|", section, re.M)
        assert row, f"no BENCHMARKS row for {source}"
        assert float(row.group(1)) == pytest.approx(s["dice_mean"], abs=6e-4)
