"""The training step, one training epoch and batched inference over in-memory uint8 images.

:func:`train_step` is the one place a batch meets ``optimizer.step()`` (autocast, fp16 loss scaling); supervised
training (:func:`train_one_epoch`) and SimCLR pre-training (:mod:`pneumoscan.training.pretrain`) both call it, each
with its own loss function.

The images are already decoded and resized (:mod:`pneumoscan.data.cache`), so a batch is an index into a uint8
array: no DataLoader workers compete with the model for the two CPU cores, and nothing can crash inside a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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


LossFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def train_step(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor | None, *,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, hw: Hardware) -> torch.Tensor:
    """One optimisation step on a batch: forward under the autocast of ``hw``, ``loss_fn(outputs.float(), targets)``,
    backward and ``optimizer.step()``; returns the loss (detached).

    With a ``scaler`` (fp16 on CUDA) the loss is scaled before backward and the step is skipped when the scaled
    gradients overflow (``GradScaler.step``), as fp16 gradients would otherwise underflow to zero.
    """
    with autocast(hw):
        outputs = model(inputs)
    loss = loss_fn(outputs.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def train_one_epoch(model: nn.Module, images: np.ndarray, labels: np.ndarray, order: np.ndarray, *,
                    batch_size: int, preprocess: PreprocessConfig, hw: Hardware, optimizer: torch.optim.Optimizer,
                    loss_fn: LossFn, augment: Callable[[torch.Tensor], torch.Tensor] | None,
                    scaler: torch.amp.GradScaler | None = None, label_smoothing: float = 0.0,
                    progress: object | None = None) -> float:
    """Train over ``order`` (indices into images/labels) once; returns the mean loss.

    ``progress`` is an optional tqdm bar updated with the running loss.
    """
    model.train()
    total, seen = 0.0, 0
    for idx in batches(order, batch_size):
        sorted_idx = np.sort(idx)  # memmap reads are faster in file order; order inside a batch does not matter
        inputs = to_input(images[sorted_idx], preprocess, hw, augment)
        targets = torch.from_numpy(labels[sorted_idx].astype(np.float32)).to(hw.device).unsqueeze(1)
        if label_smoothing:
            targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
        loss = train_step(model, loss_fn, inputs, targets, optimizer=optimizer, scaler=scaler, hw=hw)
        total += float(loss) * len(idx)
        seen += len(idx)
        if progress is not None:
            progress.update(len(idx))  # type: ignore[attr-defined]
            progress.set_postfix(loss=f"{total / seen:.4f}")  # type: ignore[attr-defined]
    return total / max(seen, 1)


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


# -- resuming ---------------------------------------------------------------------------------------------------


def grad_scaler(hw: Hardware) -> torch.amp.GradScaler | None:
    """The loss scaler of a loop on ``hw``: fp16 gradients underflow without one; none for fp32 and bf16."""
    return torch.amp.GradScaler("cuda") if hw.amp_dtype is torch.float16 else None


def restore_fit_state(state: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                      scaler: torch.amp.GradScaler | None) -> None:
    """Load what a saved run (``last.pt``) carries for the fit itself: weights, optimizer, scheduler, loss scaler
    (when both have one) and the torch RNG. The loops restore their own generators and counters."""
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
