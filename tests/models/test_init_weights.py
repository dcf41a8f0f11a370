"""models.init_weights (``--init-from``): every weight but the classifier must fit; the head is loaded when it fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pneumoscan.errors import ConfigError
from pneumoscan.models.checkpoint import save_checkpoint
from pneumoscan.models.init_weights import classifier_keys, load_init_weights
from pneumoscan.models.registry import create_model


def _save(model: torch.nn.Module, name: str, path: Path, num_classes: int = 1) -> Path:
    return save_checkpoint({"format_version": 1, "model": {"name": name, "in_chans": 1, "num_classes": num_classes},
                            "state_dict": model.state_dict(), "preprocess": {"image_size": 32},
                            "class_names": ["NORMAL", "PNEUMONIA"], "kind": "test"}, path)


def test_a_checkpoint_of_the_same_architecture_loads_whole(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("cnn")
    path = _save(source, "cnn", tmp_path / "a.pt")
    torch.manual_seed(1)
    target = create_model("cnn")
    meta = load_init_weights(target, path, "cnn")
    for k, v in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[k], v, msg=k)
    assert meta["kind"] == "test" and "state_dict" not in meta


def test_an_encoder_without_head_loads_all_but_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = create_model("cnn", num_classes=0)
    path = _save(encoder, "cnn", tmp_path / "encoder.pt", num_classes=0)
    torch.manual_seed(1)
    target = create_model("cnn")
    head = classifier_keys(target)
    assert head and all(k not in encoder.state_dict() for k in head)
    before = {k: v.clone() for k, v in target.state_dict().items() if k in head}
    load_init_weights(target, path, "cnn")
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(target.state_dict()[k], v, msg=k)
    for k, v in before.items():  # the head keeps its fresh initialisation
        torch.testing.assert_close(target.state_dict()[k], v, msg=k)


def test_another_architecture_or_a_non_checkpoint_is_refused(tmp_path: Path) -> None:
    path = _save(create_model("cnn"), "cnn", tmp_path / "a.pt")
    with pytest.raises(ConfigError, match="weights are for model 'cnn', not 'resnet18'"):
        load_init_weights(create_model("resnet18"), path, "resnet18")
    wrong = _save(create_model("cnn"), "resnet18", tmp_path / "lies.pt")
    with pytest.raises(ConfigError, match="weights do not fit 'resnet18'"):
        load_init_weights(create_model("resnet18"), wrong, "resnet18")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="^--init-from: "):
        load_init_weights(create_model("cnn"), junk, "cnn")
