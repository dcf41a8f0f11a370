"""Train and evaluate the lung-field U-Net (:mod:`pneumoscan.models.lung`) on a folder of images and lung masks.

Data layout (the one of ``../shared/data/lung_masks``)::

    manifest.csv     image,mask,source[,...]   paths relative to the folder; one image per patient
    images/*.jpg     grey chest X-rays
    masks/*.png      same stem, 1 (or 255) = lung, 0 = background

The split is by image (each image is one patient in the NLM sets), stratified by source, from a seeded local RNG,
and recorded in the checkpoint: ``evaluate`` scores exactly the held-out test images of the run it is given.
Validation Dice chooses the epoch; the test part is only scored by :func:`evaluate_segmenter`.

Run folder: ``best.pt`` (best validation Dice), ``last.pt``, ``metrics.csv``, ``splits.csv``, ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pneumoscan.core.atomic import atomic_path, atomic_write_text
from pneumoscan.data.preprocess import PreprocessConfig, prepare, to_float
from pneumoscan.errors import ConfigError, DataError, ImageReadError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MaskRecord:
    """One image with its lung mask."""

    image: str
    mask: str
    source: str

    @property
    def stem(self) -> str:
        return Path(self.image).stem


@dataclass(frozen=True)
class SegmentConfig:
    """A lung-segmentation training run. See ``pneumoscan segment train --help``."""

    data: str = ""
    image_size: int = 128
    base: int = 16
    depth: int = 3
    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    max_minutes: float = 0.0
    augment: bool = True
    threads: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")
        if not (0 < self.val_fraction < 0.5 and 0 <= self.test_fraction < 0.5):
            raise ConfigError("val_fraction must be in (0, 0.5) and test_fraction in [0, 0.5)")
        if self.image_size % (2 ** self.depth):
            raise ConfigError(f"image_size {self.image_size} must be divisible by 2**depth = {2 ** self.depth}")


# -- data ----------------------------------------------------------------------------------------------------------
def load_mask_records(folder: str | Path) -> list[MaskRecord]:
    """Read ``manifest.csv`` of a lung-mask folder; :class:`DataError` naming the problem otherwise."""
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{folder}: no manifest.csv (columns image,mask,source) found")
    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"image", "mask"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    records = [MaskRecord(str(folder / r["image"]), str(folder / r["mask"]), r.get("source") or "all") for r in rows]
    if not records:
        raise DataError(f"{manifest}: no rows")
    return records


def split_records(records: list[MaskRecord], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[MaskRecord]]:
    """Seeded split by image, stratified by source (every source keeps its share in each part)."""
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[MaskRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.stem):
        by_source[r.source].append(r)
    out: dict[str, list[MaskRecord]] = {k: [] for k in SPLITS}
    for source in sorted(by_source):
        recs = by_source[source]
        order = rng.permutation(len(recs))
        n_test = int(round(test_fraction * len(recs)))
        n_val = max(1, int(round(val_fraction * len(recs))))
        for j, i in enumerate(order):
            part = "test" if j < n_test else "val" if j < n_test + n_val else "train"
            out[part].append(recs[i])
    if not out["train"]:
        raise DataError("too few images to split into train/val/test")
    return out


def read_mask(path: str) -> np.ndarray:
    """A lung mask as a bool array (any non-zero pixel is lung)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    except (OSError, ValueError) as err:
        raise ImageReadError(path, f"cannot read mask ({err})") from err
    return arr > 0


