"""``pneumoscan demo``: the whole pipeline in about a minute on the example X-rays shipped in ``examples/``.

Trains the small custom CNN on the 48 example training images (validation carved out by patient), evaluates it on
the 20 example test images and writes the full report. With so few images the numbers mean nothing clinically; the
point is to see every step run on real X-rays.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)


def find_examples() -> Path:
    """The ``examples/manifest.csv`` of a source checkout (the examples are not inside the wheel)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "manifest.csv"
        if candidate.is_file():
            return candidate
    cwd = Path.cwd() / "examples" / "manifest.csv"
    if cwd.is_file():
        return cwd
    raise DataError("examples/manifest.csv not found: run the demo from a clone of the pneumoscan repository")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train + evaluate on the bundled example X-rays (about a minute)",
                       description=__doc__)
    p.add_argument("--output", "-o", type=Path, default=Path("runs/demo"), help="folder for the run and report")
    p.add_argument("--epochs", type=int, default=8)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumoscan.inference.evaluate import evaluate_model
    from pneumoscan.training.config import TrainConfig
    from pneumoscan.training.setup import fit

    manifest = find_examples()
    out: Path = args.output
    if out.exists():
        shutil.rmtree(out)  # the demo always starts fresh
    cfg = TrainConfig(data=(str(manifest),), model="cnn", image_size=128, epochs=args.epochs, batch_size=16,
                      lr=2e-3, patience=args.epochs, val_fraction=0.2, seed=0)
    print(f"training the custom CNN on {manifest.parent / 'xrays' / 'train'} ...")
    run_dir = fit(cfg, out / "run", cache_dir=out / "cache")
    print(f"evaluating {run_dir / 'best.pt'} on the example test split ...")
    metrics = evaluate_model(checkpoint=run_dir / "best.pt", data=[str(manifest)], split="test",
                             output=out / "evaluation", n_bootstrap=500)
    print(f"test images: {metrics['n']}, accuracy {metrics['accuracy']:.3f}, ROC-AUC {metrics['roc_auc']:.3f}, "
          f"threshold {metrics['threshold']:.3f} (chosen on validation)")
    print(f"report: {out / 'evaluation' / 'report.html'}")
    return 0
