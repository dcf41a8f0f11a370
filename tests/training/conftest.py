from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import make_dataset_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: side of the :func:`discs` images
DISC_SIDE = 32


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaggle-layout folder: 24 train / 4 val / 8 test images per class, 32 px, learnable synthetic findings."""
    root = tmp_path_factory.mktemp("tiny") / "chest_xray"
    return make_dataset_folder(root, {"train": 24, "val": 4, "test": 8}, size=48, seed=1)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", "cnn", "--image-size", "32", "--epochs", "2",
            "--batch-size", "8", "--output", str(out), "--cache-dir", str(out.parent / "cache"), "--workers", "1",
            *extra]


@pytest.fixture()
def discs() -> tuple[np.ndarray, np.ndarray]:
    """48 uint8 images (DISC_SIDE px): bright discs (label 1) against dark backgrounds (label 0), learnable in a few
    steps; in memory, as the training cache holds them."""
    rng = np.random.default_rng(0)
    labels = np.array([i % 2 for i in range(48)])
    images = rng.integers(0, 60, size=(48, DISC_SIDE, DISC_SIDE), dtype=np.uint8)
    yy, xx = np.mgrid[:DISC_SIDE, :DISC_SIDE]
    disc = (yy - DISC_SIDE / 2) ** 2 + (xx - DISC_SIDE / 2) ** 2 < (DISC_SIDE / 4) ** 2
    images[labels == 1] = np.where(disc, 220, images[labels == 1]).astype(np.uint8)
    return images, labels
