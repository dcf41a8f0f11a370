"""Everything ``pneumoscan train`` does before and around the loop: from a data spec to a run folder with best/last
checkpoints, metrics and a chosen threshold.

:func:`fit` reads top to bottom: :func:`prepare_run_dir` (empty folder, or ``last.pt`` to resume) →
:func:`prepare_data` (records, patient-grouped splits, caps, leak check, the decode-once image cache) →
:func:`build_trainer` (model incl. ``--init-from``, optimizer, scheduler, sampling weights) →
:meth:`pneumoscan.training.trainer.Trainer.run` (the loop) → :func:`pneumoscan.training.finalize.finalize_run`.

Run folder::

    config.yaml        resolved TrainConfig
    data.json          sources, label policies, split sizes, leak check
    splits.csv         every image with its split (validation carved from train, grouped by patient)
    metrics.csv        one row per epoch (train loss, val loss, val ROC-AUC, lr, seconds, images/s)
    last.pt            full state after the latest epoch (for --resume)
    best.pt            best validation ROC-AUC, with temperature, operating points and threshold (after training)
    val_predictions.csv
    summary.json       written last: its presence means the run completed

The test split is never decoded or looked at here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumoscan import __version__
from pneumoscan.core.atomic import atomic_write_text
from pneumoscan.data.cache import load_or_build
from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.data.records import Record, distinct_source_names
from pneumoscan.data.sources import load_records
from pneumoscan.data.splits import make_splits, save_splits, shared_patients
from pneumoscan.errors import CheckpointError, ConfigError, DataError
from pneumoscan.models.checkpoint import load_checkpoint, remove_stale_temp_files
from pneumoscan.models.hardware import Hardware, resolve_hardware
from pneumoscan.models.init_weights import load_init_weights
from pneumoscan.models.registry import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, count_parameters, create_model
from pneumoscan.training.config import TrainConfig, dump_config
from pneumoscan.training.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from pneumoscan.training.finalize import finalize_run
from pneumoscan.training.trainer import EpochCallback, PreparedData, Trainer, acquisition_cell

logger = logging.getLogger(__name__)


def preprocess_for(cfg: TrainConfig) -> PreprocessConfig:
    """Normalisation: ImageNet grey statistics for pretrained weights, centred [0, 1] otherwise; a model started
    ``--init-from`` a file keeps the normalisation its weights were learned with. With ``lung_crop`` the config
    names the shipped lung model, so predictions later crop with the very same one."""
    lung: dict[str, Any] = {}
    if cfg.lung_crop:
        from pneumoscan.inference.lungs import shipped_lung_name

        lung = {"lung_crop": True, "lung_margin": cfg.lung_margin, "lung_dim": cfg.lung_dim,
                "lung_model": shipped_lung_name()}
    if cfg.init_from and cfg.mean is None and cfg.std is None:
        saved = _init_file_preprocess(cfg.init_from)
        return PreprocessConfig(image_size=cfg.image_size, mean=saved["mean"], std=saved["std"],
                                intensity=cfg.intensity, **lung)
    pretrained = cfg.pretrained or cfg.weights is not None
    mean = cfg.mean if cfg.mean is not None else (IMAGENET_GREY_MEAN if pretrained else 0.5)
    std = cfg.std if cfg.std is not None else (IMAGENET_GREY_STD if pretrained else 0.25)
    return PreprocessConfig(image_size=cfg.image_size, mean=mean, std=std, intensity=cfg.intensity, **lung)


def _init_file_preprocess(path: str) -> dict[str, Any]:
    try:
        return dict(load_checkpoint(path)["preprocess"])
    except CheckpointError as err:
        raise ConfigError(f"--init-from: {err}") from err


def load_data_records(cfg: TrainConfig) -> tuple[list[Record], list[dict[str, Any]]]:
    """Read every ``--data`` spec; returns the records and one description (with label policy) per source."""
    if not cfg.data:
        raise ConfigError("no --data given")
    records: list[Record] = []
    described = []
    seen: set[str] = set()
    for spec in cfg.data:
        recs = distinct_source_names(load_records(spec, dict(cfg.data_options)), spec, seen)
        records += recs
        described.append({"spec": spec, "n_images": len(recs), "label_policy": _describe_policy(spec, cfg)})
    return records, described


def _describe_policy(spec: str, cfg: TrainConfig) -> Any:
    try:
        from pneumoscan.data.label_policy import describe_policy
    except ImportError:
        return "folder/manifest labels as given"
    try:
        return describe_policy(spec, dict(cfg.data_options))
    except (KeyError, ValueError, DataError):
        return "folder/manifest labels as given"


def prepare_data(cfg: TrainConfig, cache_dir: Path | None) -> PreparedData:
    """Load records, split by patient, check for leaks and decode train/val images (through the cache)."""
    records, sources = load_data_records(cfg)
    splits = make_splits(records, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    if cfg.max_train_images and len(splits["train"]) > cfg.max_train_images:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(len(splits["train"]), cfg.max_train_images, replace=False))
        splits["train"] = [splits["train"][i] for i in keep]
    for name, cap in (("train", cfg.max_train_per_source), ("val", cfg.max_val_per_source)):
        if cap:
            splits[name] = cap_per_source(splits[name], cap, cfg.seed)
    leaks = _leak_check(splits, cfg.leak_check)
    preprocess = preprocess_for(cfg)
    images, labels = {}, {}
    lung_info: dict[str, Any] = {}
    segmenter = None
    if preprocess.lung_crop:
        from pneumoscan.inference.lungs import load_lung_segmenter

        segmenter = load_lung_segmenter(preprocess.lung_model)
    for name in ("train", "val"):
        paths = [r.path for r in splits[name]]
        images[name] = load_or_build(paths, preprocess, cache_dir, cfg.workers, preprocess, segmenter)
        labels[name] = np.array([r.label for r in splits[name]], dtype=np.int64)
        if segmenter is not None:
            lung_info[name] = _lung_fallbacks(paths, segmenter, cache_dir, cfg.workers)
    counts = {k: {"n": len(v), "pneumonia": sum(r.label == 1 for r in v)} for k, v in splits.items()}
    info: dict[str, Any] = {"sources": sources, "splits": counts, "leak_check": leaks}
    if preprocess.lung_crop:
        info["lung_crop"] = {"lung_model": preprocess.lung_model, "margin": preprocess.lung_margin,
                             "dim": preprocess.lung_dim, **lung_info}
    return PreparedData(splits, images, labels, info)


def _lung_fallbacks(paths: list[str], segmenter: Any, cache_dir: Path | None, workers: int) -> dict[str, Any]:
    """Which images were used whole because no lungs were found in them (reported in data.json and the log)."""
    from pneumoscan.data.cache import lung_geometries

    geos = lung_geometries(paths, segmenter, cache_dir, workers)
    fallback = [(p, g.reason) for p, g in zip(paths, geos, strict=True) if not g.found]
    if fallback:
        logger.warning("lung crop: no lungs found in %d of %d images (used whole), e.g. %s", len(fallback),
                       len(paths), os.path.basename(fallback[0][0]))
    return {"n": len(paths), "no_lungs_found": len(fallback),
            "images_used_whole": [{"path": p, "reason": r} for p, r in fallback]}


def cap_per_source(records: list[Record], cap: int, seed: int) -> list[Record]:
    """At most ``cap`` records of every source, drawn at random (by ``seed``) in the same label mix, order kept.

    Why: for short equal-budget experiments the 4,000 Kermany images would otherwise drown the few hundred adult ones
    and cost most of the CPU time; the adult sources stay whole.
    """
    import zlib

    keep: set[int] = set()
    by_cell: dict[tuple[str, int | None], list[int]] = {}
    for i, r in enumerate(records):
        by_cell.setdefault((r.source, r.label), []).append(i)
    for source in sorted({s for s, _ in by_cell}):
        # one generator per source, seeded by its name: a source's subset does not depend on the other sources
        rng = np.random.default_rng([seed + 41, zlib.crc32(source.encode())])
        cells = sorted((c for c in by_cell if c[0] == source), key=lambda c: -1 if c[1] is None else c[1])
        total = sum(len(by_cell[c]) for c in cells)
        for c in cells:
            idx = by_cell[c]
            n = len(idx) if total <= cap else max(1, round(cap * len(idx) / total))
            keep.update(rng.choice(idx, min(n, len(idx)), replace=False).tolist())
    return [r for i, r in enumerate(records) if i in keep]


def _leak_check(splits: dict[str, list[Record]], mode: str) -> list[str]:
    if mode == "off":
        return []
    dev = splits["train"] + splits["val"]
    problems = []
    try:
        from pneumoscan.data.audit import quick_leak_check

        problems = list(quick_leak_check(dev, splits["test"]))
    except ImportError:
        shared = shared_patients(dev, splits["test"])
        if shared:
            problems = [f"{len(shared)} patient ids are in both train/val and test (e.g. {sorted(shared)[0]})"]
    for p in problems:
        if mode == "error":
            raise DataError(f"train/test leak: {p} (use --leak-check warn to continue anyway)")
        logger.warning("train/test leak check: %s", p)
    return problems


def _group_weights(records: list[Record]) -> np.ndarray:
    """Weights that make the label independent of the acquisition cell (source × view) in what training sees.

    Within every cell (:func:`acquisition_cell` refined by source: ``source|view``) each label present gets the same
    share of the cell's draws, and each cell keeps its natural share of the epoch. So an AP film is as likely to be
    NORMAL as PNEUMONIA and so is a PA film of the same source: neither the view nor the hospital predicts the label.
    A cell with one class only (the lung_masks normals) cannot be balanced and keeps its images' natural weight.
    """
    from collections import Counter

    cells = [f"{r.source}|{acquisition_cell(r)}" for r in records]
    cell_n = Counter(cells)
    cell_label_n = Counter(zip(cells, (r.label for r in records), strict=True))
    labels_in = Counter(c for c, _ in cell_label_n)
    w = np.array([cell_n[c] / (labels_in[c] * cell_label_n[(c, r.label)]) for c, r in zip(cells, records,
                                                                                           strict=True)])
    return w / w.sum()


def _sampling_weights(records: list[Record], cfg: TrainConfig) -> np.ndarray | None:
    """Per-image sampling weights: balance classes (balance=sampler) and/or sources (balance_sources), or labels
    within every acquisition cell (balance_groups)."""
    if cfg.balance_groups:
        return _group_weights(records)
    if cfg.balance != "sampler" and not cfg.balance_sources:
        return None
    from collections import Counter

    if cfg.balance == "sampler" and cfg.balance_sources:
        # every source gets the same share, and within it every class: weight 1 / (classes in source × class count)
        keys = [(r.source, r.label) for r in records]
        counts = Counter(keys)
        classes_in = Counter(source for source, _ in counts)
        w = np.array([1.0 / (classes_in[s] * counts[(s, lab)]) for s, lab in keys])
    else:
        values = [r.label if cfg.balance == "sampler" else r.source for r in records]
        counts_v = Counter(values)
        w = np.array([1.0 / counts_v[v] for v in values])
    return w / w.sum()


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    """Per-epoch LR schedule, with optional linear warm-up for cosine."""
    if cfg.scheduler == "cosine":
        warm = cfg.warmup_epochs

        def factor(epoch: int) -> float:
            if epoch < warm:
                return (epoch + 1) / (warm + 1)
            progress = (epoch - warm) / max(1, cfg.epochs - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.3, patience=1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _e: 1.0)


def build_model(cfg: TrainConfig) -> nn.Module:
    model = create_model(cfg.model, pretrained=cfg.pretrained, weights=cfg.weights, drop_rate=cfg.drop_rate)
    if cfg.init_from:
        meta = load_init_weights(model, cfg.init_from, cfg.model)
        _warn_split_mismatch(meta.get("split"), cfg)
    if cfg.freeze_backbone:
        head = model.get_classifier() if hasattr(model, "get_classifier") else model.classifier  # type: ignore
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
    return model


def _warn_split_mismatch(split: dict[str, Any] | None, cfg: TrainConfig) -> None:
    """Self-supervised weights must come from this run's training images only, or validation is no longer unseen."""
    if not split:
        return
    ours = {"seed": cfg.seed, "val_fraction": cfg.val_fraction, "data": list(cfg.data)}
    theirs = {k: split.get(k) for k in ours}
    if theirs != ours:
        logger.warning("--init-from weights were pre-trained with a different split (%s, here %s): validation "
                       "images may have been seen during pre-training", theirs, ours)