def mask_to_size(mask: np.ndarray, size: int) -> np.ndarray:
    """Bool mask → float32 (size, size) lung fraction per pixel (area-averaged), the training target."""
    im = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def load_arrays(records: list[MaskRecord], size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, S, S) prepared as the segmenter sees them, and float32 target masks (N, S, S)."""
    from pneumoscan.data.io import read_image

    images = np.empty((len(records), size, size), dtype=np.uint8)
    masks = np.empty((len(records), size, size), dtype=np.float32)
    for i, r in enumerate(records):
        images[i] = prepare(read_image(r.image), size)
        masks[i] = mask_to_size(read_mask(r.mask), size)
    return images, masks


# -- metrics -------------------------------------------------------------------------------------------------------
def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two bool masks (1.0 for two empty masks)."""
    inter = float(np.logical_and(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    union = total - inter
    if total == 0:
        return 1.0, 1.0
    return 2 * inter / total, inter / union


def upsample_probabilities(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(S, S) lung probabilities → (H, W) by bilinear interpolation (to score against full-size masks)."""
    im = Image.fromarray(np.asarray(probs, dtype=np.float32), mode="F")
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


# -- training ------------------------------------------------------------------------------------------------------
def _augment(images: Any, masks: Any, gen: Any) -> tuple[Any, Any]:
    """Random affine (rotation ±10°, scale 0.75–1.15, shift ±8 %, flip) applied to image and mask alike, then
    brightness, contrast and gamma on the image: the lung model must also find lungs in children's films, in
    zoomed-out or shifted images and in flipped ones, not only in the adult PA films it is trained on."""
    import torch
    import torch.nn.functional as F

    n = images.shape[0]

    def uniform(lo: float, hi: float) -> Any:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = uniform(-10, 10) * math.pi / 180
    scale = uniform(0.75, 1.15)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    tx, ty = uniform(-0.08, 0.08), uniform(-0.08, 0.08)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(uniform(-0.35, 0.35)).view(n, 1, 1, 1)
    contrast = uniform(0.75, 1.25).view(n, 1, 1, 1)
    bright = uniform(-0.1, 0.1).view(n, 1, 1, 1)
    images = (images.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5 + bright
    return images.clamp(0, 1), masks


def _loss(logits: Any, target: Any) -> Any:
    """BCE plus soft Dice: BCE alone under-weights the thin lung borders, Dice alone trains unstably."""
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return bce + (1 - dice).mean()


def _predict(model: Any, images: np.ndarray, preprocess: PreprocessConfig, batch_size: int = 64) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(to_float(np.asarray(images[s:s + batch_size]), preprocess)[:, None])
            out.append(torch.sigmoid(model(x)).numpy()[:, 0])
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:], dtype=np.float32)


def _mean_dice(probs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean([dice_iou(p > 0.5, t > 0.5)[0] for p, t in zip(probs, targets, strict=True)]))


def train_segmenter(cfg: SegmentConfig, output: str | Path) -> Path:
    """Train the lung U-Net and write the run folder; returns it. The test part is never looked at here."""
    import torch

    from pneumoscan.models.lung import LungNetConfig, build_lung_unet, lung_state

    run_dir = Path(output)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: output folder is not empty; choose another")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    records = load_mask_records(cfg.data)
    splits = split_records(records, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    preprocess = PreprocessConfig(image_size=cfg.image_size, mean=0.5, std=0.25)
    t_load = time.perf_counter()
    train_x, train_y = load_arrays(splits["train"], cfg.image_size)
    val_x, val_y = load_arrays(splits["val"], cfg.image_size)
    logger.info("loaded %d train / %d val images in %.1f s", len(train_x), len(val_x), time.perf_counter() - t_load)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_splits(splits, run_dir / "splits.csv")

    torch.manual_seed(cfg.seed)
    model = build_lung_unet(LungNetConfig(base=cfg.base, depth=cfg.depth))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    xs = torch.from_numpy(train_x.astype(np.float32) / 255.0)[:, None]
    ys = torch.from_numpy(train_y)[:, None]
    history: list[dict[str, Any]] = []
    best = -1.0
    started = time.perf_counter()
    split_info = {k: [r.stem for r in v] for k, v in splits.items()}
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        train_loss = _train_epoch(model, opt, sched, xs, ys, cfg, preprocess, gen)
        val_dice = _mean_dice(_predict(model, val_x, preprocess), val_y)
        seconds = time.perf_counter() - t0
        improved = val_dice > best
        best = max(best, val_dice)
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_dice": round(val_dice, 5),
               "lr": opt.param_groups[0]["lr"], "seconds": round(seconds, 1), "best": improved}
        history.append(row)
        logger.info("epoch %d: loss %.4f val Dice %.4f (%.0f s)", epoch + 1, row["train_loss"], val_dice, seconds)
        state = lung_state(model, preprocess, epoch=epoch + 1, val_dice=val_dice, split=split_info,
                           config=asdict(cfg), history=history)
        if improved:
            _save(state, run_dir / "best.pt")
        _save(state, run_dir / "last.pt")
        _write_history(history, run_dir / "metrics.csv")
        if cfg.max_minutes and time.perf_counter() - started > cfg.max_minutes * 60 and epoch + 1 < cfg.epochs:
            logger.warning("stopping after epoch %d: --max-minutes %.1f reached", epoch + 1, cfg.max_minutes)
            break
    wall = time.perf_counter() - started
    summary = {"best_val_dice": best, "epochs_run": len(history), "train_seconds": round(wall, 1),
               "n": {k: len(v) for k, v in splits.items()}, "torch_threads": torch.get_num_threads()}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return run_dir


def _train_epoch(model: Any, opt: Any, sched: Any, xs: Any, ys: Any, cfg: SegmentConfig,
                 preprocess: PreprocessConfig, gen: Any) -> float:
    """One pass over the training images in a random order; returns the mean loss."""
    import torch

    model.train()
    order = torch.randperm(len(xs), generator=gen)
    total = 0.0
    for s in range(0, len(order), cfg.batch_size):
        idx = order[s:s + cfg.batch_size]
        image, target = xs[idx], ys[idx]
        if cfg.augment:
            image, target = _augment(image, target, gen)
        image = (image - preprocess.mean) / preprocess.std
        loss = _loss(model(image), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
    return total / len(xs)


def _save(state: dict[str, Any], path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _write_splits(splits: dict[str, list[MaskRecord]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "source", "split"])
    for name, recs in splits.items():
        for r in recs:
            w.writerow([Path(r.image).name, r.source, name])
    atomic_write_text(path, buf.getvalue())


def _write_history(history: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


# -- evaluation ----------------------------------------------------------------------------------------------------
def select_split(records: list[MaskRecord], state: dict[str, Any], split: str) -> list[MaskRecord]:
    """The records of ``split`` as recorded in a lung checkpoint (``all`` = every record)."""
    if split == "all":
        return records
    recorded = (state.get("split") or {}).get(split)
    if recorded is None:
        raise ConfigError(f"this lung model records no '{split}' split; use --split all")
    wanted = set(recorded)
    chosen = [r for r in records if r.stem in wanted]
    if len(chosen) != len(wanted):
        raise DataError(f"{len(wanted) - len(chosen)} of the {len(wanted)} recorded {split} images are not in this "
                        "data folder (is it the folder the lung model was trained on?)")
    return chosen


def evaluate_segmenter(segmenter: Any, records: list[MaskRecord]) -> dict[str, Any]:
    """Dice and IoU per image against the full-size masks, summarised per source and pooled.

    The prediction at the segmenter's resolution is upsampled bilinearly to the mask's size and thresholded at 0.5,
    so the figures include the cost of working at low resolution.
    """
    from pneumoscan.data.io import read_image

    per_source: dict[str, list[tuple[float, float]]] = defaultdict(list)
    rows = []
    for r in records:
        truth = read_mask(r.mask)
        probs = segmenter.probabilities(read_image(r.image))
        d, j = dice_iou(upsample_probabilities(probs, truth.shape) > 0.5, truth)
        per_source[r.source].append((d, j))
        rows.append({"image": Path(r.image).name, "source": r.source, "dice": round(d, 5), "iou": round(j, 5)})

    def summary(values: list[tuple[float, float]]) -> dict[str, float]:
        arr = np.asarray(values)
        return {"n": len(arr), "dice_mean": float(arr[:, 0].mean()), "dice_median": float(np.median(arr[:, 0])),
                "dice_min": float(arr[:, 0].min()), "iou_mean": float(arr[:, 1].mean())}

    out = {"per_source": {s: summary(v) for s, v in sorted(per_source.items())},
           "pooled": summary([x for v in per_source.values() for x in v]), "images": rows}
    return out
