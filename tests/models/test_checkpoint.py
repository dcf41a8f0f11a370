from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from pneumoscan.errors import CheckpointError
from pneumoscan.models.checkpoint import clean_state_dict, load_checkpoint, save_checkpoint


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def _minimal() -> dict[str, object]:
    return {"format_version": 1, "model": {"name": "cnn"}, "state_dict": {"w": torch.ones(2)},
            "preprocess": {"image_size": 32}, "class_names": ["NORMAL", "PNEUMONIA"]}


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(_minimal(), tmp_path / "a.pt")
    state = load_checkpoint(path)
    assert torch.equal(state["state_dict"]["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))


def test_rejects_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({**_minimal(), "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"garbage", pickle.dumps([1, 2])])
def test_rejects_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_truncated(tmp_path: Path) -> None:
    path = save_checkpoint(_minimal(), tmp_path / "a.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_clean_state_dict() -> None:
    sd = clean_state_dict({"module._orig_mod.layer.w": torch.zeros(1), "b": torch.zeros(1)})
    assert set(sd) == {"layer.w", "b"}
