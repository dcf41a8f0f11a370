"""Loaders for public chest X-ray collections in their publishers' layouts (``--data FORMAT:PATH``).

Importing this package registers every loader with :func:`pneumoscan.data.records.register_source`:

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

:func:`parse_data_options` (from :mod:`pneumoscan.data.options`) turns repeated ``--data-option key=value`` CLI
values into the options dict.
"""

from __future__ import annotations

from pneumoscan.data.options import parse_data_options
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

__all__ = ["parse_data_options"]
