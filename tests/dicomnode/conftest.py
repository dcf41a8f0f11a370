"""Fixtures for the DICOM node tests: the shipped model (ONNX, fast on CPU), a real Orthanc, a running node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pynetdicom", reason="needs the dicom-node extra (pip install 'pneumoscan[dicom-node]')")
pytest.importorskip("highdicom", reason="needs the dicom-node extra (pip install 'pneumoscan[dicom-node]')")

from tests.dicomnode.orthanc import Orthanc, orthanc_missing  # noqa: E402


@pytest.fixture(scope="session")
def onnx_scorer() -> Any:
    from pneumoscan.dicomnode.scoring import Scorer
    from pneumoscan.inference.predictor import Predictor

    return Scorer(Predictor.load(None, backend="onnx"))


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One real Orthanc (with DICOMweb) for the session; tests use their own studies."""
    reason = orthanc_missing()
    if reason:
        pytest.skip(reason)
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def running_node(tmp_path: Path, onnx_scorer: Any, orthanc: Orthanc) -> Iterator[Any]:
    """A started in-process node forwarding to the session's Orthanc."""
    from pneumoscan.dicomnode.node import DicomNode, NodeConfig, Peer

    node = DicomNode(NodeConfig(output=tmp_path / "node", host="127.0.0.1", port=0,
                                forward=Peer(orthanc.aet, "127.0.0.1", orthanc.dicom_port)), onnx_scorer)
    node.start()
    orthanc.add_modality("pneumoscan", node.config.ae_title, "127.0.0.1", node.port)
    try:
        yield node
    finally:
        node.stop()
