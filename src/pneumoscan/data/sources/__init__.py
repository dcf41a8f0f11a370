"""Loaders for public chest X-ray collections in their publishers' layouts (``--data FORMAT:PATH``).

:func:`load_records` reads any ``--data`` spec: a folder (Kaggle layout) or a manifest CSV
(:func:`pneumoscan.data.records.load_folder`, :func:`~pneumoscan.data.records.load_manifest`), or ``FORMAT:PATH`` for
a public collection. This package imports each loader module below explicitly, and each registers itself with
:func:`pneumoscan.data.records.register_source` (which the loaders import; :mod:`~pneumoscan.data.records` imports no
loader):

======================  ======================================================================
``kermany``             Kermany/Kaggle pediatric set (``chest_xray/``; or its ``manifest.csv``)
``nih``                 NIH ChestX-ray14
``rsna``                RSNA Pneumonia Detection Challenge (stage 2 train)
``mimic``               MIMIC-CXR-JPG 2.x
``chexpert``            CheXpert v1.0 / v1.0-small
``openi``               Open-i Indiana (XML reports or the Kaggle CSV form)
``montgomery``          Montgomery County TB set (normals only: specificity holdout)
``shenzhen``            Shenzhen TB set (normals only: specificity holdout)
``jsrt``                JSRT nodule database (non-nodule images only: specificity holdout)
``pneumoniamnist``      PneumoniaMNIST / MedMNIST+ ``.npz``
``lungmasks``           the shared lung-mask collection's adult PA normals (Montgomery, Shenzhen)
``rsna_adult``          the shared RSNA adult sample (manifest with view / age / sex)
======================  ======================================================================

Every loader has the signature ``(path: Path, options: dict[str, str]) -> list[Record]``, applies the label policy of
:mod:`pneumoscan.data.label_policy` (print it with ``describe_policy(spec, options)``), and raises a one-line
:class:`~pneumoscan.errors.DataError` naming the file or folder when the layout is wrong. Images listed in the
metadata but missing on disk are skipped with a warning (partial downloads are common).

:func:`available_sources` lists them; :func:`parse_data_options` (from :mod:`pneumoscan.data.options`) turns
repeated ``--data-option key=value`` CLI values into the options dict.
"""

from __future__ import annotations

from pathlib import Path

from pneumoscan.data.options import parse_data_options
from pneumoscan.data.records import Record, load_folder, load_manifest, registered_sources, source_docs
from pneumoscan.data.sources import (  # noqa: F401
    chexpert,
    jsrt,
    kermany,
    lungmasks,
    medmnist,
    mimic,
    nih,
    openi,
    rsna,
    tb,
)
from pneumoscan.errors import ConfigError, DataError

__all__ = ["available_sources", "load_records", "parse_data_options"]


def available_sources() -> dict[str, str]:
    """Names of registered source formats with a one-line description."""
    return source_docs()


def load_records(spec: str | Path, options: dict[str, str] | None = None) -> list[Record]:
    """Load the records named by a data spec (folder, manifest CSV or ``FORMAT:PATH``).

    Args:
        spec: the ``--data`` value.
        options: loader options (e.g. label-policy switches for public collections).

    Raises:
        DataError: the path does not exist, has the wrong layout, or holds no images.
        ConfigError: an unknown ``FORMAT:`` prefix.
    """
    options = options or {}
    text = str(spec)
    fmt, sep, rest = text.partition(":")
    if sep and fmt.isidentifier() and len(fmt) > 1 and not Path(text).exists():
        loaders = registered_sources()
        if fmt not in loaders:
            known = ", ".join(sorted(loaders)) or "none"
            raise ConfigError(f"unknown data format '{fmt}' in '{text}'; known: {known}")
        path = Path(rest).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        records = loaders[fmt](path, options)
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        records = load_manifest(path) if path.is_file() else load_folder(path)
    if not records:
        raise DataError(f"{text}: no images found")
    return records

