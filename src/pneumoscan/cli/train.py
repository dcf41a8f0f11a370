"""``pneumoscan train``: train a model on a folder, a manifest or a public collection."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from pneumoscan.errors import ConfigError
from pneumoscan.models.precision import PRECISIONS

logger = logging.getLogger(__name__)

# --aug-acquisition: moderate imitation of other scanners and sites (each part applied to half the images).
ACQUISITION_PRESET = {"gamma": 0.3, "blur": 1.0, "noise": 0.03, "jpeg": 0.5, "downscale": 0.5, "text": 0.3}

# CLI option -> TrainConfig field, for options that map one to one.
_FIELDS = ("model", "image_size", "epochs", "batch_size", "lr", "weight_decay", "optimizer", "scheduler",
           "warmup_epochs", "weights", "init_from", "drop_rate", "balance", "label_smoothing", "mean", "std",
           "val_fraction", "test_fraction", "seed", "patience", "threshold_rule", "target_sensitivity", "precision",
           "device", "workers", "max_train_images", "precise_bn", "leak_check", "lung_margin", "lung_dim", "select_by",
           "intensity", "max_train_per_source", "max_val_per_source")
_FLAGS = ("pretrained", "freeze_backbone", "balance_sources", "lung_crop", "balance_groups")
_AUGMENT = ("rotation", "hflip", "zoom", "translate", "brightness", "contrast", "gamma", "blur", "noise", "jpeg",
            "downscale", "text")


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``loso``; defaults are None so a --config file can supply values."""
    from pneumoscan.training.config import BALANCE, INTENSITY, OPTIMIZERS, SCHEDULERS, SELECT_BY, THRESHOLD_RULES

    p.add_argument("--data", action="append", metavar="SPEC",
                   help="folder ({train,val,test}/{NORMAL,PNEUMONIA}), manifest CSV or FORMAT:PATH; repeatable")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="loader / label-policy option, e.g. uncertain=positive, views=all (repeatable)")
    p.add_argument("--config", type=Path, help="YAML file of training options (e.g. written by pneumoscan tune)")
    p.add_argument("--model", help="architecture (see `pneumoscan models`); default resnet18")
    p.add_argument("--image-size", type=int, help="square input size in pixels (default 224)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 10)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--scheduler", choices=SCHEDULERS)
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--pretrained", action="store_true", default=None, help="start from ImageNet weights")
    p.add_argument("--weights", help="local ImageNet weights file for --pretrained (offline)")
    p.add_argument("--init-from", metavar="FILE",
                   help="start from these weights: encoder.pt from `pneumoscan pretrain`, or a pneumoscan checkpoint "
                        "of the same architecture (the classifier is re-initialised when it does not fit)")
    p.add_argument("--freeze-backbone", action="store_true", default=None, help="train only the classifier head")
    p.add_argument("--drop-rate", type=float)
    p.add_argument("--balance", choices=BALANCE, help="class imbalance: weighted loss (default), sampler or none")
    p.add_argument("--balance-sources", action="store_true", default=None,
                   help="sample every --data source equally often")
    p.add_argument("--balance-groups", action="store_true", default=None,
                   help="sample so that within every source × view cell NORMAL and PNEUMONIA are equally frequent "
                        "(no acquisition cue predicts the label in training)")
    p.add_argument("--select-by", choices=SELECT_BY,
                   help="early stopping / best checkpoint by the validation ROC-AUC pooled (default), of the worst "
                        "source, or of the worst acquisition group (view:PA, view:AP, source:<no-view source>)")
    p.add_argument("--intensity", choices=INTENSITY,
                   help="per-image intensity standardisation, recorded in the checkpoint and applied by predict, serve "
                        "and ONNX: none (default), equalize (histogram) or clahe")
    p.add_argument("--max-train-per-source", type=int, metavar="N",
                   help="at most N training images of every source (random, same label mix; short experiments)")
    p.add_argument("--max-val-per-source", type=int, metavar="N", help="at most N validation images of every source")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--mean", type=float, help="input normalisation mean (default: by pretrained or not)")
    p.add_argument("--std", type=float)
    p.add_argument("--lung-crop", action="store_true", default=None,
                   help="crop every image to its lung fields (shipped lung U-Net) before resizing; recorded in the "
                        "checkpoint, so predict/evaluate/serve crop the same way (images without lungs are used whole)")
    p.add_argument("--lung-margin", type=float,
                   help="with --lung-crop: margin around the lung box, fraction of its width/height (default 0.1)")
    p.add_argument("--lung-dim", type=float,
                   help="with --lung-crop: darken what lies outside the lungs (0 = off, the default; 1 = black)")
    for name in _AUGMENT:
        p.add_argument(f"--aug-{name}", type=float, dest=f"aug_{name}", help=f"augmentation {name} (0 = off)")
    p.add_argument("--aug-acquisition", action="store_true",
                   help="scanner/site imitation preset: gamma 0.3, blur 1.0, noise 0.03, jpeg 0.5, downscale 0.5, "
                        "text 0.3 (single --aug-* options override it)")
    p.add_argument("--no-augment", action="store_true", help="switch all augmentation off")
    p.add_argument("--val-fraction", type=float, help="share of train patients held out for validation (0.15)")
    p.add_argument("--test-fraction", type=float, help="share carved as test when the data has no test split")
    p.add_argument("--seed", type=int)
    p.add_argument("--patience", type=int, help="early stopping: epochs without val ROC-AUC gain (default 5)")
    p.add_argument("--threshold-rule", choices=THRESHOLD_RULES, help="how the default threshold is chosen on val")
    p.add_argument("--target-sensitivity", type=float, help="for --threshold-rule sensitivity (default 0.95)")
    p.add_argument("--precision", choices=PRECISIONS, help="autocast (auto: by hardware)")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument("--workers", type=int, help="decode processes for the image cache (0 = all cores)")
    p.add_argument("--max-train-images", type=int, help="train on a random subset (quick experiments); 0 = all images")
    p.add_argument("--precise-bn", type=int, metavar="N",
                   help="before each validation, recompute BatchNorm statistics as an exact average over N training "
                        "images (fixes lagging statistics of briefly trained networks; 0 = off, the default)")
    p.add_argument("--leak-check", choices=("warn", "error", "off"), help="train/test shared patients or images")
    p.add_argument("--cache-dir", type=Path, help="image cache folder (default ~/.cache/pneumoscan)")


