"""``--data-option KEY=VALUE``: the one parser of loader and label-policy options given on a command line.

Every command that loads data (``train``, ``pretrain``, ``loso``, ``tune``, ``evaluate``, ``calibrate``, ``audit``,
``sources``) turns its repeated ``--data-option`` values into the options dict with :func:`parse_data_options`; which
keys a source understands is checked by the loaders themselves (:mod:`pneumoscan.data.label_policy`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pneumoscan.errors import ConfigError

__all__ = ["parse_data_options"]


def parse_data_options(pairs: Iterable[str] | None, *, option: str = "--data-option") -> dict[str, str]:
    """``["views=all", "uncertain=positive"]`` -> ``{"views": "all", "uncertain": "positive"}``.

    Spaces around keys and values are dropped; the value may be empty and may contain ``=``; a key given twice keeps
    its last value (as argparse does for a plain option).

    Raises:
        ConfigError: one line naming ``option``, the item and what is wrong: no ``=``, or an empty key.
    """
    out: dict[str, str] = {}
    for item in pairs or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, found no '='")
        if not key:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, the key is empty")
        out[key] = value.strip()
    return out
