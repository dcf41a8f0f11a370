"""The epoch loop and batched inference over in-memory uint8 images (tiny custom CNN, CPU, fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.models import create_model
from pneumoscan.models.hardware import resolve_hardware
from pneumoscan.training.engine import batches, predict_logits, recompute_bn_stats, to_input, train_one_epoch

SIDE = 32


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray]:
    """Bright discs (label 1) against dark backgrounds (label 0): learnable in a few steps."""
    rng = np.random.default_rng(0)
    labels = np.array([i % 2 for i in range(48)])
    images = rng.integers(0, 60, size=(48, SIDE, SIDE), dtype=np.uint8)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    disc = (yy - SIDE / 2) ** 2 + (xx - SIDE / 2) ** 2 < (SIDE / 4) ** 2
    images[labels == 1] = np.where(disc, 220, images[labels == 1]).astype(np.uint8)
    return images, labels


def test_batches_cover_every_index_once() -> None:
    got = np.concatenate(list(batches(np.arange(10), 4)))
    assert got.tolist() == list(range(10))
    assert [len(b) for b in batches(np.arange(10), 4)] == [4, 4, 2]


def test_to_input_normalises_and_adds_the_channel() -> None:
    hw = resolve_hardware("cpu", "fp32")
    batch = np.full((2, 16, 16), 255, dtype=np.uint8)
    out = to_input(batch, PreprocessConfig(image_size=16, mean=0.5, std=0.25), hw)
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, 2.0))


def test_training_lowers_the_loss_and_predict_restores_the_mode(data: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = data
    torch.manual_seed(0)
    hw = resolve_hardware("cpu", "fp32")
    model = create_model("cnn").to(hw.device)
    pre = PreprocessConfig(image_size=SIDE)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = np.random.default_rng(0).permutation(len(images))
    losses = [train_one_epoch(model, images, labels, order, batch_size=16, preprocess=pre, hw=hw, optimizer=opt,
                              loss_fn=loss_fn, augment=None) for _ in range(6)]
    assert losses[-1] < losses[0]
    model.train()
    logits = predict_logits(model, images, batch_size=16, preprocess=pre, hw=hw)
    assert model.training, "predict_logits restores the previous mode"
    assert logits.shape == (48,)
    assert logits[labels == 1].mean() > logits[labels == 0].mean()


def test_precise_bn_replaces_running_statistics_with_the_exact_mean(data: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = data
    hw = resolve_hardware("cpu", "fp32")
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1)).eval()
    pre = PreprocessConfig(image_size=SIDE)
    recompute_bn_stats(model, images, np.arange(len(images)), batch_size=16, preprocess=pre, hw=hw)
    expected = float((images.astype(np.float64) / 255.0).mean())
    assert float(model[0].running_mean) == pytest.approx(expected, rel=1e-4)
    assert not model.training, "the mode it was called in is restored"
