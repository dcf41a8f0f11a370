"""``pneumoscan export``: turn a checkpoint into a verified single-file ONNX model for serving without PyTorch."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pneumoscan.errors import ConfigError

logger = logging.getLogger(__name__)

FORMATS = ("onnx",)
# Kept here rather than imported from pneumoscan.export.onnx so that `pneumoscan --help` imports nothing heavy;
# tests/export checks that they agree.
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``export`` sub-command."""
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX (serve / predict without PyTorch)", description=__doc__,
        epilog="The ONNX input 'image' is float32 (N, 1, S, S) normalised as the 'preprocess' metadata says; outputs "
               "'logit' and 'probability'. The file is checked with onnx.checker and against PyTorch before it is "
               "written. Use it with: pneumoscan predict/serve --backend onnx --checkpoint FILE.onnx",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="best.pt of a training run")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    p.add_argument("--output", "-o", required=True, type=Path, help="target file, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                   help="torch.export-based 'dynamo' (default) or the legacy 'torchscript' tracer")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"largest accepted probability difference vs PyTorch (default {DEFAULT_TOLERANCE:g})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, verify and report; returns 0 (errors are raised as :class:`~pneumoscan.errors.PneumoError`)."""
    from pneumoscan.export.onnx import export_onnx

    if args.format != "onnx":  # pragma: no cover - argparse restricts the choice
        raise ConfigError(f"unknown format {args.format}")
    result = export_onnx(args.checkpoint, args.output, opset=args.opset, exporter=args.exporter,
                         tolerance=args.tolerance)
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB): {result.model} {result.version}, opset "
          f"{result.opset}, {result.exporter} exporter, max |probability difference| vs PyTorch "
          f"{result.max_abs_diff:.1e}, {result.seconds:.1f} s")
    return 0
