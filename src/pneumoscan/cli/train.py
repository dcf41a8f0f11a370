"""``pneumoscan train``: train a model on a folder, a manifest or a public collection."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from pneumoscan.errors import ConfigError

logger = logging.getLogger(__name__)


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train``, ``tune`` and ``loso``: one flag per :class:`TrainConfig` field (generated from the
    dataclass, defaults None so that a --config file can supply values) plus --config, the augmentation shortcuts and
    --cache-dir."""
    from pneumoscan.training.config import TrainConfig
    from pneumoscan.training.options import add_options

    p.add_argument("--config", type=Path, help="YAML file of training options (e.g. written by pneumoscan tune)")
    add_options(p, TrainConfig)
    p.add_argument("--aug-acquisition", action="store_true",
                   help="scanner/site imitation preset: gamma 0.3, blur 1.0, noise 0.03, jpeg 0.5, downscale 0.5, "
                        "text 0.3 (single --aug-* options override it)")
    p.add_argument("--no-augment", action="store_true", help="switch all augmentation off")
    p.add_argument("--cache-dir", type=Path, help="image cache folder (default ~/.cache/pneumoscan)")


def config_from_args(args: argparse.Namespace) -> Any:
    """Merge: dataclass defaults < --config file < explicit command-line options, checked by one path
    (:meth:`TrainConfig.from_dict`)."""
    from pneumoscan.data.options import parse_data_options
    from pneumoscan.training.config import ACQUISITION_PRESET, AugmentConfig, TrainConfig, load_config_file
    from pneumoscan.training.options import given

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    cli = given(args, TrainConfig, parse_data_options)
    for name in ("augment", "data_options"):  # a wrong type: from_dict names the option (no TypeError here)
        if values.get(name) is not None and not isinstance(values[name], dict):
            return TrainConfig.from_dict(values)
    aug = dict(values.get("augment") or {})
    if getattr(args, "aug_acquisition", False):
        aug.update(ACQUISITION_PRESET)
    aug.update(cli.pop("augment", {}))
    if getattr(args, "no_augment", False):
        aug = {f.name: 0.0 for f in dataclasses.fields(AugmentConfig)}
    if aug:
        values["augment"] = aug
    if "data_options" in cli:
        cli["data_options"] = {**(values.get("data_options") or {}), **cli["data_options"]}
    values.update(cli)
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
