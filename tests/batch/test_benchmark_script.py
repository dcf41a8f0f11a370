"""benchmarks/batch_throughput.py runs end to end on a tiny synthetic folder (slow: it starts a Ray cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import make_dataset_folder

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (REPO / "src" / "pneumoscan" / "weights" / "model.json").is_file(),
                                 reason="this build ships no model")]


def test_batch_throughput_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install \"pneumoscan[batch]\")")
    from benchmarks.batch_throughput import main

    data = make_dataset_folder(tmp_path / "d", {"train": 4, "test": 4}, size=48, fmt="jpeg")
    out = tmp_path / "bench.json"
    assert main(["--data", str(data), "--compute-seconds", "0.2", "--batch-size", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 16
    assert {"compute onnx", "compute torch", "decode (1 process)", "predict onnx", "predict torch",
            "batch (Ray, onnx)"} <= set(result["rows"])
    assert result["parity"]["compared"] == 16 and result["parity"]["batch_vs_predict_onnx_labels_differ"] == 0
    assert "| batch (Ray, onnx) |" in capsys.readouterr().out
