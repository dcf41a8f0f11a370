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


@pytest.fixture(scope="module")
def crop_run(lung_release: Path, chest_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier trained with ``--lung-crop --lung-margin 0.15 --lung-dim 0.3`` (tiny lung model installed)."""
    run = tmp_path_factory.mktemp("croprun") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PNEUMOSCAN_LUNG_MODEL_DIR", str(lung_release))
        assert _train(chest_data, run, "--lung-crop", "--lung-margin", "0.15", "--lung-dim", "0.3") == 0
    return run


def test_train_and_predict_with_lung_crop(tiny_lung_model: Path, crop_run: Path, chest_data: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pneumoscan.data.cache import load_or_build
    from pneumoscan.inference.lungs import load_lung_segmenter, shipped_lung_name
    from pneumoscan.inference.predictor import Predictor
    from pneumoscan.models.checkpoint import load_checkpoint

    run = crop_run
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
    segmenter = load_lung_segmenter(predictor.info.preprocess.lung_model)
    cached = load_or_build(train_paths, 32, run.parent / "cache", 1, predictor.info.preprocess, segmenter)
    for i in range(3):
        np.testing.assert_array_equal(predictor.prepare(read_image(train_paths[i])), cached[i])
    uncropped = load_or_build(train_paths, 32, run.parent / "cache", 1)
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
    from pneumoscan.models.checkpoint import load_checkpoint

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


def test_predict_explain_reports_heatmap_lung_fraction(tiny_lung_model: Path, crop_run: Path, chest_data: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["predict", str(chest_data / "test" / "PNEUMONIA"), "--checkpoint", str(crop_run / "best.pt"),
                 "--format", "json", "--explain", str(tmp_path / "cams")]) == 0
    rows = json.loads(capsys.readouterr().out)
    shares = [r["heatmap_lung_fraction"] for r in rows]  # None where the heatmap is empty (a result, not an error)
    assert rows and all(s is None or 0.0 <= s <= 1.0 for s in shares)
    assert len(list((tmp_path / "cams").glob("*_gradcam.png"))) == len(rows)


def test_explain_image_share_matches_lung_map(tiny_lung_model: Path, crop_run: Path, chest_data: Path) -> None:
    from pneumoscan.data.lungs import heatmap_lung_fraction
    from pneumoscan.explain.gradcam import explain_image
    from pneumoscan.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(crop_run / "best.pt", precision="fp32")
    image = read_image(next((chest_data / "test" / "PNEUMONIA").iterdir()))
    out = explain_image(predictor, image)
    assert out["heatmap"].shape == out["lung_map"].shape == (32, 32)
    np.testing.assert_array_equal(out["prepared"], predictor.prepare(image))
    assert out["heatmap_lung_fraction"] == heatmap_lung_fraction(out["heatmap"], out["lung_map"])


def test_onnx_backend_crops_without_torch(tiny_lung_model: Path, crop_run: Path, chest_data: Path,
                                          tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.serving.support import NO_TORCH_MAIN

    onnx = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(crop_run / "best.pt"), "--output", str(onnx), "--exporter",
                 "torchscript"]) == 0
    blank = write_png(tmp_path / "blank.png", np.zeros((64, 64), np.uint8))
    test_dir = chest_data / "test" / "NORMAL"
    env = {**os.environ, "PNEUMOSCAN_LUNG_MODEL_DIR": str(tiny_lung_model)}
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_MAIN, "predict", str(test_dir), str(blank), "--checkpoint",
                           str(onnx), "--format", "json"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    onnx_rows = {Path(r["path"]).name: r for r in json.loads(proc.stdout)}
    assert onnx_rows["blank.png"]["lungs"]["lungs_found"] is False
    assert main(["predict", str(test_dir), "--checkpoint", str(crop_run / "best.pt"), "--format", "json",
                 "--output", str(tmp_path / "torch.json")]) == 0
    for r in json.loads((tmp_path / "torch.json").read_text()):
        other = onnx_rows[Path(r["path"]).name]
        assert other["lungs"]["lung_box"] == pytest.approx(r["lungs"]["lung_box"], abs=0.02)
        assert other["probability"] == pytest.approx(r["probability"], abs=1e-3)


def test_api_reports_lungs_outline_and_heatmap_share(tiny_lung_model: Path, crop_run: Path, chest_data: Path) -> None:
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from pneumoscan.serving.app import create_app
    from pneumoscan.serving.settings import ServeSettings

    image = next((chest_data / "test" / "PNEUMONIA").iterdir()).read_bytes()
    settings = ServeSettings(checkpoint=crop_run / "best.pt", backend="torch", precision="fp32")
    with TestClient(create_app(settings)) as client:
        res = client.post("/v1/predict?preview=true&heatmap=true", files={"files": ("x.png", image, "image/png")})
        assert res.status_code == 200, res.text
        out = res.json()["results"][0]
        assert out["lungs"]["lungs_found"] is True
        x0, y0, x1, y1 = out["input_box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert out.get("heatmap_lung_fraction") is None or 0 <= out["heatmap_lung_fraction"] <= 1
        outline = Image.open(io.BytesIO(base64.b64decode(out["lung_outline_png_base64"])))
        assert outline.mode == "RGBA" and np.asarray(outline)[..., 3].any()
        plain = client.post("/v1/predict", files={"files": ("x.png", image, "image/png")}).json()["results"][0]
        assert "lung_outline_png_base64" not in plain and "heatmap_lung_fraction" not in plain


def test_evaluate_reports_images_used_whole(tiny_lung_model: Path, crop_run: Path, chest_data: Path,
                                            tmp_path: Path) -> None:
    assert main(["evaluate", "--checkpoint", str(crop_run / "best.pt"), "--data", str(chest_data), "--split", "test",
                 "--output", str(tmp_path / "eval"), "--bootstrap", "20", "--no-heatmaps"]) == 0
    text = (tmp_path / "eval" / "metrics.json").read_text()
    metrics = json.loads(text)
    found = [v for v in _walk(metrics) if isinstance(v, dict) and "no_lungs_found" in v]
    assert found and found[0]["n"] == metrics["n"] and found[0]["no_lungs_found"] == 0


def _walk(obj: object):  # type: ignore[no-untyped-def]
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
