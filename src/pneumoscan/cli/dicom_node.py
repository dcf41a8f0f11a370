"""``pneumoscan dicom-node``: a DICOM Storage SCP that scores chest radiographs and answers with Structured Reports.

Modalities or the PACS send CR/DX images (C-STORE) to this node; each instance gets a Comprehensive SR (probability
of pneumonia, label at the threshold, competence status, model version) in the same study, written to DIR and, with
--forward, sent back to the PACS. See docs/DICOM.md.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_model_arguments(p: argparse.ArgumentParser, *, batch: bool = True) -> None:
    """The model options shared by ``dicom-node`` and ``dicomweb`` (which scores one instance at a time)."""
    p.add_argument("--checkpoint", help="best.pt of a run or an .onnx export (default: the shipped model)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx is faster on CPU but cannot make --heatmap (Grad-CAM needs PyTorch)")
    p.add_argument("--heatmap", action="store_true",
                   help="also send a Secondary Capture of the Grad-CAM overlay into the same study")
    p.add_argument("--population",
                   help="operating point to label at, named in every SR (default: the model's default population; "
                        "`pneumoscan models --checkpoint` or GET /v1/model list them)")
    if batch:
        p.add_argument("--batch-size", type=int, default=8, help="instances scored per model call (default 8)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dicom-node", help="run a DICOM node (Storage SCP) that answers with Structured Reports",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ae-title", default="PNEUMOSCAN", help="this node's AE title (default PNEUMOSCAN)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default all interfaces)")
    p.add_argument("--port", type=int, default=11112, help="TCP port (default 11112)")
    p.add_argument("--output", type=Path, required=True, metavar="DIR",
                   help="work folder: queue.sqlite, incoming/ (received) and results/ (SR, heatmap)")
    p.add_argument("--forward", metavar="AET@HOST:PORT", help="C-STORE every result to this PACS")
    add_model_arguments(p)
    p.set_defaults(func=run)


def build_scorer(args: argparse.Namespace) -> Any:
    from pneumoscan.dicomnode.scoring import Scorer
    from pneumoscan.errors import require
    from pneumoscan.inference.predictor import Predictor

    require("highdicom", "dicom-node")
    return Scorer(Predictor.load(args.checkpoint, backend=args.backend, population=args.population),
                  heatmap=args.heatmap)


def run(args: argparse.Namespace) -> int:
    from pneumoscan.dicomnode.node import DicomNode, NodeConfig, Peer

    config = NodeConfig(output=args.output, ae_title=args.ae_title, host=args.host, port=args.port,
                        forward=Peer.parse(args.forward) if args.forward else None, batch_size=args.batch_size)
    scorer = build_scorer(args)
    node = DicomNode(config, scorer)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node.start()
    print(f"pneumoscan DICOM node {config.ae_title} on {config.host}:{node.port} "
          f"(model {scorer.model} {scorer.version}); results in {config.output / 'results'}"
          + (f", forwarded to {config.forward}" if config.forward else "") + "; Ctrl-C to stop", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0