def config_from_args(args: argparse.Namespace) -> Any:
    """Merge: dataclass defaults < --config file < explicit command-line options."""
    from pneumoscan.data.options import parse_data_options
    from pneumoscan.training.config import TrainConfig, load_config_file

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for name in _FIELDS + _FLAGS:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    for name in ("augment", "data_options"):  # a wrong type: from_dict names the option (no TypeError here)
        if values.get(name) is not None and not isinstance(values[name], dict):
            return TrainConfig.from_dict(values)
    aug = dict(values.get("augment") or {})
    if getattr(args, "aug_acquisition", False):
        aug.update(ACQUISITION_PRESET)
    for name in _AUGMENT:
        v = getattr(args, f"aug_{name}", None)
        if v is not None:
            aug[name] = v
    if getattr(args, "no_augment", False):
        aug = dict.fromkeys(_AUGMENT, 0.0)
    if aug:
        values["augment"] = aug
    if args.data:
        values["data"] = args.data
    opts = parse_data_options(args.data_option)
    if opts:
        values["data_options"] = {**(values.get("data_options") or {}), **opts}
    return TrainConfig.from_dict(values)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model", description=__doc__)
    add_train_options(p)
    p.add_argument("--output", "-o", type=Path, required=True, help="run folder (created; must be empty)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumoscan.training.setup import fit

    if args.resume and not args.data and not args.config:
        cfg = _resume_config(args)
    else:
        cfg = config_from_args(args)
    run_dir = fit(cfg, args.output, resume=args.resume, cache_dir=args.cache_dir)
    summary = run_dir / "summary.json"
    if summary.is_file() and os.environ.get("RANK", "0") == "0":
        print(f"run complete: {run_dir} (best checkpoint {run_dir / 'best.pt'})")
    return 0


def _resume_config(args: argparse.Namespace) -> Any:
    """On --resume without --data, the saved config is used; explicit --epochs/--patience may extend it."""
    from pneumoscan.models.checkpoint import load_checkpoint
    from pneumoscan.training.config import TrainConfig

    last = Path(args.output) / "last.pt"
    saved = TrainConfig.from_dict(load_checkpoint(last)["config"]) if last.is_file() else None
    if saved is None:
        raise ConfigError(f"{args.output}: nothing to resume (no last.pt)")
    return saved.replace(epochs=args.epochs or saved.epochs, patience=args.patience or saved.patience)
