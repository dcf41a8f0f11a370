"""``pneumoscan models``: list the architectures."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the available architectures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumoscan.models.registry import list_models

    width = max(len(s.name) for s in list_models())
    for spec in list_models():
        print(f"{spec.name:<{width}}  {spec.description}")
    return 0
