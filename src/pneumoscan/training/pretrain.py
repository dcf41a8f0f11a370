"""Self-supervised pre-training on the training images (SimCLR), so a model can start from weights learned on
X-rays instead of from random ones or from ImageNet photos.

Why SimCLR: it needs no labels, no momentum encoder and no memory bank — one encoder, a small projection MLP and a
contrastive loss over two augmented views of each image (Chen et al. 2020, "A Simple Framework for Contrastive
Learning of Visual Representations"). That makes it the cheapest credible method to run on a CPU, and it reuses the
batch augmentation and the decode-once image cache of supervised training.

Only the ``train`` part of the patient-grouped split is used: the same loader, seed and validation fraction as
``pneumoscan train`` give the same split, so neither validation nor test images are ever seen, labelled or not.

Run folder::

    pretrain.json   configuration, split sizes, per-epoch loss history, linear-probe result (rewritten atomically)
    last.pt         full state after the latest epoch (for --resume)
    encoder.pt      written last: the encoder weights (no classifier) for ``pneumoscan train --init-from``
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pneumoscan import CLASS_NAMES, __version__
from pneumoscan.core.atomic import atomic_write_text
from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.errors import ConfigError
from pneumoscan.models.checkpoint import FORMAT_VERSION, save_checkpoint
from pneumoscan.models.hardware import Hardware, resolve_hardware
from pneumoscan.models.registry import count_parameters, create_model
from pneumoscan.training import trainer
from pneumoscan.training.augment import BatchAugment
from pneumoscan.training.config import SSLConfig, TrainConfig
from pneumoscan.training.forward import batches, forward_images, to_input
from pneumoscan.training.setup import build_optimizer, build_scheduler, prepare_data, prepare_run_dir, preprocess_for

logger = logging.getLogger(__name__)

ENCODER_KIND = "ssl-encoder"


def nt_xent_loss(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy for 2N embeddings where rows i and i+N are two views
    of one image: each row must pick its partner among the other 2N − 1 rows."""
    n2 = z.shape[0]
    if n2 % 2 or n2 < 4:
        raise ValueError("nt_xent_loss needs an even number of at least 4 embeddings (two views per image)")
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = n2 // 2
    targets = torch.cat([torch.arange(n, n2), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class NTXentLoss(nn.Module):
    """:func:`nt_xent_loss` as the loss function of :func:`pneumoscan.training.trainer.train_step` (no targets: the
    pairing of the two views is the target)."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return nt_xent_loss(embeddings, self.temperature)


class SimCLR(nn.Module):
    """Encoder (the architecture without its classifier) + projection MLP."""

    def __init__(self, encoder: nn.Module, feature_dim: int, hidden_dim: int, projection_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
                                       nn.ReLU(inplace=True), nn.Linear(hidden_dim, projection_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(images).flatten(1))


def build_encoder(cfg: TrainConfig) -> tuple[nn.Module, int]:
    """The architecture with ``num_classes=0`` (pooled features out) and its feature size."""
    encoder = create_model(cfg.model, pretrained=cfg.pretrained, weights=cfg.weights, num_classes=0)
    with torch.no_grad():
        was = encoder.training
        encoder.eval()
        dim = int(encoder(torch.zeros(1, 1, 64, 64)).flatten(1).shape[1])
        encoder.train(was)
    return encoder, dim


def preprocess_for_pretrain(cfg: TrainConfig) -> PreprocessConfig:
    """The normalisation ``pneumoscan train`` uses with the same options (:func:`.setup.preprocess_for`), so that
    fine-tuning sees what the encoder saw."""
    return preprocess_for(cfg)


class Pretrainer:
    """State of one SimCLR run; :meth:`run` goes from ``start_epoch`` to ``cfg.epochs``."""

    def __init__(self, cfg: TrainConfig, ssl: SSLConfig, run_dir: Path, images: np.ndarray, hw: Hardware) -> None:
        if len(images) < 2:
            raise ConfigError("self-supervised pre-training needs at least 2 training images")
        self.cfg, self.ssl, self.run_dir, self.images, self.hw = cfg, ssl, run_dir, images, hw
        self.preprocess = preprocess_for_pretrain(cfg)
        torch.manual_seed(cfg.seed)
        encoder, self.feature_dim = build_encoder(cfg)
        self.model = SimCLR(encoder, self.feature_dim, ssl.hidden_dim, ssl.projection_dim).to(hw.device)
        if hw.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = trainer.grad_scaler(hw)  # fp16: loss scaling, the same rule as supervised training
        self.loss_fn = NTXentLoss(ssl.temperature)
        self.order_gen = torch.Generator().manual_seed(cfg.seed + 11)
        self.augment = BatchAugment(cfg.augment, torch.Generator().manual_seed(cfg.seed + 23))
        self.start_epoch, self.history = 0, []

    def state(self, epoch: int) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "kind": "ssl-run",
                "model": {"name": self.cfg.model, "num_classes": 0, "in_chans": 1},
                "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epoch, "config": self.cfg.to_dict(),
                "ssl": asdict(self.ssl), "preprocess": self.preprocess.to_dict(), "class_names": list(CLASS_NAMES),
                "rng": {"torch": torch.get_rng_state(), "order": self.order_gen.get_state(),
                        "augment": self.augment.generator.get_state()},
                "history": self.history, "version": __version__,
                **({"scaler": self.scaler.state_dict()} if self.scaler else {})}

    def restore(self, state: dict[str, Any]) -> None:
        trainer.restore_fit_state(state, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                  scaler=self.scaler)
        self.order_gen.set_state(state["rng"]["order"])
        self.augment.generator.set_state(state["rng"]["augment"])
        self.start_epoch = int(state["epoch"]) + 1
        self.history = list(state.get("history", []))

    def train_epoch(self, progress: Any = None) -> float:
        """One pass over the training images in random order; returns the mean NT-Xent loss."""
        self.model.train()
        order = torch.randperm(len(self.images), generator=self.order_gen).numpy()
        total, seen = 0.0, 0
        for idx in batches(order, self.cfg.batch_size):
            if len(idx) < 2:
                continue  # a lone image has no negatives
            batch = self.images[np.sort(idx)]
            views = torch.cat([to_input(batch, self.preprocess, self.hw, self.augment),
                               to_input(batch, self.preprocess, self.hw, self.augment)])
            loss = trainer.train_step(self.model, self.loss_fn, views, None, optimizer=self.optimizer,
                                      scaler=self.scaler, hw=self.hw)
            total += float(loss) * len(idx)
            seen += len(idx)
            if progress is not None:
                progress.update(len(idx))
                progress.set_postfix(loss=f"{total / seen:.4f}")
        if not math.isfinite(total):
            raise FloatingPointError("self-supervised loss is not finite; lower --lr")
        return total / max(seen, 1)

    def run(self) -> None:
        from tqdm import tqdm

        for epoch in range(self.start_epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            with tqdm(total=len(self.images), desc=f"pretrain {epoch + 1}/{self.cfg.epochs}", unit="img",
                      dynamic_ncols=True) as bar:
                loss = self.train_epoch(bar)
            seconds = time.perf_counter() - t0
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.history.append({"epoch": epoch + 1, "loss": round(loss, 6), "lr": lr, "seconds": round(seconds, 2),
                                 "images_per_s": round(len(self.images) / seconds, 2) if seconds > 0 else None})
            logger.info("pretrain epoch %d: NT-Xent %.4f (%.1f img/s)", epoch + 1, loss,
                        self.history[-1]["images_per_s"] or 0)
            save_checkpoint(self.state(epoch), self.run_dir / "last.pt")

    def encoder_state(self, split: dict[str, Any], probe: dict[str, Any] | None) -> dict[str, Any]:
        """What ``encoder.pt`` holds: a checkpoint whose model has no classifier (``num_classes`` 0)."""
        return {"format_version": FORMAT_VERSION, "kind": ENCODER_KIND,
                "model": {"name": self.cfg.model, "num_classes": 0, "in_chans": 1},
                "state_dict": self.model.encoder.state_dict(), "preprocess": self.preprocess.to_dict(),
                "class_names": list(CLASS_NAMES), "config": self.cfg.to_dict(), "ssl": asdict(self.ssl),
                "method": "SimCLR (NT-Xent), two augmented views per image", "split": split,
                "history": self.history, "linear_probe": probe, "version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def embed(encoder: nn.Module, images: np.ndarray, preprocess: PreprocessConfig, hw: Hardware,
          batch_size: int = 64) -> np.ndarray:
    """Pooled features (N, D) of uint8 images, in eval mode."""
    return forward_images(encoder, images, batch_size=batch_size, preprocess=preprocess, hw=hw)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> dict[str, Any]:
    """Logistic regression on frozen features: the standard check that the representation carries the label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(train_y.tolist())) < 2 or len(set(val_y.tolist())) < 2:
        return {"val_roc_auc": None, "reason": "train or validation has one class only"}
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, class_weight="balanced"))
    clf.fit(train_x, train_y)
    auc = float(roc_auc_score(val_y, clf.predict_proba(val_x)[:, 1]))
    return {"val_roc_auc": round(auc, 6), "classifier": "standardised logistic regression (C=0.1, balanced)",
            "n_train": int(len(train_y)), "n_val": int(len(val_y))}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def pretrain(cfg: TrainConfig, ssl: SSLConfig, output: str | Path, *, resume: bool = False,
             cache_dir: Path | None = None) -> Path:
    """Run SimCLR on the training images of ``cfg.data`` and write ``OUTPUT/encoder.pt``; returns the run folder.

    With ``resume=True`` the configuration saved in ``last.pt`` is used (``epochs`` may be raised from ``cfg``).
    """
    run_dir = Path(output)
    hw = resolve_hardware(cfg.device, cfg.precision)
    resumed = prepare_run_dir(run_dir, resume)
    if resumed is not None:
        saved = TrainConfig.from_dict(resumed["config"])
        cfg = saved.replace(epochs=max(cfg.epochs, saved.epochs))
        ssl = SSLConfig.from_dict(resumed["ssl"])
    data = prepare_data(cfg, cache_dir)
    pretrainer = Pretrainer(cfg, ssl, run_dir, data.images["train"], hw)
    run_dir.mkdir(parents=True, exist_ok=True)
    split = {"seed": cfg.seed, "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction,
             "data": list(cfg.data), "max_train_images": cfg.max_train_images, "sizes": data.info["splits"]}
    info = {"config": cfg.to_dict(), "ssl": asdict(ssl), "split": split, "hardware": hw.description,
            "params": count_parameters(pretrainer.model.encoder), "pneumoscan": __version__, "torch": torch.__version__}
    _write_json(run_dir / "pretrain.json", info)
    if resumed is not None:
        pretrainer.restore(resumed)
        logger.info("resuming %s at epoch %d", run_dir, pretrainer.start_epoch + 1)
    logger.info("SimCLR pre-training of %s (%.2f M params) on %d training images; %s", cfg.model,
                count_parameters(pretrainer.model.encoder) / 1e6, len(data.images["train"]), hw.description)
    started = time.perf_counter()
    pretrainer.run()
    wall = time.perf_counter() - started
    probe = None
    if ssl.probe:
        feats = {k: embed(pretrainer.model.encoder, data.images[k], pretrainer.preprocess, hw)
                 for k in ("train", "val")}
        probe = linear_probe(feats["train"], data.labels["train"], feats["val"], data.labels["val"])
        logger.info("linear probe on frozen features: validation ROC-AUC %s", probe.get("val_roc_auc"))
    _write_json(run_dir / "pretrain.json", {**info, "history": pretrainer.history, "linear_probe": probe,
                                             "wall_seconds_this_session": round(wall, 1)})
    save_checkpoint(pretrainer.encoder_state(split, probe), run_dir / "encoder.pt")
    return run_dir
