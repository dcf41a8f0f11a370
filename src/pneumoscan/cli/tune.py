"""``pneumoscan tune``: search learning rate, weight decay, batch size, optimizer, augmentation strength, image size
and architecture with Optuna, scored on validation ROC-AUC (never test). Poor trials are pruned after an epoch.

The study is stored in OUTPUT/study.db: re-run the same command to resume it; --trials is the total, so only the
missing trials run. A trial whose process was killed is marked failed on the next run (and not counted).

All ``pneumoscan train`` options are accepted and form the base configuration (``--config`` for a YAML base). A
searched option given explicitly (``--model``, ``--image-size``, ``--batch-size``, ``--optimizer``, ``--lr``,
``--weight-decay``, any ``--aug-*`` or ``--no-augment``) is fixed to that value instead of searched.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pneumoscan.cli.train import add_train_options
from pneumoscan.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_MODELS = "cnn,resnet18,efficientnet_lite0"
DEFAULT_IMAGE_SIZES = "128,192,224"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="hyperparameter search on validation ROC-AUC (Optuna, resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_options(p)
    g = p.add_argument_group("tuning")
    g.add_argument("--output", "-o", type=Path, required=True,
                   help="study folder: study.db, trials/NNNN/, trials.csv, best_config.yaml")
    g.add_argument("--trials", type=int, required=True,
                   help="total finished (complete or pruned) trials wanted; a resumed study runs only the rest")
    g.add_argument("--timeout-minutes", type=float, help="start no new trial after this long (this invocation)")
    g.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUTPUT/study.db)")
    g.add_argument("--study-name", default="pneumoscan", help="study name in the storage (default pneumoscan)")
    g.add_argument("--epochs-per-trial", type=int, help="epochs of each trial (default 3; --epochs is the same)")
    g.add_argument("--models", help=f"architectures to search (default {DEFAULT_MODELS}; without cnn when "
                                    "--pretrained)")
    g.add_argument("--image-sizes", help=f"image sizes to search (default {DEFAULT_IMAGE_SIZES})")
    g.add_argument("--batch-sizes", help="batch sizes to search (default 16,32,64)")
    g.add_argument("--optimizers", help="optimizers to search (default adamw,adam,sgd)")
    g.add_argument("--lr-range", metavar="LOW,HIGH", help="learning-rate range, log scale (default 1e-5,1e-2)")
    g.add_argument("--weight-decay-range", metavar="LOW,HIGH", help="weight-decay range, log scale (1e-6,1e-2)")
    g.add_argument("--augment-strength-range", metavar="LOW,HIGH",
                   help="factor on the base augmentation (default 0,2; 0 = off)")
    g.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median",
                   help="stop poor trials early on their per-epoch validation ROC-AUC (default median)")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep best.pt of every trial, not only the best")
    p.set_defaults(func=run)


def _fixed(explicit: Any, listed: str | None, option: str, list_option: str) -> str | None:
    """An explicitly given single value fixes a searched dimension; giving both forms is ambiguous."""
    if explicit is None:
        return listed
    if listed is not None:
        raise ConfigError(f"give either {option} (fixed) or {list_option} (searched), not both")
    return str(explicit)


def _range(text: str | None, default: tuple[float, float], fixed: float | None, option: str) -> tuple[float, float]:
    from pneumoscan.tuning.study import parse_list

    if fixed is not None:
        if text is not None:
            raise ConfigError(f"give either {option} or {option}-range, not both")
        return (float(fixed), float(fixed))
    values = parse_list(text, float, default)
    if len(values) != 2:
        raise ConfigError(f"{option}-range needs LOW,HIGH, got '{text}'")
    return (values[0], values[1])


def search_space_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~pneumoscan.tuning.study.SearchSpace` from the options (explicit train options fix a dimension)."""
    from dataclasses import fields

    from pneumoscan.training.config import OPTIMIZERS, AugmentConfig
    from pneumoscan.tuning.study import SearchSpace, parse_list

    default_models = DEFAULT_MODELS.removeprefix("cnn,") if args.pretrained or args.weights else DEFAULT_MODELS
    models = parse_list(_fixed(args.model, args.models, "--model", "--models"), str, default_models.split(","))
    sizes = parse_list(_fixed(args.image_size, args.image_sizes, "--image-size", "--image-sizes"), int,
                       [int(s) for s in DEFAULT_IMAGE_SIZES.split(",")])
    batches = parse_list(_fixed(args.batch_size, args.batch_sizes, "--batch-size", "--batch-sizes"), int,
                         (16, 32, 64))
    optimizers = parse_list(_fixed(args.optimizer, args.optimizers, "--optimizer", "--optimizers"), str, OPTIMIZERS)
    aug_given = args.no_augment or any(getattr(args, f"aug_{f.name}") is not None for f in fields(AugmentConfig))
    if aug_given and args.augment_strength_range is not None:
        raise ConfigError("give either --aug-*/--no-augment (fixed augmentation) or --augment-strength-range")
    return SearchSpace(
        models=models, image_sizes=sizes, batch_sizes=batches, optimizers=optimizers,
        lr=_range(args.lr_range, (1e-5, 1e-2), args.lr, "--lr"),
        weight_decay=_range(args.weight_decay_range, (1e-6, 1e-2), args.weight_decay, "--weight-decay"),
        augment_strength=(1.0, 1.0) if aug_given else _range(args.augment_strength_range, (0.0, 2.0), None,
                                                             "--augment-strength"),
    )


def base_config_from_args(args: argparse.Namespace) -> Any:
    """The base TrainConfig: ``--config`` file < train options, with the per-trial epoch budget."""
    from pneumoscan.cli.train import config_from_args
    from pneumoscan.tuning.study import DEFAULT_EPOCHS_PER_TRIAL

    if args.epochs is not None and args.epochs_per_trial is not None and args.epochs != args.epochs_per_trial:
        raise ConfigError("--epochs and --epochs-per-trial differ; give one of them")
    epochs = args.epochs_per_trial or args.epochs or DEFAULT_EPOCHS_PER_TRIAL
    return config_from_args(args).replace(epochs=epochs)


def run(args: argparse.Namespace) -> int:
    from pneumoscan.tuning.study import run_study

    space = search_space_from_args(args)
    base = base_config_from_args(args)
    timeout = args.timeout_minutes * 60 if args.timeout_minutes is not None else None
    result = run_study(base, args.output, n_trials=args.trials, space=space, timeout_s=timeout,
                       storage=args.storage, study_name=args.study_name, pruner=args.pruner,
                       cache_dir=args.cache_dir, keep_checkpoints=args.keep_checkpoints)
    for line in result.summary_lines():
        print(line)
    return 0 if result.best_number is not None else 1
