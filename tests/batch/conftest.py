"""Fixtures for the batch tests: one local Ray session per module (Ray start-up costs ~10-30 s on 2 cores), the
session's tiny model (shared with tests/serving and tests/export) and a small synthetic archive with bad files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import make_dataset_folder
from tests.serving.support import TinyModel, tiny_model


def _require_batch_extra() -> None:
    for module in ("ray", "pyarrow"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install \"pneumoscan[batch]\")")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The session's tiny cnn checkpoint and its ONNX export (trained / exported once, in seconds)."""
    return tiny_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def local_ray() -> Iterator[object]:
    """A local 2-CPU Ray cluster for the module; ``run_batch`` finds it initialised and uses it as is."""
    _require_batch_extra()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", ignore_reinit_error=True)
    yield ray
    ray.shutdown()


BAD_FILES = {  # name -> content: each must become an error row, none may stop the run
    "NORMAL/corrupt.jpeg": b"\xff\xd8\xff\xe0 this is not really a JPEG",
    "NORMAL/empty.png": b"",
    "PNEUMONIA/notes.png": b"a text file with an image name",
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 readable synthetic JPEGs in ``{NORMAL,PNEUMONIA}/`` (Kermany names: patients and subtypes) + 3 bad files."""
    root = make_dataset_folder(tmp_path_factory.mktemp("archive"), {"test": 12}, size=40, seed=3, fmt="jpeg")
    for name, data in BAD_FILES.items():
        (root / "test" / name).write_bytes(data)
    return root / "test"
