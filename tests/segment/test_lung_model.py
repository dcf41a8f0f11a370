"""The lung U-Net, its weights files, the ONNX export and the ``pneumoscan segment`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoscan.cli.main import main
from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.errors import CheckpointError, ConfigError
from pneumoscan.models.lung import LungNetConfig, build_lung_unet, load_lung_state, lung_state, model_from_state


def test_forward_backward_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    model = build_lung_unet(LungNetConfig(base=4, depth=2))
    x = torch.randn(2, 1, 32, 32)
    out = model(x)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_architecture_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        LungNetConfig(base=2)


def test_state_round_trip_weights_only(tmp_path: Path) -> None:
    model = build_lung_unet(LungNetConfig(base=4, depth=2)).eval()
    path = tmp_path / "lung.pt"
    torch.save(lung_state(model, PreprocessConfig(image_size=32, mean=0.5, std=0.25), split={"test": ["a"]}), path)
    state = load_lung_state(path)
    again = model_from_state(state)
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(again(x), model(x))
    assert state["split"] == {"test": ["a"]}


def test_load_rejects_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a pneumoscan lung model"):
        load_lung_state(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable lung model"):
        load_lung_state(junk)


def test_segment_train_learns_and_records_split(lung_run: Path, lung_masks: Path) -> None:
    state = load_lung_state(lung_run / "best.pt")
    split = state["split"]
    assert sum(len(v) for v in split.values()) == 40
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    assert {s.split("_")[0] for s in split["test"]} == {"ALPHA", "BETA"}  # stratified by source
    assert state["val_dice"] > 0.6  # synthetic lungs are easy: a model that learnt nothing scores ~0
    assert (lung_run / "metrics.csv").is_file() and (lung_run / "splits.csv").is_file()


def test_segment_train_refuses_non_empty_output(lung_masks: Path, tmp_path: Path, capsys) -> None:  # type: ignore
    (tmp_path / "x").write_text("keep")
    assert main(["segment", "train", "--data", str(lung_masks), "--output", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_segment_evaluate_per_source(lung_run: Path, lung_masks: Path, tmp_path: Path, capsys) -> None:  # type: ignore
    rc = main(["segment", "evaluate", "--checkpoint", str(lung_run / "best.pt"), "--data", str(lung_masks),
               "--output", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "pooled" in out
    metrics = json.loads((tmp_path / "lung_metrics.json").read_text())
    assert metrics["pooled"]["n"] == len(load_lung_state(lung_run / "best.pt")["split"]["test"])
    assert set(metrics["per_source"]) == {"alpha", "beta"}
    assert 0.6 < metrics["pooled"]["dice_mean"] <= 1.0
    assert all(0 <= r["iou"] <= r["dice"] <= 1 for r in metrics["images"])


def test_segment_evaluate_without_data_is_one_line_error(lung_run: Path, tmp_path: Path, capsys) -> None:  # type: ignore
    assert main(["segment", "evaluate", "--checkpoint", str(lung_run / "best.pt"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest.csv" in err and len(err.strip().splitlines()) == 1


def test_release_onnx_matches_torch(lung_release: Path, lung_masks: Path) -> None:
    from pneumoscan.data.io import read_image
    from pneumoscan.inference.lungs import LungSegmenter

    info = json.loads((lung_release / "lung.json").read_text())
    assert info["name"].startswith("lung-unet-") and info["name"] in info["weights"]
    assert "CC BY-NC-SA 4.0" in info["licence"] and any("Jaeger" in c for c in info["citations"])
    pt = LungSegmenter.from_file(lung_release / info["weights"])
    ox = LungSegmenter.from_file(lung_release / info["onnx"])
    image = read_image(next((lung_masks / "images").iterdir()))
    np.testing.assert_allclose(pt.probabilities(image), ox.probabilities(image), atol=1e-4)
    assert ox.meta["split"] == pt.meta["split"]


def test_segment_predict_writes_masks_and_reports_bad_files(tiny_lung_model: Path, lung_masks: Path,
                                                            tmp_path: Path, capsys) -> None:  # type: ignore
    good = next((lung_masks / "images").iterdir())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    rc = main(["segment", "predict", str(good), str(bad), "--output", str(tmp_path / "out")])
    assert rc == 1
    out = capsys.readouterr().out
    assert "bad.png" in out and "lung fraction" in out
    from PIL import Image

    mask = np.asarray(Image.open(tmp_path / "out" / f"{good.stem}_lungs.png"))
    truth = np.asarray(Image.open(lung_masks / "masks" / f"{good.stem}.png")) > 0
    assert mask.shape == truth.shape
    inter = np.logical_and(mask > 0, truth).sum()
    assert 2 * inter / ((mask > 0).sum() + truth.sum()) > 0.5
    assert (tmp_path / "out" / f"{good.stem}_outline.png").is_file()


def test_installed_lung_model_name_mismatch_is_explained(tiny_lung_model: Path) -> None:
    from pneumoscan.inference.lungs import load_lung_segmenter

    with pytest.raises(CheckpointError, match="lung-unet-00000000"):
        load_lung_segmenter("lung-unet-00000000")
