"""Shared fixtures. Real-data tests use ../shared/data and skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PNEUMOSCAN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the shared real data (../shared/data); skips the test when it is not there."""
    if not (SHARED_DATA / "kermany224" / "manifest.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set PNEUMOSCAN_SHARED_DATA to its location)")
    return SHARED_DATA


def _single_thread_torch() -> None:
    # Tiny test models run 3-4x faster with one torch thread on a busy 2-core machine (threads wait on each other).
    try:
        import torch
    except ImportError:  # slim (ONNX-only) installs
        return
    torch.set_num_threads(1)


_single_thread_torch()
