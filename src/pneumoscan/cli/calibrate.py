"""``pneumoscan calibrate``: fit the competence gate and per-population thresholds for an existing checkpoint.

Recomputes the run's patient-grouped train/validation split (from the checkpoint's config, or the run folder's
``splits.csv``), fits the gate on training images, fixes its threshold and the populations' thresholds on validation,
reports how many validation chest X-rays it refuses (per source) and how many non-chest-X-ray probes it catches (per
kind), and writes a new checkpoint. Weights, temperature and the model's threshold are copied unchanged; the test
split is never read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit the competence gate and per-population thresholds for a checkpoint",
                       description=__doc__)
    p.add_argument("--checkpoint", required=True, type=Path, help="best.pt of a run (or the shipped .pt)")
    p.add_argument("--output", "-o", required=True, type=Path, help="checkpoint to write (may equal --checkpoint)")
    p.add_argument("--data", action="append", metavar="SPEC",
                   help="training data specs (default: those recorded in the checkpoint); repeatable")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--splits", type=Path, metavar="CSV",
                   help="a run's splits.csv (default: the one beside --checkpoint, if any, unless --data is given)")
    p.add_argument("--seed", type=int, help="split seed (default: the checkpoint's)")
    p.add_argument("--val-fraction", type=float, help="validation fraction (default: the checkpoint's)")
    p.add_argument("--max-train", type=int, default=3000,
                   help="training images used to fit the gate (sampled evenly across sources)")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="share of validation chest X-rays the gate accepts (its threshold is this quantile)")
    p.add_argument("--probe-xrays", type=int, default=150,
                   help="validation X-rays turned into each probe kind (inverted, rotated, ...) for the report")
    p.add_argument("--components", type=int, default=64, help="principal components of the features kept")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--onnx", type=Path, help="an ONNX export of this checkpoint to compute the features with (faster "
                                           "on CPUs; must carry the 'features' output)")
    p.add_argument("--report", type=Path, help="also write the validation report as JSON here")
    p.add_argument("--features-out", type=Path, help="keep the computed features in this .npz (for study)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pneumoscan.data.options import parse_data_options
    from pneumoscan.inference.calibrate import calibrate_checkpoint

    options = parse_data_options(args.data_option)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, n: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(desc=f"features ({stage})", unit="img", leave=False, disable=not sys.stderr.isatty())
        bars[stage].update(n)

    report = calibrate_checkpoint(args.checkpoint, args.output, data=args.data, seed=args.seed,
                                  val_fraction=args.val_fraction, splits_csv=args.splits,
                                  data_options=options or None, max_train=args.max_train, quantile=args.quantile,
                                  n_components=args.components, batch_size=args.batch_size, device=args.device,
                                  features_out=args.features_out, onnx=args.onnx, probe_xrays=args.probe_xrays,
                                  progress=progress)
    for bar in bars.values():
        bar.close()
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2), encoding="utf-8")
    val = report["val_refused"]
    print(f"gate: {report['train_images']} training images, threshold {report['gate_threshold']:.3f} "
          f"({report['gate_threshold_rule']})")
    print(f"validation chest X-rays refused: {val['refused']} of {val['n']} ({val['refused_rate']:.1%})")
    for src, v in val["by_source"].items():
        print(f"  {src:<20} {v['refused']:>4} of {v['n']:<5} ({v['refused_rate']:.1%})")
    print("non-chest-X-ray probes caught:")
    for kind, v in report["probes_caught"].items():
        print(f"  {kind:<20} {v['caught']:>4} of {v['n']:<5} ({v['caught_rate']:.1%})")
    print(f"populations (default {report['default_population']}):")
    for name, p in report["populations"].items():
        thr = "none" if p["threshold"] is None else f"{p['threshold']:.4f}"
        print(f"  {name:<12} threshold {thr}  ({p['n_val']} val images, {p['n_pos']} PNEUMONIA)"
              + (f"  {p['note']}" if p.get("note") else ""))
    print(f"wrote {args.output}")
    return 0
