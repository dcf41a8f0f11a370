"""``pneumoscan audit``: duplicates, leaks, class balance and unreadable files of one or more data sets.

Example::

    pneumoscan audit --data kermany:/data/chest_xray --output runs/audit
    pneumoscan audit --data nih:/data/ChestX-ray14 --data rsna:/data/rsna --max-images 5000

Prints a Markdown report and, with ``--output DIR``, writes ``DIR/audit.md`` and ``DIR/audit.json``. Exit code 0, or
1 when some files could not be read (they are listed with the reason).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from pneumoscan.errors import ConfigError

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``audit``; see the module docstring."""
    from pneumoscan.data.audit import HASH_SIZE, NEAR_DUPLICATE_DISTANCE

    p = subparsers.add_parser(
        "audit",
        help="find duplicates, patient leaks, class imbalance and unreadable files in data sets",
        description="Audit data sets before training on them: class balance per split and source, exact (SHA-256) "
        "and near (pHash) duplicates within and across splits, patients in more than one split, unreadable files, "
        "and the formats, sizes and bit depths present.",
    )
    p.add_argument("--data", action="append", required=True, metavar="SPEC",
                   help="folder, manifest CSV or FORMAT:PATH (see `pneumoscan sources`); repeat to audit together")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="loader / label-policy option, e.g. views=all, uncertain=positive (repeatable)")
    p.add_argument("--output", type=Path, metavar="DIR", help="also write DIR/audit.md and DIR/audit.json")
    p.add_argument("--max-images", type=int, metavar="N",
                   help="inspect the content of a random sample of N files only (faster on large sets)")
    p.add_argument("--near-dup-distance", type=int, default=NEAR_DUPLICATE_DISTANCE, metavar="BITS",
                   help=f"pHash Hamming distance (of {HASH_SIZE**2} bits) counted as near duplicate "
                   f"(default {NEAR_DUPLICATE_DISTANCE})")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="processes for decoding and hashing (default: 2 or the CPU count if lower)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Load every ``--data`` spec, audit them together, print and save the report."""
    from pneumoscan.data.audit import audit_records, format_markdown
    from pneumoscan.data.options import parse_data_options
    from pneumoscan.data.sources import load_records

    if args.max_images is not None and args.max_images < 1:
        raise ConfigError("--max-images must be at least 1")
    options = parse_data_options(args.data_option)
    records = []
    for spec in args.data:
        loaded = load_records(spec, options)
        logger.info("%s: %d images", spec, len(loaded))
        records += loaded
    result = audit_records(records, near_duplicate_distance=args.near_dup_distance, workers=max(1, args.workers),
                           max_images=args.max_images)
    result["data"] = list(args.data)
    result["data_options"] = options
    report = format_markdown(result)
    print(report, end="")
    if args.output is not None:
        _save(args.output, report, result)
    return 1 if result["unreadable"] else 0


def _save(folder: Path, report: str, result: dict[str, object]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "audit.md").write_text(report, encoding="utf-8")
        (folder / "audit.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{folder}: cannot write the audit report ({err.strerror or err})") from err
    logger.info("audit written to %s", folder)
