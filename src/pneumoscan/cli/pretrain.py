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

from pneumoscan.models.precision import PRECISIONS

logger = logging.getLogger(__name__)

_AUGMENT = ("rotation", "hflip", "zoom", "translate", "brightness", "contrast")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pre-training on the training images (SimCLR)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True, metavar="SPEC",
                   help="as for pneumoscan train (repeatable); only its training split is used")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model", default="cnn", help="architecture to pre-train (default cnn)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="images per step (two views each; default 64)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature (default 0.2)")
    p.add_argument("--projection-dim", type=int, default=128)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (continued pre-training)")
    p.add_argument("--weights", help="local ImageNet weights file for --pretrained")
    for name in _AUGMENT:
        p.add_argument(f"--aug-{name}", type=float, dest=f"aug_{name}",
                       help=f"view augmentation {name} (default: strong SimCLR-style setting)")
    p.add_argument("--no-probe", action="store_true", help="skip the linear probe at the end")
    p.add_argument("--val-fraction", type=float, default=0.15, help="as for pneumoscan train (must match it)")
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0, help="as for pneumoscan train (must match it for the split)")
    p.add_argument("--max-train-images", type=int)
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--output", "-o", type=Path, required=True, help="run folder (created; must be empty)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pneumoscan.data.options import parse_data_options
    from pneumoscan.errors import ConfigError
    from pneumoscan.training.config import AugmentConfig, TrainConfig
    from pneumoscan.training.pretrain import SSL_AUGMENT, SSLConfig, pretrain

    aug = asdict(SSL_AUGMENT)
    for name in _AUGMENT:
        value = getattr(args, f"aug_{name}")
        if value is not None:
            aug[name] = value
    opts = parse_data_options(args.data_option)
    cfg = TrainConfig(data=tuple(args.data), data_options=opts, model=args.model, image_size=args.image_size,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      warmup_epochs=args.warmup_epochs, pretrained=args.pretrained, weights=args.weights,
                      augment=AugmentConfig(**aug), val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                      seed=args.seed, max_train_images=args.max_train_images, precision=args.precision,
                      device=args.device, workers=args.workers)
    if args.batch_size < 2:
        raise ConfigError("--batch-size must be at least 2 (the other images of a batch are the negatives)")
    ssl = SSLConfig(temperature=args.temperature, projection_dim=args.projection_dim, hidden_dim=args.hidden_dim,
                    probe=not args.no_probe)
    run_dir = pretrain(cfg, ssl, args.output, resume=args.resume, cache_dir=args.cache_dir)
    print(f"pre-training complete: {run_dir / 'encoder.pt'} "
          f"(fine-tune with: pneumoscan train --model {cfg.model} --init-from {run_dir / 'encoder.pt'} ...)")
    return 0
