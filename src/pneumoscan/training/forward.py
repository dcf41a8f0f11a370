"""Forward passes over in-memory uint8 images: a batch (:func:`batches`) becomes the model's input (:func:`to_input`,
normalised and, when training, augmented on the device); :func:`forward_images` / :func:`predict_logits` score images
in eval mode and :func:`recompute_bn_stats` re-estimates BatchNorm statistics ("precise BN").

The training loop (:mod:`pneumoscan.training.trainer`), validation, finalising a run and SimCLR
(:mod:`pneumoscan.training.pretrain`) all go through these; the training step itself is
:func:`pneumoscan.training.trainer.train_step`.

The images are already decoded and resized (:mod:`pneumoscan.data.cache`), so a batch is an index into a uint8
array: no DataLoader workers compete with the model for the two CPU cores, and nothing can crash inside a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.models.hardware import Hardware
from pneumoscan.models.precision import autocast


def to_input(batch: np.ndarray, preprocess: PreprocessConfig, hw: Hardware,
             augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 (N, S, S) → normalised float (N, 1, S, S) on the device, augmented when ``augment`` is given."""
    images = torch.from_numpy(np.ascontiguousarray(batch)).to(hw.device).unsqueeze(1).float().div_(255.0)
    if augment is not None:
        images = augment(images)
    if preprocess.mean != 0.0 or preprocess.std != 1.0:
        images = (images - preprocess.mean) / preprocess.std
    if hw.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def batches(indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, images: np.ndarray, indices: np.ndarray, *, batch_size: int,
                       preprocess: PreprocessConfig, hw: Hardware) -> None:
    """Replace BatchNorm running statistics by their exact average over ``images[indices]`` ("precise BN").

    Why: running statistics are an exponential average taken while the weights move. Early in training from scratch
    the weights move fast and the averages lag, so eval mode can score far worse than the weights deserve (seen here:
    EfficientNet-B0, 2 epochs at 128 px, validation ROC-AUC 0.59 with its running statistics and 0.94 with batch
    statistics). ``torch.optim.swa_utils.update_bn`` does the averaging (train-mode forward passes without gradient,
    restoring the momenta and the mode); images are not augmented. Batches are sliced from ``indices`` in order.
    """
    from torch.optim.swa_utils import update_bn

    def inputs() -> Iterator[torch.Tensor]:
        for idx in batches(indices, batch_size):
            yield to_input(images[np.sort(idx)], preprocess, hw)

    with autocast(hw):
        update_bn(inputs(), model)


@torch.no_grad()
def forward_images(model: nn.Module, images: np.ndarray, *, batch_size: int, preprocess: PreprocessConfig,
                   hw: Hardware) -> np.ndarray:
    """The model's outputs, flattened per image, for uint8 images (N, S, S): float32 (N, D), in eval mode under the
    autocast of ``hw``; restores the model's previous mode. Logits (D = 1) for a classifier, pooled features for an
    encoder (``num_classes=0``)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for idx in batches(np.arange(len(images)), batch_size):
            with autocast(hw):
                outputs = model(to_input(images[idx], preprocess, hw))
            out.append(outputs.float().flatten(1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_logits(model: nn.Module, images: np.ndarray, *, batch_size: int, preprocess: PreprocessConfig,
                   hw: Hardware) -> np.ndarray:
    """Logits (N,) for uint8 images (N, S, S), in eval mode; restores the model's previous mode."""
    return forward_images(model, images, batch_size=batch_size, preprocess=preprocess, hw=hw).reshape(-1)
