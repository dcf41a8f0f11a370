"""Fixtures for the export tests: the session's tiny model, shared with tests/serving."""

from __future__ import annotations

import pytest

from tests.serving.support import TinyModel, onnx_predictor, tiny_model, torch_predictor  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The session's tiny cnn checkpoint and its ONNX export (trained / exported once, in seconds)."""
    return tiny_model(tmp_path_factory.getbasetemp())
