"""benchmarks/group_eval.py and ablation_table.py end to end: a tiny run on a synthetic two-source manifest with
views, then per-source and within-view figures on its carved test split and the ablation table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks import ablation_table, group_eval
from pneumoscan.cli.main import main
from tests.fixtures import make_xray_like, write_png

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _manifest(root: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["path,label,patient_id,source,view"]
    for i in range(64):
        positive = i % 2 == 1
        source, view = ("kermany", "") if i < 32 else ("rsna_adult", "AP" if i % 4 < 2 else "PA")
        write_png(root / f"{i}.png", make_xray_like(rng, 40, positive))
        lines.append(f"{i}.png,{'PNEUMONIA' if positive else 'NORMAL'},p{i},{source},{view}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def test_group_eval_reports_sources_and_views_and_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--data", str(manifest), "--model", "cnn", "--image-size", "32", "--epochs", "1",
                 "--batch-size", "16", "--val-fraction", "0.25", "--test-fraction", "0.25", "--workers", "1",
                 "--select-by", "worst_group", "--cache-dir", str(tmp_path / "cache"), "--output", str(run)]) == 0
    out = {}
    for split in ("val", "test"):
        out[split] = tmp_path / f"{split}.json"
        assert group_eval.main(["--splits", str(run / "splits.csv"), "--split", split, "--checkpoint",
                                str(run / "best.pt"), "--bootstrap", "50", "--cache-dir", str(tmp_path / "cache"),
                                "--output", str(out[split])]) == 0
    result = json.loads(out["test"].read_text())["results"][0]
    groups = result["groups"]
    assert {"kermany", "rsna_adult"} <= set(groups)
    assert groups["kermany"]["n"] + groups["rsna_adult"]["n"] == sum(
        1 for line in (run / "splits.csv").read_text().splitlines()[1:] if ",test," in line)
    views = [g for g in ("rsna_adult PA", "rsna_adult AP") if g in groups]
    assert views and all(groups[v]["n"] < groups["rsna_adult"]["n"] for v in views)
    assert 0.0 <= groups["kermany"]["accuracy"]["value"] <= 1.0
    capsys.readouterr()
    assert ablation_table.main([str(out["val"]), str(out["test"])]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| run | **val worst group**") and table[2].startswith("| run |")
