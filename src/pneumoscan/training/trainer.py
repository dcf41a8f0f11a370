"""The loop, down to ``optimizer.step()``: :class:`Trainer` runs epochs of :func:`train_one_epoch`, whose every batch
goes through :func:`train_step` (autocast, loss, fp16 loss scaling, ``optimizer.step()``), validates, selects the
best epoch and writes ``last.pt``/``best.pt``/``metrics.csv`` after every epoch.

:func:`train_step` is the one place a batch meets ``optimizer.step()``: supervised training and SimCLR pre-training
(:mod:`pneumoscan.training.pretrain`) both call it, each with its own loss function; :func:`grad_scaler` and
:func:`restore_fit_state` are shared with SimCLR the same way. Batching and forward passes over the in-memory images
are :mod:`pneumoscan.training.forward`.

It is handed a built model, optimizer and scheduler (:func:`pneumoscan.training.setup.build_trainer`); it knows
nothing about data sources or run folders beyond the files it writes. Code that needs to follow or stop the run
(tuning's pruning) passes :class:`EpochCallback` objects instead of overriding methods.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pneumoscan import CLASS_NAMES, __version__
from pneumoscan.core.atomic import atomic_write_text
from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.data.records import Record
from pneumoscan.models.checkpoint import FORMAT_VERSION, save_checkpoint
from pneumoscan.models.hardware import Hardware
from pneumoscan.models.precision import autocast
from pneumoscan.training.augment import BatchAugment
from pneumoscan.training.config import TrainConfig
from pneumoscan.training.distributed import DistInfo, barrier, gather_objects
from pneumoscan.training.forward import batches, predict_logits, recompute_bn_stats, to_input

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """What the loop trains and validates on (made by :func:`pneumoscan.training.setup.prepare_data`): splits plus
    the decoded train/val images (uint8, N×S×S) and labels."""

    splits: dict[str, list[Record]]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    info: dict[str, Any]


class StopTraining(Exception):
    """Raised by an :class:`EpochCallback` to end the run after the current epoch (its checkpoints are written).

    :meth:`Trainer.run` returns normally, with the reason in :attr:`Trainer.stopped_by`; the run is then finalized like
    an early-stopped one. Any other exception from a callback (e.g. ``optuna.TrialPruned``) leaves the loop as is.
    """


class EpochCallback(Protocol):
    """Called by :meth:`Trainer.run` at the end of every epoch, after ``last.pt``/``best.pt``/``metrics.csv``."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """``epoch`` counts from 0; ``metrics`` is the epoch's ``metrics.csv`` row (``val_roc_auc``, ``val_select``,
        ``train_loss``, ...). Raise :class:`StopTraining` to stop after this epoch."""


def acquisition_cell(record: Record) -> str:
    """The acquisition group of an image for balancing and for selection: ``view:PA`` / ``view:AP`` for images whose
    manifest names a view (adults; all sources with that view together), else ``source:<name>`` (e.g. Kermany, whose
    pediatric images are only known to be "frontal")."""
    view = (record.extra or {}).get("view", "").strip().upper()
    return f"view:{view}" if view in ("PA", "AP") else f"source:{record.source}"


def _epoch_order(n: int, weights: np.ndarray | None, gen: torch.Generator, world: int) -> np.ndarray:
    if weights is None:
        order = torch.randperm(n, generator=gen).numpy()
    else:
        order = torch.multinomial(torch.from_numpy(weights), n, replacement=True, generator=gen).numpy()
    return order[: len(order) - len(order) % world] if world > 1 else order


def _roc_auc(labels: np.ndarray, logits: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(set(labels.tolist())) < 2 or not np.all(np.isfinite(logits)):
        return float("nan")
    return float(roc_auc_score(labels, logits))


SELECTION_RULES = {
    "pooled": "ROC-AUC of the whole validation split",
    "worst_source": "lowest ROC-AUC over the validation split's sources that have both classes",
    "worst_group": "lowest ROC-AUC over acquisition groups of the validation split that have both classes: view:PA "
                   "and view:AP for images whose manifest names a view (rsna_adult; the lung_masks normals join "
                   "view:PA), source:<name> for the others (kermany); a group with one class has no ROC-AUC alone",
}


def group_aucs(records: list[Record], labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC per source (``source:<name>``) and per acquisition group (``group:<cell>``, see
    :func:`acquisition_cell`), for every group of the validation split that has both classes."""
    keys: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        keys.setdefault(f"source:{r.source}", []).append(i)
        keys.setdefault(f"group:{acquisition_cell(r)}", []).append(i)
    out = {}
    for key, idx in keys.items():
        auc = _roc_auc(labels[idx], scores[idx])
        if math.isfinite(auc):
            out[key] = auc
    return out


