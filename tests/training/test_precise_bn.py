"""--precise-bn: BatchNorm statistics recomputed exactly over a fixed set of training images before validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pneumoscan.cli.main import main
from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.errors import ConfigError
from pneumoscan.models.checkpoint import load_checkpoint
from pneumoscan.models.hardware import resolve_hardware
from pneumoscan.training.config import TrainConfig
from pneumoscan.training.forward import recompute_bn_stats
from tests.training.conftest import train_args


def test_statistics_are_the_exact_average_over_the_images() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 16, 16), dtype=np.uint8)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.Flatten(), nn.LazyLinear(1))
    model(torch.zeros(2, 1, 16, 16))
    bn = model[1]
    bn.running_mean.fill_(5.0)
    bn.momentum = 0.1
    model.eval()
    hw = resolve_hardware("cpu", "fp32")
    idx = np.array([1, 3, 4, 7])
    recompute_bn_stats(model, images, idx, batch_size=2, preprocess=PreprocessConfig(image_size=16), hw=hw)
    x = torch.from_numpy(images[idx]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        feats = model[0](x)
    expected = feats.reshape(2, 2, 3, 14, 14).mean(dim=(1, 3, 4)).mean(dim=0)  # mean of the two batches' means
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and not model.training, "momentum and mode restored"


def test_train_with_precise_bn_records_it_and_changes_the_statistics(tiny_data: Path, tmp_path: Path) -> None:
    plain, precise = tmp_path / "plain", tmp_path / "precise"
    assert main(train_args(tiny_data, plain, "--epochs", "1")) == 0
    assert main(train_args(tiny_data, precise, "--epochs", "1", "--precise-bn", "16")) == 0
    a, b = load_checkpoint(plain / "last.pt"), load_checkpoint(precise / "last.pt")
    assert b["config"]["precise_bn"] == 16 and a["config"]["precise_bn"] == 0
    keys = [k for k in a["state_dict"] if k.endswith("running_mean")]
    assert keys
    for k, v in a["state_dict"].items():  # same training steps: only the BatchNorm statistics differ
        if "running_" in k or k.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(v, b["state_dict"][k], msg=k)
    assert any(not torch.allclose(a["state_dict"][k], b["state_dict"][k]) for k in keys)


def test_negative_precise_bn_is_rejected() -> None:
    with pytest.raises(ConfigError, match="precise_bn"):
        TrainConfig(precise_bn=-1)
