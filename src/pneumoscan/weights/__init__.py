"""The model shipped inside the package (see MODEL_CARD.md at the repository root).

``model.json`` names the weights file and records how it was trained (command, data hashes, seed) and what it scored
on the official Kermany test split. ``pneumoscan predict x.jpeg`` uses it when no ``--checkpoint`` is given.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pneumoscan.errors import CheckpointError

HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def shipped_model_info() -> dict[str, Any]:
    """Contents of ``model.json``; raises :class:`CheckpointError` when this build ships no model."""
    meta = HERE / "model.json"
    if not meta.is_file():
        raise CheckpointError("this pneumoscan build ships no default model; pass --checkpoint")
    return json.loads(meta.read_text(encoding="utf-8"))


def shipped_model_path(backend: str = "torch") -> Path:
    """Path of the shipped weights for ``backend`` ("torch": .pt checkpoint, "onnx": .onnx export)."""
    info = shipped_model_info()
    key = "onnx" if backend == "onnx" else "checkpoint"
    name = info.get(key)
    if not name:
        raise CheckpointError(f"the shipped model has no {backend} file; pass --checkpoint")
    path = HERE / name
    if not path.is_file():
        raise CheckpointError(f"{path}: shipped model file missing from this installation")
    return path
