"""``pneumoscan`` console command.

Each sub-command lives in its own module ``pneumoscan.cli.<name>`` exposing ``add_parser(subparsers)`` and
``run(args) -> int``; the modules are imported lazily so that ``pneumoscan --help`` stays fast and a command whose
optional dependency is missing fails with an install hint instead of breaking the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pneumoscan import __version__
from pneumoscan.errors import PneumoError, error_kind

# Sub-command name -> module under pneumoscan.cli. Order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "train": "train",
    "pretrain": "pretrain",
    "evaluate": "evaluate",
    "calibrate": "calibrate",
    "predict": "predict",
    "batch": "batch",
    "models": "models",
    "tune": "tune",
    "compare": "compare",
    "audit": "audit",
    "loso": "loso",
    "segment": "segment",
    "export": "export",
    "serve": "serve",
    "dicom-node": "dicom_node",
    "dicomweb": "dicomweb",
    "sources": "sources",
}
# Long-running commands that restart themselves with tcmalloc when the machine has it (training.allocator).
ALLOCATOR_COMMANDS = frozenset({"train", "pretrain", "tune", "loso"})

logger = logging.getLogger("pneumoscan")


def _load(module: str) -> object | None:
    try:
        return importlib.import_module(f"pneumoscan.cli.{module}")
    except ModuleNotFoundError as err:
        if err.name == f"pneumoscan.cli.{module}":
            return None  # command not (yet) part of this build
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumoscan",
        description="Pneumonia detection on chest X-rays: train, evaluate, predict, serve.",
    )
    parser.add_argument("--version", action="version", version=f"pneumoscan {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        mod = _load(module)
        if mod is not None:
            mod.add_parser(sub)  # type: ignore[attr-defined]
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pneumoscan").setLevel(min(level, logging.INFO))


def _report(err: PneumoError) -> int:
    """Print ``error: <message>`` (one line) and return the exit code 2."""
    kind = error_kind(err)  # the same table the server answers with (pneumoscan.errors.ERROR_TABLE)
    print(f"error: {err}" if kind == "error" else f"error: {err} ({kind})", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the process exit code (0 ok, 1 some inputs failed, 2 error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # option values are checked while parsed (training.options): ConfigError
    except PneumoError as err:
        return _report(err)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if argv is None and args.command in ALLOCATOR_COMMANDS:  # a real process start, not a call from Python
        from pneumoscan.training.allocator import reexec_with_tcmalloc

        reexec_with_tcmalloc(sys.argv[1:])
    _configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except PneumoError as err:
        return _report(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
