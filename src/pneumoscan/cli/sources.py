"""``pneumoscan sources``: the data formats ``--data FORMAT:PATH`` understands, with their label policies.

Examples::

    pneumoscan sources                      # one block per source
    pneumoscan sources chexpert --data-option uncertain=positive
    pneumoscan sources --json               # machine-readable policies
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sources``; see the module docstring."""
    p = subparsers.add_parser(
        "sources",
        help="list the supported public data sets and how their labels map to NORMAL / PNEUMONIA",
        description="List the data formats usable as --data FORMAT:PATH, each with its label policy (what counts "
        "as PNEUMONIA, as NORMAL, what is excluded), whether patient ids and an official split exist. Options "
        "change the policy as they would for training.",
    )
    p.add_argument("name", nargs="*", help="show only these sources")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="label-policy switch to apply, e.g. views=all, uncertain=positive, others=negative")
    p.add_argument("--json", action="store_true", help="print the policies as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the registered sources with their policies (text or JSON)."""
    from pneumoscan.data.label_policy import policy_for
    from pneumoscan.data.options import parse_data_options
    from pneumoscan.data.sources import available_sources
    from pneumoscan.errors import ConfigError

    sources = available_sources()
    unknown = [n for n in args.name if n not in sources]
    if unknown:
        raise ConfigError(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(sources)}")
    options = parse_data_options(args.data_option)
    names = args.name or list(sources)
    if args.json:
        out = {n: {"description": sources[n], **policy_for(n, options).to_dict()} for n in names}
        print(json.dumps(out, indent=2))
        return 0
    print("Data sources: --data NAME:PATH, options with --data-option KEY=VALUE "
          "(views=frontal|all, uncertain=exclude|positive|negative, others=exclude|negative).")
    print("A plain PATH is a Kaggle-layout folder ({train,val,test}/{NORMAL,PNEUMONIA}/) or a manifest CSV.\n")
    for n in names:
        print(f"{policy_for(n, options).describe()}\n  format      : {sources[n]}\n")
    return 0