def build_trainer(cfg: TrainConfig, run_dir: Path, data: PreparedData, hw: Hardware, dist_info: DistInfo, *,
                  callbacks: Sequence[EpochCallback] = ()) -> Trainer:
    """The :class:`Trainer` of one run: seeds torch, builds the model (``--init-from`` included), its optimizer and
    scheduler and the sampling weights of the training images. Raises before anything is written when the model
    cannot be built."""
    preprocess = preprocess_for(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(hw.device)
    if hw.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    return Trainer(cfg, run_dir, data, hw, dist_info, model=model, optimizer=optimizer,
                   scheduler=build_scheduler(optimizer, cfg), preprocess=preprocess,
                   sampling_weights=_sampling_weights(data.splits["train"], cfg), callbacks=callbacks)


def prepare_run_dir(run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """Checks the output folder; returns the last checkpoint when resuming."""
    if resume:
        last = run_dir / "last.pt"
        if not last.is_file():
            raise ConfigError(f"{run_dir}: nothing to resume (no last.pt)")
        state = load_checkpoint(last)
        remove_stale_temp_files(run_dir)  # a save killed mid-way (kill -9) could not remove its .last.pt.<pid>.tmp
        return state
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: output folder is not empty; use --resume to continue it or choose another")
    return None


def fit(cfg: TrainConfig, output: str | Path, *, resume: bool = False, cache_dir: Path | None = None) -> Path:
    """Train a model as configured and return the run folder.

    Data problems are found before the run folder is created, so a failed start leaves nothing that looks like a run.
    With ``resume=True`` the configuration stored in ``last.pt`` is used (``epochs`` and ``patience`` may be raised
    from ``cfg``), and training continues from the next epoch with optimizer, scheduler and RNG states restored.
    """
    run_dir = Path(output)
    hw = resolve_hardware(cfg.device, cfg.precision)
    dist_info = init_distributed(hw.device_type)
    try:
        resumed = prepare_run_dir(run_dir, resume)
        if resumed is not None:
            saved = TrainConfig.from_dict(resumed["config"])
            cfg = saved.replace(epochs=max(cfg.epochs, saved.epochs), patience=max(cfg.patience, saved.patience))
        data = prepare_data(cfg, cache_dir)
        trainer = build_trainer(cfg, run_dir, data, hw, dist_info)  # builds the model: fails before anything is written
        if dist_info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, run_dir / "config.yaml")
            save_splits(data.splits, run_dir / "splits.csv")
            info = {**data.info, "hardware": hw.description, "world_size": dist_info.world_size,
                    "pneumoscan": __version__, "torch": torch.__version__}
            atomic_write_text(run_dir / "data.json", json.dumps(info, indent=2, default=str))
        barrier(dist_info)
        if resumed is not None:
            trainer.restore(resumed)
            logger.info("resuming %s at epoch %d", run_dir, trainer.start_epoch + 1)
        logger.info("model %s (%.2f M params) on %s; train %d / val %d images", cfg.model,
                    count_parameters(trainer.model) / 1e6, hw.description, len(data.labels["train"]),
                    len(data.labels["val"]))
        started = time.perf_counter()
        trainer.run()
        if dist_info.is_main:
            finalize_run(run_dir, data, trainer, wall_seconds=time.perf_counter() - started)
        barrier(dist_info)
        broadcast_object(None, dist_info)
        return run_dir
    finally:
        cleanup(dist_info)
