"""``pneumoscan segment``: train, evaluate, ship and run the lung-field segmentation model.

    pneumoscan segment train    --data DIR --output RUN     train the lung U-Net (split recorded in RUN/best.pt)
    pneumoscan segment evaluate --data DIR [--checkpoint F] Dice / IoU per source on the held-out masks
    pneumoscan segment predict  IMAGES... --output DIR      lung mask PNGs and outline overlays
    pneumoscan segment release  --checkpoint RUN/best.pt    weights + ONNX + lung.json for the package
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pneumoscan.errors import ImageReadError

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="lung-field segmentation: train, evaluate, predict, release",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="segment_command", metavar="ACTION", required=True)

    t = s.add_parser("train", help="train the lung U-Net on images + masks (manifest.csv image,mask,source)")
    t.add_argument("--data", required=True, help="folder with manifest.csv, images/ and masks/")
    t.add_argument("--output", "-o", type=Path, required=True, help="run folder (created; must be empty)")
    t.add_argument("--image-size", type=int, default=128)
    t.add_argument("--base", type=int, default=8, help="channels of the first U-Net level")
    t.add_argument("--depth", type=int, default=4, help="down-sampling steps")
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--val-fraction", type=float, default=0.15)
    t.add_argument("--test-fraction", type=float, default=0.15)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-minutes", type=float, default=0.0, help="stop after the epoch that passes this (0 = off)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    t.add_argument("--no-augment", action="store_true")
    t.set_defaults(func=run_train)

    e = s.add_parser("evaluate", help="Dice and IoU per source on held-out masks (JSON + table)")
    e.add_argument("--checkpoint", help="lung model (.pt from segment train/release, or .onnx); default: shipped")
    e.add_argument("--data", required=True, help="folder with manifest.csv, images/ and masks/")
    e.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                   help="the part recorded in the lung model (default test); all = every image in --data")
    e.add_argument("--output", "-o", type=Path, help="write metrics JSON here (file or folder)")
    e.add_argument("--record", action="store_true",
                   help="store the per-source summary in the installed lung model's lung.json (for its release)")
    e.set_defaults(func=run_evaluate)

    pr = s.add_parser("predict", help="lung masks (PNG, 255 = lung) and outline overlays for images")
    pr.add_argument("images", nargs="+", type=Path)
    pr.add_argument("--checkpoint", help="lung model (.pt or .onnx); default: shipped")
    pr.add_argument("--output", "-o", type=Path, required=True)
    pr.set_defaults(func=run_predict)

    r = s.add_parser("release", help="write weights-only .pt + .onnx + lung.json (content digest in the name)")
    r.add_argument("--checkpoint", required=True, type=Path, help="best.pt of a segment train run")
    r.add_argument("--output", "-o", type=Path, help="folder (default: the installed package's weights/)")
    r.add_argument("--command", dest="train_command", default="", help="training command to record in lung.json")
    r.set_defaults(func=run_release)


def _segmenter(path: str | None):  # type: ignore[no-untyped-def]
    from pneumoscan.inference.lungs import LungSegmenter, load_lung_segmenter

    return load_lung_segmenter() if path is None else LungSegmenter.from_file(path)


def run_train(args: argparse.Namespace) -> int:
    from pneumoscan.training.segment import SegmentConfig, train_segmenter

    cfg = SegmentConfig(data=args.data, image_size=args.image_size, base=args.base, depth=args.depth,
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_fraction=args.val_fraction,
                        test_fraction=args.test_fraction, seed=args.seed, max_minutes=args.max_minutes,
                        augment=not args.no_augment, threads=args.threads)
    run_dir = train_segmenter(cfg, args.output)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    print(f"lung model trained: {run_dir / 'best.pt'} (best val Dice {summary['best_val_dice']:.4f}, "
          f"{summary['epochs_run']} epochs, {summary['train_seconds']:.0f} s)")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from pneumoscan.inference.lungs import lung_state_meta
    from pneumoscan.training.segment import evaluate_segmenter, load_mask_records, select_split

    seg = _segmenter(args.checkpoint)
    records = select_split(load_mask_records(args.data), lung_state_meta(seg), args.split)
    result = evaluate_segmenter(seg, records)
    result = {"lung_model": seg.name, "split": args.split, "data": str(args.data), **result}
    print(f"lung model {seg.name}, split {args.split}, {result['pooled']['n']} images")
    print(f"  {'source':<12} {'n':>4} {'Dice mean':>10} {'median':>8} {'min':>8} {'IoU mean':>9}")
    for name, s in [*result["per_source"].items(), ("pooled", result["pooled"])]:
        print(f"  {name:<12} {s['n']:>4} {s['dice_mean']:>10.4f} {s['dice_median']:>8.4f} {s['dice_min']:>8.4f} "
              f"{s['iou_mean']:>9.4f}")
    if args.output:
        out = args.output / "lung_metrics.json" if args.output.suffix != ".json" else args.output
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"metrics: {out}")
    if args.record:
        from pneumoscan.inference.lungs import record_lung_metrics

        meta = record_lung_metrics(seg.name, {k: result[k] for k in ("split", "per_source", "pooled")})
        print(f"recorded in {meta}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from pneumoscan.data.io import read_image
    from pneumoscan.data.lungs import lung_geometry, outline_overlay
    from pneumoscan.training.segment import upsample_probabilities

    seg = _segmenter(args.checkpoint)
    args.output.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in args.images:
        try:
            image = read_image(path)
        except ImageReadError as err:
            print(f"error: {err}")
            failed += 1
            continue
        probs = seg.probabilities(image)
        geo = lung_geometry(probs)
        mask = upsample_probabilities(probs, image.shape) > 0.5
        Image.fromarray((mask * 255).astype(np.uint8)).save(args.output / f"{path.stem}_lungs.png")
        Image.fromarray(outline_overlay(image, mask)).save(args.output / f"{path.stem}_outline.png")
        box = "none (no lungs found)" if not geo.found else ", ".join(f"{v:.3f}" for v in geo.box)
        print(f"{path}: lung fraction {geo.fraction:.3f}, box {box}")
    return 1 if failed else 0


def run_release(args: argparse.Namespace) -> int:
    from pneumoscan.inference.lungs import release_lung_model

    out = release_lung_model(args.checkpoint, args.output, command=args.train_command)
    print(f"lung model released: {out}")
    return 0
