"""Fixtures for the serving tests: one tiny trained model (and its ONNX export) per session, apps per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from pneumoscan.serving.app import create_app
from pneumoscan.serving.settings import ServeSettings
from tests.serving.support import TinyModel, tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The session's tiny cnn checkpoint and its ONNX export (trained / exported once, in seconds)."""
    return tiny_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def torch_client(tiny: TinyModel) -> Iterator[TestClient]:
    """A TestClient on the torch backend (lifespan run: the model is loaded)."""
    with TestClient(create_app(ServeSettings(checkpoint=tiny.checkpoint, backend="torch", precision="fp32"))) as c:
        yield c


@pytest.fixture(scope="module")
def onnx_client(tiny: TinyModel) -> Iterator[TestClient]:
    """A TestClient on the onnx backend."""
    with TestClient(create_app(ServeSettings(checkpoint=tiny.onnx, backend="onnx"))) as c:
        yield c
