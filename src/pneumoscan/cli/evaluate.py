"""``pneumoscan evaluate``: score a trained model on a split or any other data set, with a full report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pneumoscan.errors import ConfigError
from pneumoscan.models.precision import PRECISIONS

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model on a labelled data set (writes metrics.json + report)",
                       description=__doc__)
    p.add_argument("--checkpoint", help="best.pt of a run, or an .onnx export (default: the shipped model)")
    p.add_argument("--data", action="append", metavar="SPEC",
                   help="folder, manifest CSV (e.g. a run's splits.csv) or FORMAT:PATH; repeatable")
    p.add_argument("--predictions", type=Path, metavar="OUT.parquet",
                   help="instead of --data: a scored archive from `pneumoscan batch` (needs its label column); the "
                        "model is not run again")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="test",
                   help="official split to use (test, val, train) or 'all'; a source without splits is used whole")
    p.add_argument("--output", "-o", type=Path, required=True, help="folder for metrics.json, report.html, …")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="torch autocast; auto: the precision the model's threshold was fitted in, when this hardware "
                        "runs it natively (else fp32)")
    p.add_argument("--population", help="count labels at this population's threshold (default: the model's default "
                                        "population)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--no-heatmaps", action="store_true", help="skip Grad-CAM images in the error gallery")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out unreadable images (counted in the report) instead of stopping")
    p.add_argument("--group-by", action="append", default=[], metavar="COLUMN",
                   help="also report ROC-AUC, sensitivity and specificity per value of COLUMN (a manifest column "
                        "such as view or sex, source, subtype, or age_band derived from age), with a warning when "
                        "the pooled ROC-AUC is confounded by it; repeatable. Per source always with several sources")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumoscan.batch.evaluate import evaluate_predictions
    from pneumoscan.data.options import parse_data_options
    from pneumoscan.evaluation.groups import format_group_text
    from pneumoscan.inference.evaluate import evaluate_model

    if bool(args.data) == bool(args.predictions):
        raise ConfigError("give one of --data (run the model on a data set) or --predictions (a pneumoscan batch "
                          "archive)")
    options = parse_data_options(args.data_option)
    if args.predictions:
        metrics = evaluate_predictions(predictions=args.predictions, output=args.output, n_bootstrap=args.bootstrap,
                                       seed=args.seed, group_by=args.group_by)
    else:
        metrics = evaluate_model(checkpoint=args.checkpoint, data=args.data, split=args.split, output=args.output,
                                 backend=args.backend, batch_size=args.batch_size, n_bootstrap=args.bootstrap,
                                 heatmaps=not args.no_heatmaps, skip_unreadable=args.skip_unreadable, seed=args.seed,
                                 data_options=options, precision=args.precision, group_by=args.group_by,
                                 population=args.population)
    ci = (metrics.get("confidence_intervals") or {}).get("metrics", {})

    def fmt(key: str) -> str:
        v = metrics.get(key)
        if v is None:
            return "n/a"
        c = ci.get(key) or {}
        band = f" [{c['low']:.3f}, {c['high']:.3f}]" if c.get("low") is not None else ""
        return f"{v:.3f}{band}"

    print(f"{metrics['n']} images, threshold {metrics['threshold']:.4f}"
          + (f" (population {args.population})" if args.population else ""))
    for key in ("accuracy", "recall", "specificity", "precision", "f1", "roc_auc", "pr_auc"):
        print(f"  {key:<12} {fmt(key)}")
    for line in format_group_text(metrics.get("groups")):
        print(line)
    print(f"report: {Path(args.output) / 'report.html'}")
    return 0
