"""Fixtures for the lung-field tests: a synthetic image + lung-mask set and a tiny lung model trained on it.

The tiny lung model is trained and released by the real ``pneumoscan segment`` commands (no stand-ins), once per
session, and installed for a test through ``$PNEUMOSCAN_LUNG_MODEL_DIR``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscan.cli.main import main


def draw_chest(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic chest film (uint8) and its lung mask (bool): grey body, two dark elliptic lungs, bright spine."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    img = np.full((size, size), 20.0)
    dx, dy = rng.uniform(-0.1, 0.1, size=2)
    scale = rng.uniform(0.75, 1.0)
    body = ((xx - dx) / (0.9 * scale)) ** 2 + ((yy - dy) / 0.98) ** 2 <= 1
    img[body] = 160 + rng.uniform(-15, 15)
    lungs = np.zeros((size, size), dtype=bool)
    for side in (-1, 1):
        cx = side * 0.36 * scale + dx
        lungs |= ((xx - cx) / (0.25 * scale)) ** 2 + ((yy - dy + 0.05) / (0.5 * scale)) ** 2 <= 1
    img[lungs] = 55 + rng.uniform(-10, 10)
    img += rng.normal(0, 5, size=(size, size))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lungs


def make_lung_mask_folder(root: Path, n: int = 40, size: int = 64, seed: int = 0) -> Path:
    """Folder in the ``lung_masks`` layout (manifest.csv, images/, masks/) with two sources."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        source = "alpha" if i % 3 else "beta"
        stem = f"{source.upper()}_{i:04d}_0"
        image, mask = draw_chest(rng, size)
        Image.fromarray(image).save(root / "images" / f"{stem}.jpg", quality=95)
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")
        rows.append({"image": f"images/{stem}.jpg", "mask": f"masks/{stem}.png", "source": source,
                     "finding": "normal", "lung_fraction": f"{mask.mean():.4f}"})
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="session")
def lung_masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lung_mask_folder(tmp_path_factory.mktemp("lungmasks") / "lung_masks")


@pytest.fixture(scope="session")
def lung_run(lung_masks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lung U-Net trained by ``pneumoscan segment train`` on the synthetic set (32 px, a few seconds)."""
    run = tmp_path_factory.mktemp("lungrun") / "run"
    rc = main(["segment", "train", "--data", str(lung_masks), "--output", str(run), "--image-size", "32",
               "--base", "4", "--depth", "2", "--epochs", "8", "--batch-size", "8", "--lr", "2e-2", "--no-augment",
               "--val-fraction", "0.2", "--test-fraction", "0.2"])
    assert rc == 0
    return run


@pytest.fixture(scope="session")
def lung_release(lung_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny lung model released (weights + ONNX + lung.json) into a folder."""
    out = tmp_path_factory.mktemp("lungweights")
    assert main(["segment", "release", "--checkpoint", str(lung_run / "best.pt"), "--output", str(out),
                 "--command", "pytest fixture"]) == 0
    return out


@pytest.fixture()
def tiny_lung_model(lung_release: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install the tiny lung model for one test (``$PNEUMOSCAN_LUNG_MODEL_DIR``)."""
    monkeypatch.setenv("PNEUMOSCAN_LUNG_MODEL_DIR", str(lung_release))
    return lung_release
