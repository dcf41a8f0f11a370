from __future__ import annotations

import os
from pathlib import Path

import pytest

from pneumoscan.cli.main import main
from tests.fixtures import make_dataset_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, best.pt) of a tiny cnn trained for 3 epochs at 32 px."""
    base = tmp_path_factory.mktemp("cli")
    data = make_dataset_folder(base / "data", {"train": 24, "val": 4, "test": 8}, size=48, seed=3)
    out = base / "run"
    assert main(["train", "--data", str(data), "--model", "cnn", "--image-size", "32", "--epochs", "3",
                 "--batch-size", "8", "--lr", "3e-3", "--output", str(out), "--cache-dir", str(base / "cache"),
                 "--workers", "1"]) == 0
    return data, out / "best.pt"
