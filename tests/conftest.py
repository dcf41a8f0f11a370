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
