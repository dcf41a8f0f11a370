"""Batches and forward passes over in-memory uint8 images (tiny custom CNN, CPU): the input of a batch, batched
scoring in eval mode and precise BN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.models import create_model
from pneumoscan.models.hardware import resolve_hardware
from pneumoscan.training.forward import batches, forward_images, predict_logits, recompute_bn_stats, to_input
from tests.training.conftest import DISC_SIDE


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


def test_precise_bn_replaces_running_statistics_with_the_exact_mean(discs: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = discs
    hw = resolve_hardware("cpu", "fp32")
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1)).eval()
    pre = PreprocessConfig(image_size=DISC_SIDE)
    recompute_bn_stats(model, images, np.arange(len(images)), batch_size=16, preprocess=pre, hw=hw)
    expected = float((images.astype(np.float64) / 255.0).mean())
    assert float(model[0].running_mean) == pytest.approx(expected, rel=1e-4)
    assert not model.training, "the mode it was called in is restored"


def test_forward_images_gives_logits_or_pooled_features_and_restores_the_mode(
        discs: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = discs
    hw = resolve_hardware("cpu", "fp32")
    pre = PreprocessConfig(image_size=DISC_SIDE)
    torch.manual_seed(0)
    classifier, encoder = create_model("cnn"), create_model("cnn", num_classes=0)
    feats = forward_images(encoder, images[:10], batch_size=4, preprocess=pre, hw=hw)
    assert feats.dtype == np.float32 and feats.shape[0] == 10 and feats.shape[1] > 1 and encoder.training
    logits = forward_images(classifier, images[:10], batch_size=4, preprocess=pre, hw=hw)
    assert logits.shape == (10, 1)
    np.testing.assert_array_equal(predict_logits(classifier, images[:10], batch_size=4, preprocess=pre, hw=hw),
                                  logits.reshape(-1))
    assert forward_images(encoder, images[:0], batch_size=4, preprocess=pre, hw=hw).shape == (0, 0)
    assert predict_logits(classifier, images[:0], batch_size=4, preprocess=pre, hw=hw).shape == (0,)
