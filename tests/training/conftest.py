from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures import make_dataset_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaggle-layout folder: 24 train / 4 val / 8 test images per class, 32 px, learnable synthetic findings."""
    root = tmp_path_factory.mktemp("tiny") / "chest_xray"
    return make_dataset_folder(root, {"train": 24, "val": 4, "test": 8}, size=48, seed=1)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", "cnn", "--image-size", "32", "--epochs", "2",
            "--batch-size", "8", "--output", str(out), "--cache-dir", str(out.parent / "cache"), "--workers", "1",
            *extra]
