"""``pneumoscan batch``: score a whole archive (manifest or folder tree) into Parquet shards with Ray.

Runs in-process on one machine (a local Ray cluster is started and stopped) or on a cluster (``ray start --head`` on
one node and ``ray start --address HEAD:6379`` on the others, then this command on a node with ``--address auto``, or
with ``RAY_ADDRESS=HEAD:6379`` set). Restart a killed run with the same command: it
skips every image already written and loses nothing. Unreadable files become rows with ``status=error`` and the
reason in ``error``; they never fail the job. Evaluate the result with ``pneumoscan evaluate --predictions OUT``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pneumoscan.models.precision import PRECISIONS

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``batch`` sub-command."""
    p = sub.add_parser("batch", help="score a whole archive into Parquet with Ray (resumable)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="MANIFEST_OR_FOLDER",
                   help="CSV/Parquet manifest (column path; optional label, group or patient_id; others passed "
                        "through) or a folder searched recursively for JPEG/PNG/TIFF/BMP/DICOM files")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="OUT.parquet",
                   help="folder of Parquet shards (created; an existing one is resumed)")
    p.add_argument("--checkpoint", help="best.pt of a run or an .onnx export (default: the shipped model)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto (default): ONNX Runtime when the model has its export, else PyTorch")
    p.add_argument("--address", help="Ray cluster to join ('auto': the one `ray start` runs here; default: "
                                     "RAY_ADDRESS if set, else a local cluster)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")
    p.add_argument("--actors", type=int, help="model actors (default: one per GPU, or ~3/4 of the CPUs)")
    p.add_argument("--threads", type=int, help="intra-op threads per actor (default: CPUs / actors)")
    p.add_argument("--batch-size", type=int, default=32, help="images per network call")
    p.add_argument("--shard-size", type=int, default=2048, help="rows per Parquet shard (at most this is redone "
                                                                 "after a kill)")
    p.add_argument("--device", default="auto", help="torch device (auto: cuda on GPU actors, else cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="torch autocast (auto: the precision the model was calibrated in, when native)")
    p.add_argument("--max-pixels", type=int, help="largest decoded image, width x height (default 50,000,000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every image has a row; the error rows are counted, not fatal."""
    import json

    from pneumoscan.batch import require_batch_deps
    from pneumoscan.batch.inputs import load_inputs
    from pneumoscan.batch.pipeline import run_batch

    require_batch_deps()
    inputs = load_inputs(args.input)
    summary = run_batch(inputs, args.output, checkpoint=args.checkpoint, backend=args.backend,
                        address=args.address, num_cpus=args.num_cpus, actors=args.actors, threads=args.threads,
                        batch_size=args.batch_size, shard_size=args.shard_size, device=args.device,
                        precision=args.precision, max_pixels=args.max_pixels,
                        progress=not args.no_progress and sys.stderr.isatty())
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(f"{summary.total} images: {summary.already_done} already scored, {summary.scored} scored now "
              f"({summary.errors} errors) in {summary.seconds:.1f} s ({summary.images_per_second:.1f} img/s, "
              f"{summary.actors} {summary.backend} actors) -> {args.output}")
    return 0
