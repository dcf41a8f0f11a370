"""Linear probe: how much of the label do an encoder's frozen features carry, before any fine-tuning?

Why: it separates what pre-training learned from what fine-tuning does afterwards. For one architecture it embeds
the training and validation images of the patient-grouped split (the split ``pneumoscan train`` makes; test is never
touched), fits a standardised logistic regression on the training features and prints its validation ROC-AUC, for
each starting point asked for: ``random`` (untrained weights, the floor), ``imagenet`` (``--pretrained``) and any
``encoder.pt`` written by ``pneumoscan pretrain``.

Example::

    python benchmarks/linear_probe.py --model efficientnet_lite0 --image-size 128 \\
        --init random --init imagenet --init runs/ssl/lite0-128-simclr/encoder.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("PNEUMOSCAN_SHARED_DATA", REPO.parent / "shared" / "data")) / "kermany224"

logger = logging.getLogger("benchmarks.linear_probe")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"data spec (default {DEFAULT_DATA})")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--init", action="append", required=True, metavar="random|imagenet|FILE",
                   help="starting point to probe (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="split seed (as for pneumoscan train)")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p


def probe_one(init: str, args: argparse.Namespace, data: object) -> dict[str, object]:
    import torch

    from pneumoscan.models import create_model
    from pneumoscan.models.hardware import resolve_hardware
    from pneumoscan.models.init_weights import load_init_weights
    from pneumoscan.training.config import TrainConfig
    from pneumoscan.training.pretrain import embed, linear_probe
    from pneumoscan.training.setup import preprocess_for

    torch.manual_seed(args.seed)
    base = {"data": (args.data,), "model": args.model, "image_size": args.image_size}
    if init == "random":
        cfg = TrainConfig(**base)
        encoder = create_model(args.model, num_classes=0)
    elif init == "imagenet":
        cfg = TrainConfig(**base, pretrained=True)
        encoder = create_model(args.model, pretrained=True, num_classes=0)
    else:
        cfg = TrainConfig(**base, init_from=init)
        encoder = create_model(args.model, num_classes=0)
        load_init_weights(encoder, init, args.model)
    hw = resolve_hardware("auto", "auto")
    pre = preprocess_for(cfg)
    feats = {k: embed(encoder.to(hw.device), data.images[k], pre, hw) for k in ("train", "val")}  # type: ignore
    result = linear_probe(feats["train"], data.labels["train"], feats["val"], data.labels["val"])  # type: ignore
    return {"init": init, **result}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pneumoscan.training.config import TrainConfig
    from pneumoscan.training.setup import prepare_data

    cfg = TrainConfig(data=(args.data,), model=args.model, image_size=args.image_size, seed=args.seed,
                      val_fraction=args.val_fraction, leak_check="off")
    data = prepare_data(cfg, args.cache_dir)
    results = [probe_one(init, args, data) for init in args.init]
    print(f"linear probe: {args.model} at {args.image_size} px, frozen features, logistic regression fitted on "
          f"{len(data.labels['train'])} training images, scored on {len(data.labels['val'])} validation images")
    print("| start | validation ROC-AUC |\n| --- | --- |")
    for r in results:
        print(f"| {r['init']} | {r['val_roc_auc']} |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "image_size": args.image_size, "data": args.data,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
