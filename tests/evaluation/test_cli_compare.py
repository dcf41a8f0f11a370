"""``pneumoscan compare`` on two predictions.csv files."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.cli import compare as compare_cli
from pneumoscan.errors import DataError


def _write(folder: Path, paths: list[str], labels: list[str], probs: np.ndarray, patients: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "predictions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "probability", "predicted", "patient_id"])
        for row in zip(paths, labels, probs, (probs >= 0.5).astype(int), patients, strict=True):
            w.writerow(row)
    return folder


@pytest.fixture()
def two_evals(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n = 120
    y = (rng.random(n) < 0.6).astype(int)
    paths = [f"/data/test/img{i:03d}.jpeg" for i in range(n)]
    patients = [f"person{i // 2}" for i in range(n)]
    pa = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1, n))))
    pb = 1 / (1 + np.exp(-(1.0 * y - 0.5 + rng.normal(0, 1, n))))
    a = _write(tmp_path / "eval_a", paths, ["PNEUMONIA" if v else "NORMAL" for v in y], pa, patients)
    order = rng.permutation(n)  # B lists the same images in another order, with numeric labels
    b = _write(tmp_path / "eval_b", [paths[i] for i in order], [str(y[i]) for i in order], pb[order],
               [patients[i] for i in order])
    return a, b


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    compare_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["compare", *argv])


def test_compare_prints_table_and_writes_json(two_evals: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_evals
    out = tmp_path / "cmp" / "result.json"
    assert compare_cli.run(_parse(str(a), str(b / "predictions.csv"), "--output", str(out), "--n-bootstrap",
                                  "300")) == 0
    text = capsys.readouterr().out
    assert "ROC-AUC" in text and "DeLong" in text and "bootstrap (patient)" in text and "60 patients" in text
    res = json.loads(out.read_text())
    assert res["n"] == 120 and res["n_patients"] == 60
    assert res["a"]["name"] == "eval_a" and res["b"]["name"] == "eval_b"
    assert res["auc_a"] > res["auc_b"] and 0 <= res["p_value"] <= 1
    assert res["bootstrap"]["unit"] == "patient"


def test_compare_through_main(two_evals: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from pneumoscan.cli.main import main

    a, b = two_evals
    assert main(["compare", str(a), str(b), "--n-bootstrap", "50"]) == 0
    (b / "predictions.csv").write_text("path,label,probability\n/data/other.jpeg,1,0.7\n")
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the two evaluations cover different images") and "\n" not in err


def test_different_image_sets_and_labels(two_evals: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = two_evals
    rows = (a / "predictions.csv").read_text().splitlines()
    short = tmp_path / "short"
    short.mkdir()
    (short / "predictions.csv").write_text("\n".join(rows[:-3]) + "\n")
    with pytest.raises(DataError, match="3 only in"):
        compare_cli.run(_parse(str(a), str(short)))
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    first = rows[1].split(",")
    first[1] = "NORMAL" if first[1] == "PNEUMONIA" else "PNEUMONIA"
    (flipped / "predictions.csv").write_text("\n".join([rows[0], ",".join(first), *rows[2:]]) + "\n")
    with pytest.raises(DataError, match="different true labels"):
        compare_cli.run(_parse(str(a), str(flipped)))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        compare_cli.load_predictions(str(tmp_path / "missing"))
    (tmp_path / "p.csv").write_text("path,label\nx,1\n")
    with pytest.raises(DataError, match="missing column"):
        compare_cli.load_predictions(str(tmp_path / "p.csv"))
    (tmp_path / "q.csv").write_text("path,label,probability\nx,1,0.5\nx,1,0.6\n")
    with pytest.raises(DataError, match="more than once"):
        compare_cli.load_predictions(str(tmp_path / "q.csv"))
