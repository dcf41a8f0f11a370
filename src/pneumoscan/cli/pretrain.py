"""``pneumoscan pretrain``: self-supervised (SimCLR) pre-training on the training images, no labels used.

Uses only the training part of the same patient-grouped split that ``pneumoscan train`` makes (same --data, --seed
and --val-fraction), then writes OUTPUT/encoder.pt. Fine-tune it with
``pneumoscan train --init-from OUTPUT/encoder.pt --model SAME_MODEL ...``. At the end a linear probe (logistic
regression on frozen features, fitted on train, scored on validation) reports how much the features already carry.

Example::

    pneumoscan pretrain --data ../shared/data/kermany224 --model cnn --image-size 128 --epochs 5 -o runs/ssl-cnn
    pneumoscan train --data ../shared/data/kermany224 --model cnn --image-size 128 \\
        --init-from runs/ssl-cnn/encoder.pt -o runs/cnn-ssl
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: The pneumoscan train options that pre-training uses (flags generated from TrainConfig) and its other defaults.
TRAIN_OPTIONS = ("data", "data_options", "model", "image_size", "epochs", "batch_size", "lr", "weight_decay",
                 "warmup_epochs", "pretrained", "weights", "augment.rotation", "augment.hflip", "augment.zoom",
                 "augment.translate", "augment.brightness", "augment.contrast", "val_fraction", "test_fraction",
                 "seed", "max_train_images", "precision", "device", "workers")
PRETRAIN_DEFAULTS = {"model": "cnn", "image_size": 128, "epochs": 10, "batch_size": 64, "weight_decay": 1e-5,
                     "warmup_epochs": 1}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pneumoscan.training.config import SSLConfig, TrainConfig
    from pneumoscan.training.options import add_options

    p = sub.add_parser("pretrain", help="self-supervised pre-training on the training images (SimCLR)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shown: dict[str, object] = {**PRETRAIN_DEFAULTS, **dict.fromkeys(
        (o for o in TRAIN_OPTIONS if o.startswith("augment.")), "strong SimCLR-style setting")}
    add_options(p, TrainConfig, include=TRAIN_OPTIONS, defaults=shown, required=("data",))
    add_options(p, SSLConfig)  # --temperature, --projection-dim, --hidden-dim, --no-probe
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--output", "-o", type=Path, required=True, help="run folder (created; must be empty)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pneumoscan.data.options import parse_data_options
    from pneumoscan.errors import ConfigError
    from pneumoscan.training.config import SSL_AUGMENT, SSLConfig, TrainConfig
    from pneumoscan.training.options import given
    from pneumoscan.training.pretrain import pretrain

    values = {**PRETRAIN_DEFAULTS, **given(args, TrainConfig, parse_data_options)}
    values["augment"] = {**asdict(SSL_AUGMENT), **values.get("augment", {})}
    cfg = TrainConfig.from_dict(values)
    if cfg.batch_size < 2:
        raise ConfigError("--batch-size must be at least 2 (the other images of a batch are the negatives)")
    ssl = SSLConfig.from_dict(given(args, SSLConfig))
    run_dir = pretrain(cfg, ssl, args.output, resume=args.resume, cache_dir=args.cache_dir)
    print(f"pre-training complete: {run_dir / 'encoder.pt'} "
          f"(fine-tune with: pneumoscan train --model {cfg.model} --init-from {run_dir / 'encoder.pt'} ...)")
    return 0
