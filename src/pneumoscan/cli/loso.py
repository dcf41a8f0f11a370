"""``pneumoscan loso``: leave-one-source-out training and evaluation over several data sources.

Example::

    pneumoscan loso --data kermany:/data/chest_xray --data nih:/data/ChestX-ray14 --data rsna:/data/rsna \\
        --model resnet18 --epochs 10 --output runs/loso

For each source S, trains a model on all the other sources (``DIR/without-S/``) and evaluates it on S held out
(``DIR/holdout-S/``); writes the table ``DIR/loso.md`` and ``DIR/loso.json``. Every ``pneumoscan train`` option
applies to each fold. Re-running the same command skips the finished folds and resumes an interrupted one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``loso`` with the training options of ``train`` plus the evaluation options."""
    from pneumoscan.cli.train import add_train_options
    from pneumoscan.training.loso import HOLDOUT_SPLITS

    p = sub.add_parser("loso", help="leave-one-source-out: train on all sources but one, evaluate on that one",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_options(p)
    p.add_argument("--output", "-o", type=Path, required=True,
                   help="LOSO folder (created; re-running into it skips finished folds)")
    p.add_argument("--holdout-split", choices=HOLDOUT_SPLITS, default="all",
                   help="held-out images: all labelled images of the source (default) or its official test split")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--no-heatmaps", action="store_true", help="skip Grad-CAM images in the reports' error galleries")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out unreadable held-out images (counted in the report) instead of stopping")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run every fold and print the table; the CLI's only output on stdout."""
    from pneumoscan.cli.train import config_from_args
    from pneumoscan.training.loso import LosoOptions, format_markdown, run_loso

    cfg = config_from_args(args)
    options = LosoOptions(holdout_split=args.holdout_split, n_bootstrap=args.bootstrap, heatmaps=not args.no_heatmaps,
                          skip_unreadable=args.skip_unreadable, cache_dir=args.cache_dir)
    result = run_loso(cfg, args.output, options)
    print(format_markdown(result), end="")
    print(f"loso: {Path(args.output) / 'loso.md'}")
    return 0