def selection_score(rule: str, pooled: float, groups: dict[str, float]) -> float:
    """The figure early stopping and the best checkpoint follow (see :data:`SELECTION_RULES`): the pooled ROC-AUC,
    or the lowest of the ``source:`` (worst_source) or ``group:`` (worst_group) entries of :func:`group_aucs`.
    Falls back to the pooled figure when no group has both classes."""
    if rule == "pooled":
        return pooled
    prefix = "source:" if rule == "worst_source" else "group:"
    values = [v for k, v in groups.items() if k.startswith(prefix)]
    return min(values) if values else pooled


def selection_record(rule: str) -> dict[str, str]:
    """What goes into the checkpoint and the model card about how the epoch was chosen."""
    return {"rule": rule, "definition": SELECTION_RULES[rule], "split": "validation (never test)"}


# -- the training step, one epoch, resuming --------------------------------------------------------------------


def grad_scaler(hw: Hardware) -> torch.amp.GradScaler | None:
    """The loss scaler of a loop on ``hw``: fp16 gradients underflow without one; none for fp32 and bf16."""
    return torch.amp.GradScaler("cuda") if hw.amp_dtype is torch.float16 else None


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


# -- the loop ----------------------------------------------------------------------------------------------------


class Trainer:
    """Holds the state of one run; :meth:`run` trains from ``start_epoch`` to the end, an early stop or a
    :class:`StopTraining` from a callback.

    Built by :func:`pneumoscan.training.setup.build_trainer`: ``model`` is on ``hw.device``, ``optimizer`` and
    ``scheduler`` are built on it, ``sampling_weights`` (one per training image, or None for a plain shuffle) drive
    the sampler. The loss, the GradScaler (fp16), the sampler and augmentation generators are the loop's own.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, data: PreparedData, hw: Hardware, dist_info: DistInfo, *,
                 model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, preprocess: PreprocessConfig,
                 sampling_weights: np.ndarray | None, callbacks: Sequence[EpochCallback] = ()) -> None:
        self.cfg, self.run_dir, self.data, self.hw, self.dist = cfg, run_dir, data, hw, dist_info
        self.preprocess = preprocess
        self.model = model
        self.net: nn.Module = self.model
        if dist_info.enabled:
            self.net = nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = grad_scaler(hw)
        self.callbacks = list(callbacks)
        self.stopped_by: str | None = None
        labels = data.labels["train"]
        self.weights = sampling_weights
        pos_weight = None
        if cfg.balance == "loss":
            # the class mix as training draws it: with --balance-groups that is the sampler's, not the data's
            w = self.weights if self.weights is not None else np.ones(len(labels))
            n_pos, n_neg = float(w[labels == 1].sum()), float(w[labels == 0].sum())
            pos_weight = torch.tensor([n_neg / max(n_pos, 1e-12)], device=hw.device)
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.sample_gen = torch.Generator().manual_seed(cfg.seed + 11)
        self.augment = BatchAugment(cfg.augment, torch.Generator().manual_seed(cfg.seed + 23 + dist_info.rank))
        a = cfg.augment
        enabled = any((a.rotation, a.hflip, a.zoom, a.translate, a.brightness, a.contrast))
        self.augment_fn = self.augment if enabled or a.acquisition else None
        # A fixed subset for --precise-bn, drawn from its own generator so that resuming stays exact.
        n_bn = min(cfg.precise_bn, len(labels))
        self.bn_indices = np.sort(np.random.default_rng(cfg.seed + 31).permutation(len(labels))[:n_bn])
        self.start_epoch, self.best_auc, self.stale, self.history = 0, -1.0, 0, []

    # -- state ------------------------------------------------------------------------------------------------
    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": {"name": self.cfg.model, "num_classes": 1, "in_chans": 1},
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": epoch,
            "best_metric": self.best_auc,
            "stale_epochs": self.stale,
            "config": self.cfg.to_dict(),
            "class_names": list(CLASS_NAMES),
            "preprocess": self.preprocess.to_dict(),
            "threshold": 0.5,
            "threshold_rule": "untuned (training in progress)",
            "selection": selection_record(self.cfg.select_by),
            "operating_points": {},
            "temperature": 1.0,
            "rng": {"torch": torch.get_rng_state(), "sampler": self.sample_gen.get_state(),
                    "augment": self.augment.generator.get_state()},
            "history": self.history,
            "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def restore(self, state: dict[str, Any]) -> None:
        restore_fit_state(state, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                          scaler=self.scaler)
        self.sample_gen.set_state(state["rng"]["sampler"])
        self.augment.generator.set_state(state["rng"]["augment"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best_auc = float(state["best_metric"])
        self.stale = int(state.get("stale_epochs", 0))
        self.history = list(state.get("history", []))

    # -- loop -------------------------------------------------------------------------------------------------
    def run(self) -> None:
        from tqdm import tqdm

        images, labels = self.data.images["train"], self.data.labels["train"]
        for epoch in range(self.start_epoch, self.cfg.epochs):
            order = _epoch_order(len(labels), self.weights, self.sample_gen, self.dist.world_size)
            shard = order[self.dist.rank::self.dist.world_size]
            t0 = time.perf_counter()
            with tqdm(total=len(shard), desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="img",
                      disable=not self.dist.is_main, dynamic_ncols=True) as bar:
                loss = train_one_epoch(self.net, images, labels, shard, batch_size=self.cfg.batch_size,
                                       preprocess=self.preprocess, hw=self.hw, optimizer=self.optimizer,
                                       loss_fn=self.loss_fn, augment=self.augment_fn,
                                       scaler=self.scaler, label_smoothing=self.cfg.label_smoothing, progress=bar)
                train_s = time.perf_counter() - t0
                if len(self.bn_indices):
                    recompute_bn_stats(self.model, images, self.bn_indices, batch_size=self.cfg.batch_size,
                                       preprocess=self.preprocess, hw=self.hw)
                val_loss, val_auc = self.validate()
                bar.set_postfix(loss=f"{loss:.4f}", val_loss=f"{val_loss:.4f}", val_auc=f"{val_auc:.4f}")
            self._end_epoch(epoch, loss, val_loss, val_auc, train_s, len(order))
            try:
                for callback in self.callbacks:
                    callback.on_epoch_end(self, epoch, dict(self.history[-1]))
            except StopTraining as stop:
                self.stopped_by = str(stop) or type(stop).__name__
                logger.info("stopped after epoch %d by a callback: %s", epoch + 1, self.stopped_by)
                break
            if self.stale >= self.cfg.patience:
                logger.info("early stop: no val %s improvement for %d epochs", self.cfg.select_by, self.stale)
                break

    def validate(self) -> tuple[float, float]:
        """Validation loss and pooled ROC-AUC; per-group ROC-AUCs go to ``self.val_groups``.

        In DDP each rank scores its share and the results are gathered.
        """
        images, labels = self.data.images["val"], self.data.labels["val"]
        idx = np.arange(self.dist.rank, len(labels), self.dist.world_size)
        logits = predict_logits(self.model, images[idx], batch_size=max(64, self.cfg.batch_size),
                                preprocess=self.preprocess, hw=self.hw)
        parts = gather_objects((idx, logits), self.dist)
        all_idx = np.concatenate([p[0] for p in parts])
        all_logits = np.empty(len(labels), dtype=np.float32)
        all_logits[all_idx] = np.concatenate([p[1] for p in parts])
        with torch.no_grad():
            val_loss = float(self.loss_fn(torch.from_numpy(all_logits).unsqueeze(1).to(self.hw.device),
                                          torch.from_numpy(labels.astype(np.float32)).unsqueeze(1).to(self.hw.device)))
        self.val_groups = group_aucs(self.data.splits["val"], labels, all_logits)
        return val_loss, _roc_auc(labels, all_logits)

    def _end_epoch(self, epoch: int, loss: float, val_loss: float, val_auc: float, seconds: float, n: int) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        groups = getattr(self, "val_groups", {})
        score = selection_score(self.cfg.select_by, val_auc, groups)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(score if math.isfinite(score) else 0.0)
        else:
            self.scheduler.step()
        improved = math.isfinite(score) and score > self.best_auc
        if improved:
            self.best_auc, self.stale = score, 0
        else:
            self.stale += 1
        row = {"epoch": epoch + 1, "train_loss": round(loss, 6), "val_loss": round(val_loss, 6),
               "val_roc_auc": round(val_auc, 6), "val_select": round(score, 6), "lr": lr, "seconds": round(seconds, 2),
               "images_per_s": round(n / seconds, 2) if seconds > 0 else None, "best": improved,
               **{f"val_auc[{k}]": round(v, 6) for k, v in sorted(groups.items())}}
        self.history.append(row)
        logger.info("epoch %d: loss %.4f val_loss %.4f val_auc %.4f %s %.4f (%.0f img/s)", epoch + 1, loss, val_loss,
                    val_auc, self.cfg.select_by, score, row["images_per_s"] or 0)
        if self.dist.is_main:
            state = self.state(epoch)
            if improved:
                save_checkpoint({k: v for k, v in state.items() if k not in ("optimizer", "scheduler", "scaler")},
                                self.run_dir / "best.pt")
            save_checkpoint(state, self.run_dir / "last.pt")
            write_metrics_csv(self.history, self.run_dir / "metrics.csv")
        barrier(self.dist)


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> None:
    """Rewrite the per-epoch CSV atomically."""
    if not history:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0].keys()))
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


