"""``pneumoscan dicomweb``: score the chest radiographs of a DICOMweb server and store Structured Reports back.

QIDO-RS finds CR/DX instances (of one study, of the studies since a date, or of all studies), WADO-RS fetches the
ones not scored yet, STOW-RS stores their SR (and, with --heatmap, a Grad-CAM Secondary Capture) into the same
study. A SQLite file (--state) remembers what was scored, so polling is idempotent. See docs/DICOM.md.
"""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import date, datetime
from pathlib import Path

from pneumoscan.errors import ConfigError


def _date(text: str) -> date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"'{text}' is not a date (YYYY-MM-DD or YYYYMMDD)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pneumoscan.cli.dicom_node import add_model_arguments

    p = sub.add_parser("dicomweb", help="score chest radiographs on a DICOMweb server (QIDO/WADO/STOW-RS)",
                       description=__doc__)
    p.add_argument("--url", required=True, help="DICOMweb service root, e.g. http://pacs:8042/dicom-web")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--study", metavar="UID", help="only this study")
    which.add_argument("--since", type=_date, metavar="DATE", help="only studies from this StudyDate on")
    p.add_argument("--poll", type=float, metavar="SECONDS", help="keep polling at this interval (default: once)")
    p.add_argument("--state", type=Path, default=Path("pneumoscan-dicomweb.sqlite"),
                   help="SQLite file remembering scored instances (default ./pneumoscan-dicomweb.sqlite)")
    p.add_argument("--output", type=Path, metavar="DIR", help="also keep a copy of every result here")
    p.add_argument("--max-polls", type=int, help=argparse.SUPPRESS)  # tests: stop after N polls
    add_model_arguments(p, batch=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumoscan.cli.dicom_node import build_scorer
    from pneumoscan.dicomnode.web import ScoredMemory, connect, poll

    if args.poll is not None and args.poll <= 0:
        raise ConfigError("--poll must be a positive number of seconds")
    client = connect(args.url)
    scorer = build_scorer(args)
    memory = ScoredMemory(args.state)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        total = poll(client, scorer, memory, interval=args.poll, study=args.study, since=args.since,
                     output=args.output, max_polls=args.max_polls, should_stop=stop.is_set)
    except KeyboardInterrupt:
        return 130
    finally:
        memory.close()
    print(f"{total.found} instances found, {total.scored} scored now, {total.skipped} already scored, "
          f"{total.failed} failed (retried at the next poll)")
    return 1 if total.failed else 0
