"""``--lung-crop`` end to end: the training cache and the predictor crop identically, the checkpoint records it,
predictions report per image whether lungs were found, and models without the option are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.cli.main import main
from pneumoscan.data.io import read_image
from tests.fixtures import make_dataset_folder, write_png


@pytest.fixture(scope="module")
def chest_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset_folder(tmp_path_factory.mktemp("chest") / "data", {"train": 8, "val": 4, "test": 2},
                               size=64, seed=3)


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--model", "cnn", "--image-size", "32", "--epochs", "1",
                 "--batch-size", "8", "--output", str(out), "--cache-dir", str(out.parent / "cache"),
                 "--workers", "1", *extra])


def test_train_and_predict_with_lung_crop(tiny_lung_model: Path, chest_data: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pneumoscan.data.cache import load_or_build
    from pneumoscan.inference.lungs import shipped_lung_name
    from pneumoscan.inference.predictor import Predictor
    from pneumoscan.training.checkpoint import load_checkpoint

    run = tmp_path / "run"
    assert _train(chest_data, run, "--lung-crop", "--lung-margin", "0.15", "--lung-dim", "0.3") == 0
    pre = load_checkpoint(run / "best.pt")["preprocess"]
    assert pre["lung_crop"] is True and pre["lung_margin"] == 0.15 and pre["lung_dim"] == 0.3
    assert pre["lung_model"] == shipped_lung_name()
    info = json.loads((run / "data.json").read_text())["lung_crop"]
    assert info["train"]["n"] > 0 and info["lung_model"] == pre["lung_model"]

    # The predictor prepares exactly the pixels the training cache holds.
    predictor = Predictor.from_checkpoint(run / "best.pt")
    splits = [line.split(",") for line in (run / "splits.csv").read_text().splitlines()[1:]]
    header = (run / "splits.csv").read_text().splitlines()[0].split(",")
    col_path, col_split = header.index("path"), header.index("split")
    train_paths = [row[col_path] for row in splits if row[col_split] == "train"]
    cached = load_or_build(train_paths, 32, tmp_path / "cache", 1, predictor.info.preprocess)
    for i in range(3):
        np.testing.assert_array_equal(predictor.prepare(read_image(train_paths[i])), cached[i])
    uncropped = load_or_build(train_paths, 32, tmp_path / "cache", 1)
    assert not np.array_equal(uncropped[:3], cached[:3])  # the lungs were found and cropped to

    capsys.readouterr()
    test_dir = chest_data / "test"
    blank = write_png(tmp_path / "blank.png", np.zeros((64, 64), np.uint8))
    assert main(["predict", str(test_dir), str(blank), "--checkpoint", str(run / "best.pt"), "--format",
                 "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["blank.png"]["lungs"]["lungs_found"] is False
    assert "full image used" in by_name["blank.png"]["lungs"]["lung_fallback"]
    found = [r for r in rows if r["path"] != str(blank)]
    assert found and all(r["lungs"]["lungs_found"] for r in found)
    assert main(["predict", str(blank), "--checkpoint", str(run / "best.pt")]) == 0
    assert "no lungs found" in capsys.readouterr().out


def test_without_lung_crop_nothing_changes(chest_data: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pneumoscan.training.checkpoint import load_checkpoint

    run = tmp_path / "plain"
    assert _train(chest_data, run) == 0
    pre = load_checkpoint(run / "best.pt")["preprocess"]
    assert not any(k.startswith("lung") for k in pre)
    assert "lung_crop" not in json.loads((run / "data.json").read_text())
    capsys.readouterr()
    assert main(["predict", str(chest_data / "test"), "--checkpoint", str(run / "best.pt"), "--format",
                 "json"]) == 0
    assert all(r["lungs"] is None for r in json.loads(capsys.readouterr().out))


def test_lung_crop_options_are_validated(chest_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(chest_data, tmp_path / "bad", "--lung-crop", "--lung-margin", "3") == 2
    assert "lung_margin" in capsys.readouterr().err
